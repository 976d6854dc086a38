"""Layers as forward/backward function pairs (the CS231n assignment-2 API, Python 3).

`*_forward(...) -> (out, cache)`; `*_backward(dout, cache) -> gradients`. Arrays keep the
dtype they come in (float32 stays float32): scalars read from parameter dicts are turned
into Python floats, which NumPy never lets upcast an array.

One module per kind of layer; every name is re-exported here, so `from distnet.layers
import ...` (and `import *`, as the assignment's fc_net.py does) finds them all.
"""

from distnet.layers.fc import (
    affine_backward,
    affine_forward,
    check_labels,
    dropout_backward,
    dropout_forward,
    relu_backward,
    relu_forward,
    softmax_loss,
    svm_loss,
)
from distnet.layers.norm import batchnorm_backward, batchnorm_forward

__all__ = [
    "affine_backward",
    "affine_forward",
    "batchnorm_backward",
    "batchnorm_forward",
    "check_labels",
    "dropout_backward",
    "dropout_forward",
    "relu_backward",
    "relu_forward",
    "softmax_loss",
    "svm_loss",
]
