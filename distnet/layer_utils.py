"""Sandwich layers: common layer sequences whose caches nest the primitive caches.

The backward functions take the same keywords as `affine_backward` (`input_grad`, `out`)
and pass them to the affine layer, so a model can skip the input gradient of its first
layer and write weight gradients straight into a flat gradient buffer.
"""

from __future__ import annotations

from distnet.layers import (
    affine_backward,
    affine_forward,
    batchnorm_backward,
    batchnorm_forward,
    relu_backward,
    relu_forward,
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
