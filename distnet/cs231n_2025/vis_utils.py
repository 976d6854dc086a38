"""cs231n/vis_utils.py: the same module as distnet.cs231n.vis_utils."""

from distnet.cs231n.vis_utils import *
