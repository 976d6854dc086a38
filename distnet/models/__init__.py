"""Models with a softmax loss (the CS231n assignment-2 networks).

One module per family: fc (FullyConnectedNet, TwoLayerNet), conv (ConvNet,
ThreeLayerConvNet) with the blocks a ConvNet is described by in blocks (a job file's
tables: parse_blocks, then check_blocks against the image shape, before any weight);
what they share is in base; build_model (build) makes the network a job's [model]
table describes. Every name is re-exported here, so `from distnet.models
import ...` finds them all.
"""

from distnet.models.blocks import Affine, Conv, Dropout, Pool, check_blocks, parse_blocks
from distnet.models.build import build_model
from distnet.models.conv import ConvNet, ThreeLayerConvNet
from distnet.models.fc import FullyConnectedNet, TwoLayerNet

__all__ = [
    "Affine",
    "Conv",
    "ConvNet",
    "Dropout",
    "FullyConnectedNet",
    "Pool",
    "ThreeLayerConvNet",
    "TwoLayerNet",
    "build_model",
    "check_blocks",
    "parse_blocks",
]
