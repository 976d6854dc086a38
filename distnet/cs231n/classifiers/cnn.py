"""cs231n/classifiers/cnn.py: ThreeLayerConvNet (conv - relu - 2x2 max pool - affine -
relu - affine - softmax); like the assignment's, a star import also gives every layer."""

from distnet.cs231n.fast_layers import *
from distnet.cs231n.layer_utils import *
from distnet.cs231n.layers import *
from distnet.models import ThreeLayerConvNet  # noqa: F401
