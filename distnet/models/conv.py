"""Convolutional networks with a softmax loss.

    ConvNet(blocks)        {conv - [batchnorm | groupnorm] - relu | max pool | dropout}*
                           - {affine - relu | dropout}* - affine - softmax
    ThreeLayerConvNet()    conv - relu - 2x2 max pool - affine - relu - affine - softmax

Blocks are data (see blocks.py). Parameters are flat as in the fully connected models
(base.py): W1, b1 [, gamma1, beta1], W2, ... numbered over the conv and affine layers in
order, so servers, checkpoints and compression handle a conv net as they do an MLP. The
convolutions and pools are the fast layers; everything stays in the model's dtype.

    >>> net = ConvNet([Conv(8, norm="batchnorm"), Pool(2), Affine(32), Dropout(0.5)],
    ...               input_dim=(3, 8, 8), weight_scale=None, init_seed=0)
    >>> net.loss(np.zeros((2, 3, 8, 8))).shape
    (2, 10)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from distnet.errors import InvalidInput
from distnet.fast_layers import (
    conv_backward_fast,
    conv_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)
from distnet.layer_utils import affine_relu_backward, affine_relu_forward
from distnet.layers import (
    affine_backward,
    affine_forward,
    dropout_backward,
    dropout_forward,
    relu_backward,
    relu_forward,
    softmax_loss,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
)
from distnet.models.base import (
    Model,
    batchnorm_param,
    check_dtype,
    check_weight_scale,
    positive_int,
    weight_noise,
)
from distnet.models.blocks import Affine, Block, Conv, Dropout, Pool, check_blocks, parse_blocks
from distnet.params import FlatParams


class _ConvLayer:
    """conv - [batchnorm | groupnorm] - relu, parameters W{i}, b{i} [, gamma{i}, beta{i}]."""

    def __init__(self, i: int, block: Conv, bn_param: dict | None):
        self.W, self.b, self.gamma, self.beta = f"W{i}", f"b{i}", f"gamma{i}", f"beta{i}"
        self.conv_param = {"stride": block.stride, "pad": block.pad}
        self.norm, self.groups, self.bn_param = block.norm, block.groups, bn_param

    def forward(self, x, net):
        p = net.params
        a, conv_cache = conv_forward_fast(x, p[self.W], p[self.b], self.conv_param)
        norm_cache = None
        if self.norm == "batchnorm":
            a, norm_cache = spatial_batchnorm_forward(a, p[self.gamma], p[self.beta], self.bn_param)
        elif self.norm == "groupnorm":
            a, norm_cache = spatial_groupnorm_forward(
                a, p[self.gamma], p[self.beta], self.groups, {}
            )
        out, relu_cache = relu_forward(a)
        return out, (conv_cache, norm_cache, relu_cache)

    def backward(self, dout, cache, grads, input_grad):
        conv_cache, norm_cache, relu_cache = cache
        da = relu_backward(dout, relu_cache)
        if self.norm == "batchnorm":
            da, grads[self.gamma], grads[self.beta] = spatial_batchnorm_backward(da, norm_cache)
        elif self.norm == "groupnorm":
            da, grads[self.gamma], grads[self.beta] = spatial_groupnorm_backward(da, norm_cache)
        dx, _, _ = conv_backward_fast(
            da, conv_cache, input_grad=input_grad, out=(grads[self.W], grads[self.b])
        )
        return dx


class _AffineLayer:
    """affine [- relu], parameters W{i}, b{i}; without relu it is the class scores'."""

    def __init__(self, i: int, relu: bool):
        self.W, self.b, self.relu = f"W{i}", f"b{i}", relu

    def forward(self, x, net):
        layer = affine_relu_forward if self.relu else affine_forward
        return layer(x, net.params[self.W], net.params[self.b])

    def backward(self, dout, cache, grads, input_grad):
        layer = affine_relu_backward if self.relu else affine_backward
        dx, _, _ = layer(dout, cache, input_grad=input_grad, out=(grads[self.W], grads[self.b]))
        return dx


class _PoolLayer:
    def __init__(self, block: Pool):
        self.pool_param = {
            "pool_height": block.size,
            "pool_width": block.size,
            "stride": block.stride,
        }

    def forward(self, x, net):
        return max_pool_forward_fast(x, self.pool_param)

    def backward(self, dout, cache, grads, input_grad):
        return max_pool_backward_fast(dout, cache) if input_grad else None


