"""Models with a softmax loss (the CS231n assignment-2 networks).

One module per family: fc (FullyConnectedNet, TwoLayerNet, build_model). Every name is
re-exported here, so `from distnet.models import ...` finds them all.
"""

from distnet.models.fc import FullyConnectedNet, TwoLayerNet, build_model

__all__ = ["FullyConnectedNet", "TwoLayerNet", "build_model"]
