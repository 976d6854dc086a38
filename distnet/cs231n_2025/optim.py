"""cs231n/optim.py: the same module as distnet.cs231n.optim."""

from distnet.cs231n.optim import *
