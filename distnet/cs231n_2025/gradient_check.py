"""cs231n/gradient_check.py: the same module as distnet.cs231n.gradient_check."""

from distnet.cs231n.gradient_check import *
