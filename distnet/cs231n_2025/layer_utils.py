"""cs231n/layer_utils.py: the same module as distnet.cs231n.layer_utils."""

from distnet.cs231n.layer_utils import *
