"""Layers as forward/backward function pairs (the CS231n assignment-2 API, Python 3).

`*_forward(...) -> (out, cache)`; `*_backward(dout, cache) -> gradients`. Arrays keep the
dtype they come in (float32 stays float32): scalars read from parameter dicts are turned
into Python floats, which NumPy never lets upcast an array. Shapes and hyperparameters are
checked on the way in: a bad one is an InvalidInput naming the shapes, never a silent
wrong answer.

One module per kind of layer (fc, norm, conv); every name is re-exported here, so
`from distnet.layers import ...` (and `import *`, as the assignment's fc_net.py does)
finds them all. The fast conv and pool layers are in distnet.fast_layers.
"""

from distnet.layers.conv import (
    check_conv_input,
    check_dout,
    check_pool_input,
    conv_backward_naive,
    conv_forward_naive,
    max_pool_backward_naive,
    max_pool_forward_naive,
)
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
from distnet.layers.norm import (
    batchnorm_backward,
    batchnorm_backward_alt,
    batchnorm_forward,
    layernorm_backward,
    layernorm_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
)

__all__ = [
    "affine_backward",
    "affine_forward",
    "batchnorm_backward",
    "batchnorm_backward_alt",
    "batchnorm_forward",
    "check_conv_input",
    "check_dout",
    "check_labels",
    "check_pool_input",
    "conv_backward_naive",
    "conv_forward_naive",
    "dropout_backward",
    "dropout_forward",
    "layernorm_backward",
    "layernorm_forward",
    "max_pool_backward_naive",
    "max_pool_forward_naive",
    "relu_backward",
    "relu_forward",
    "softmax_loss",
    "spatial_batchnorm_backward",
    "spatial_batchnorm_forward",
    "spatial_groupnorm_backward",
    "spatial_groupnorm_forward",
    "svm_loss",
]
