"""The one exception type that means "the user gave us something wrong".

The CLI prints a DistnetError as a single line and exits non-zero; anything else is a
bug and keeps its traceback. Library modules subclass it for their own area.
"""


class DistnetError(Exception):
    """A user mistake or bad input (bad file, bad config, bad checksum ...)."""


class InvalidInput(DistnetError, ValueError):
    """Bad input to the network library: shapes, labels, hyperparameters."""


class TrainingDiverged(DistnetError, FloatingPointError):
    """The loss became NaN or infinite: training stops instead of continuing on garbage
    (the Solver and the distributed trainer alike)."""
