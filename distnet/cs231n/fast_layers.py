"""cs231n/fast_layers.py: distnet's numpy conv and pool layers (no compile step)."""

from distnet.fast_layers import *
