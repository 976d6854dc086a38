"""cs231n/classifiers/cnn.py of the later editions: ThreeLayerConvNet; a star import
also gives every layer (dropout with p = keep probability)."""

from distnet.cs231n.fast_layers import *
from distnet.cs231n.layer_utils import *
from distnet.cs231n_2025.layers import *
from distnet.models import ThreeLayerConvNet  # noqa: F401
