"""cs231n/data_utils.py: the same module as distnet.cs231n.data_utils."""

from distnet.cs231n.data_utils import *
