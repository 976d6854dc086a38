"""Sandwich layers: common layer sequences whose caches nest the primitive caches.

The backward functions take the same keywords as `affine_backward` (`input_grad`, `out`)
and pass them to the affine or conv layer, so a model can skip the input gradient of its
first layer and write weight gradients straight into a flat gradient buffer. The conv
sandwiches use the fast layers, as the assignment's do.
"""

from __future__ import annotations

from distnet.fast_layers import (
    conv_backward_fast,
    conv_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)
from distnet.layers import (
    affine_backward,
    affine_forward,
    batchnorm_backward,
    batchnorm_forward,
    relu_backward,
    relu_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
)


def affine_relu_forward(x, w, b):
    """affine -> ReLU. x: (N, d_1, ..., d_k); w: (D, M); b: (M,). Returns out (N, M)."""
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache, *, input_grad=True, out=None):
    """Returns dx, dw, db (dx is None when input_grad=False)."""
    fc_cache, relu_cache = cache
    da = relu_backward(dout, relu_cache)
    return affine_backward(da, fc_cache, input_grad=input_grad, out=out)


def affine_bn_relu_forward(x, w, b, gamma, beta, bn_param):
    """affine -> batchnorm -> ReLU. gamma, beta: (M,); bn_param as for batchnorm_forward."""
    a, fc_cache = affine_forward(x, w, b)
    an, bn_cache = batchnorm_forward(a, gamma, beta, bn_param)
    out, relu_cache = relu_forward(an)
    return out, (fc_cache, bn_cache, relu_cache)


def affine_bn_relu_backward(dout, cache, *, input_grad=True, out=None):
    """Returns dx, dw, db, dgamma, dbeta (dx is None when input_grad=False)."""
    fc_cache, bn_cache, relu_cache = cache
    dan = relu_backward(dout, relu_cache)
    da, dgamma, dbeta = batchnorm_backward(dan, bn_cache)
    dx, dw, db = affine_backward(da, fc_cache, input_grad=input_grad, out=out)
    return dx, dw, db, dgamma, dbeta


def conv_relu_forward(x, w, b, conv_param):
    """conv -> ReLU. x: (N, C, H, W); w: (F, C, HH, WW); b: (F,); conv_param: {'stride',
    'pad'}. Returns out (N, F, H_out, W_out)."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    out, relu_cache = relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout, cache, *, input_grad=True, out=None):
    """Returns dx, dw, db (dx is None when input_grad=False)."""
    conv_cache, relu_cache = cache
    da = relu_backward(dout, relu_cache)
    return conv_backward_fast(da, conv_cache, input_grad=input_grad, out=out)


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """conv -> ReLU -> max pool. pool_param: {'pool_height', 'pool_width', 'stride'}."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    s, relu_cache = relu_forward(a)
    out, pool_cache = max_pool_forward_fast(s, pool_param)
    return out, (conv_cache, relu_cache, pool_cache)


def conv_relu_pool_backward(dout, cache, *, input_grad=True, out=None):
    """Returns dx, dw, db (dx is None when input_grad=False)."""
    conv_cache, relu_cache, pool_cache = cache
    ds = max_pool_backward_fast(dout, pool_cache)
    da = relu_backward(ds, relu_cache)
    return conv_backward_fast(da, conv_cache, input_grad=input_grad, out=out)


def conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, bn_param):
    """conv -> spatial batchnorm -> ReLU. gamma, beta: (F,); bn_param as for
    spatial_batchnorm_forward."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    an, bn_cache = spatial_batchnorm_forward(a, gamma, beta, bn_param)
    out, relu_cache = relu_forward(an)
    return out, (conv_cache, bn_cache, relu_cache)


def conv_bn_relu_backward(dout, cache, *, input_grad=True, out=None):
    """Returns dx, dw, db, dgamma, dbeta (dx is None when input_grad=False)."""
    conv_cache, bn_cache, relu_cache = cache
    dan = relu_backward(dout, relu_cache)
    da, dgamma, dbeta = spatial_batchnorm_backward(dan, bn_cache)
    dx, dw, db = conv_backward_fast(da, conv_cache, input_grad=input_grad, out=out)
    return dx, dw, db, dgamma, dbeta