class _DropoutLayer:
    """Its masks are seeded by (model seed..., index), index the block's position + 1."""

    def __init__(self, index: int, block: Dropout):
        self.index, self.p = index, block.p

    def forward(self, x, net):
        return dropout_forward(x, net._layer_dropout_param(self.index, p=self.p))

    def backward(self, dout, cache, grads, input_grad):
        return dropout_backward(dout, cache) if input_grad else None


class ConvNet(Model):
    """A network of `blocks` (Conv, Pool, Dropout, Affine, or tables that parse_blocks
    reads) then the affine layer of the class scores.

    input_dim: (C, H, W) of the images. weight_scale: std of the initial weights, or None
    for He initialisation (std sqrt(2 / fan_in) per layer, what a deep stack needs to
    train). seed: dropout seed (an int or a sequence such as (seed, epoch, step, worker)).
    init_seed: seed of the initial weights (None draws them from NumPy's global generator,
    as the assignment does). Every block is checked against the shape it meets before any
    weight is allocated: a conv or pool that does not tile its input is an InvalidInput
    naming the block.
    """

    def __init__(
        self,
        blocks: Sequence[Block | dict],
        input_dim: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        weight_scale: float | None = 1e-3,
        reg: float = 0.0,
        dtype=np.float32,
        seed=None,
        init_seed: int | None = None,
    ):
        self.blocks = tuple(parse_blocks(blocks))
        if isinstance(input_dim, (str, bytes)) or len(input_dim) != 3:
            raise InvalidInput(f"input_dim must be (C, H, W), got {input_dim!r}")
        self.input_dim = tuple(positive_int(f"input_dim[{k}]", d) for k, d in enumerate(input_dim))
        self.input_shape = self.input_dim
        self.num_classes = positive_int("num_classes", num_classes)
        if weight_scale is not None:
            check_weight_scale(weight_scale)
        self.dtype = check_dtype(dtype)
        self.reg = reg
        shapes = check_blocks(self.blocks, self.input_dim)
        self.output_shapes = shapes[1:]  # of one sample, after each block

        self.dropout_param: dict = {"mode": "train"}
        if seed is not None:
            self.dropout_param["seed"] = seed
        self.bn_params: list[dict] = []  # one per batchnorm layer, in order
        self._layers: list = []
        weights = self._build_layers(shapes)

        norms = {block.norm for block in self.blocks if isinstance(block, Conv)}
        self.use_batchnorm, self.use_groupnorm = "batchnorm" in norms, "groupnorm" in norms
        self.use_dropout = any(isinstance(block, Dropout) for block in self.blocks)
        self._params = FlatParams(weights, self.dtype)
        self._init_weights(weight_scale, init_seed)

    def _build_layers(self, shapes) -> dict[str, tuple[int, ...]]:
        """Fill self._layers and self.bn_params; returns the parameters' shapes by name, in
        the order of the flat vector."""
        weights: dict[str, tuple[int, ...]] = {}
        i = 0  # layers with weights so far
        for index, (block, shape) in enumerate(zip(self.blocks, shapes[:-1], strict=True), 1):
            i += isinstance(block, (Conv, Affine))
            if isinstance(block, Conv):
                weights[f"W{i}"] = (block.filters, shape[0], block.size, block.size)
                weights[f"b{i}"] = (block.filters,)
                if block.norm:
                    weights[f"gamma{i}"] = weights[f"beta{i}"] = (block.filters,)
                bn_param = None
                if block.norm == "batchnorm":
                    bn_param = batchnorm_param(block.filters, self.dtype)
                    self.bn_params.append(bn_param)
                self._layers.append(_ConvLayer(i, block, bn_param))
            elif isinstance(block, Affine):
                weights[f"W{i}"], weights[f"b{i}"] = (math.prod(shape), block.units), (block.units,)
                self._layers.append(_AffineLayer(i, relu=True))
            elif isinstance(block, Pool):
                self._layers.append(_PoolLayer(block))
            else:
                self._layers.append(_DropoutLayer(index, block))
        i += 1
        weights[f"W{i}"] = (math.prod(shapes[-1]), self.num_classes)
        weights[f"b{i}"] = (self.num_classes,)
        self._layers.append(_AffineLayer(i, relu=False))
        self.num_layers = i  # layers with weights, as FullyConnectedNet counts them
        return weights

    def _init_weights(self, weight_scale: float | None, init_seed: int | None) -> None:
        """W ~ N(0, scale^2) in layer order (the assignment's order of draws), biases and
        betas 0, gammas 1."""
        rng = np.random.default_rng(init_seed) if init_seed is not None else None
        for name, shape, _, _ in self._params.layout:
            if name.startswith("W"):
                fan_in = math.prod(shape[1:]) if len(shape) == 4 else shape[0]
                scale = math.sqrt(2 / fan_in) if weight_scale is None else weight_scale
                self._params[name] = scale * weight_noise(rng, shape)
            elif name.startswith("gamma"):
                self._params[name][:] = 1

    def __repr__(self) -> str:
        blocks = ", ".join(block.describe() for block in self.blocks)
        return (
            f"{type(self).__name__}({'x'.join(map(str, self.input_dim))} -> [{blocks}] -> "
            f"{self.num_classes} classes, {self._params.vector.size} parameters, "
            f"{self.dtype})"
        )

    # --- forward and backward ---------------------------------------------------------

    def _image_input(self, X) -> np.ndarray:
        """(N, C, H, W) images, or (N, C * H * W) rows of their C, H, W planes (how the
        data reader stores CIFAR rows), as an (N, C, H, W) array of the model's dtype."""
        X = np.asarray(X)
        if X.ndim == 2 and X.shape[1] == math.prod(self.input_dim):
            X = X.reshape(X.shape[0], *self.input_dim)
        if X.ndim != 4 or X.shape[1:] != self.input_dim:
            C, H, W = self.input_dim
            raise InvalidInput(
                f"X has shape {X.shape}, but the model takes (N, {C}, {H}, {W}) "
                f"images or (N, {C * H * W}) rows of their planes"
            )
        if X.dtype.kind not in "biuf":
            raise InvalidInput(f"X must be numeric, got dtype {X.dtype}")
        return X.astype(self.dtype, copy=False)

    def loss(self, X, y=None, *, grads_out: FlatParams | None = None):
        """Scores (N, num_classes) without y; with y, (loss, grads) in the params layout.

        grads_out: an optional FlatParams of the same layout to write the gradient into
        (saves allocating a fresh gradient buffer per step).
        """
        h = self._image_input(X)
        self._set_mode("test" if y is None else "train")
        caches = []
        for layer in self._layers:
            h, cache = layer.forward(h, self)
            caches.append(cache)
        if y is None:
            return h

        loss, dh = softmax_loss(h, y)
        self.forward_end = time.perf_counter()
        grads = self._gradient_buffer(grads_out)
        # The first layer needs no dx: the gradient of the network input is never used.
        for k in range(len(self._layers) - 1, -1, -1):
            dh = self._layers[k].backward(dh, caches[k], grads, input_grad=k > 0)
        return self._regularize(loss, grads, self.num_layers), grads


