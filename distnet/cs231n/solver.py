"""cs231n/solver.py: distnet's Solver (the same arguments; update_rule by name)."""

from distnet.solver import Solver  # noqa: F401
