"""cs231n/solver.py: the same module as distnet.cs231n.solver."""

from distnet.cs231n.solver import *