class ThreeLayerConvNet(ConvNet):
    """conv - relu - 2x2 max pool - affine - relu - affine - softmax (the assignment's),
    parameters W1 (F, C, HH, WW), b1, W2 (F * H / 2 * W / 2, hidden_dim), b2, W3, b3.

    The conv keeps H and W (stride 1, pad (filter_size - 1) // 2), so filter_size must be
    odd, and the pool needs even H and W: otherwise an InvalidInput names the block.
    weight_scale None is He initialisation, as in ConvNet.
    """

    def __init__(
        self,
        input_dim: Sequence[int] = (3, 32, 32),
        num_filters: int = 32,
        filter_size: int = 7,
        hidden_dim: int = 100,
        num_classes: int = 10,
        weight_scale: float | None = 1e-3,
        reg: float = 0.0,
        dtype=np.float32,
        init_seed: int | None = None,
    ):
        pad = (filter_size - 1) // 2 if isinstance(filter_size, int) else None
        blocks = [Conv(num_filters, filter_size, stride=1, pad=pad), Pool(2, 2), Affine(hidden_dim)]
        super().__init__(
            blocks,
            input_dim=input_dim,
            num_classes=num_classes,
            weight_scale=weight_scale,
            reg=reg,
            dtype=dtype,
            init_seed=init_seed,
        )
