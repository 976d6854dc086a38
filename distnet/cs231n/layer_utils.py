"""cs231n/layer_utils.py: distnet's sandwich layers."""

from distnet.layer_utils import *
