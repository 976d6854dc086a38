"""Fast convolution and max pooling: the naive layers' signatures, numpy only.

Convolution is im2col + one matrix product: the input windows are a strided view
(`sliding_window_view`) copied into a patch matrix (distnet.im2col: pixel rows for
inputs with many channels, tap rows for few) and multiplied by the filters in BLAS;
backward is two more products: dw, and dx either as the correlation of dout with the
flipped filters (stride 1, the patches of dout) or through a col2im that loops over the
HH * WW filter taps only. Pixel rows are copied and multiplied in cache-sized tiles
(im2col.patch_tiles: a product per half megabyte of patches, over whole images or whole
output rows), never written out whole; tap rows are one copy and one product for the
batch. Max pooling takes maxima of strided views, one per window row and column. No
compile step and no loop over single images or output pixels.

The functions reject exactly what the naive ones in distnet.layers.conv reject (they share
the checks), keep the dtype they are given (float32 stays float32), and their caches start
with the naive cache and add what backward reuses:
conv (x, w, b, conv_param, patches) with patches None for pixel rows (backward copies
them again, tile by tile), max pool (x, pool_param, out).

3x3 stride-1 layers with at least twice as many filters as channels (and outputs of at
least 16x16) run as Winograd
F(2x2, 3x3) tiles instead (distnet.winograd; the cache then holds the transformed input
tiles in place of the patches), where that measured faster.
"""

from __future__ import annotations

import numpy as np

from distnet.im2col import (
    channels_last,
    col2im,
    copy_nhwc,
    filter_rows,
    filters_from_rows,
    patch_tiles,
    scratch,
)
from distnet.layers import check_conv_input, check_dout, check_pool_input
from distnet.winograd import conv3x3_backward, conv3x3_forward

# Winograd F(2x2, 3x3) tiles (distnet.winograd): F(4x4, 3x3) has 1.8x fewer multiplies
# but its transforms take more passes than they save here.
WINOGRAD_TILE = 2


def uses_winograd(C: int, F: int, HH: int, WW: int, stride: int, H_out: int, W_out: int) -> bool:
    """Whether a layer runs as Winograd tiles rather than im2col: 3x3 stride 1 with at
    least twice as many filters as channels (more than a first layer's 3) and outputs of
    at least 16x16. Measured (one thread, batch 50, float32, a noisy machine): 32 -> 64
    channels at 16x16 4-12% faster; 64 -> 128 at 8x8 about 20% slower (4x4 tiles per image:
    the transforms' passes cost more than the products save); F < 2C runs dx as one
    product, and im2col is as fast or faster there (32 -> 32 at 32x32 about 10%)."""
    big = H_out * W_out >= 256
    return HH == WW == 3 and stride == 1 and channels_last(C, WW) and F >= 2 * C and big


def conv_forward_fast(x, w, b, conv_param):
    """Convolution as conv_forward_naive computes it.

    x: (N, C, H, W); w: (F, C, HH, WW); b: (F,); conv_param: {'stride', 'pad'}.
    Returns out (N, F, H_out, W_out), C-contiguous, and cache (x, w, b, conv_param,
    patches) with patches the im2col matrix in distnet.im2col.patch_matrix's layout (tap
    rows), the Winograd tiles, or None (pixel rows, copied again in backward).
    """
    stride, pad, H_out, W_out = check_conv_input(x, w, b, conv_param)
    N, (F, C, HH, WW) = x.shape[0], w.shape
    if uses_winograd(C, F, HH, WW, stride, H_out, W_out):
        out, tiles = conv3x3_forward(x, w, b, pad, WINOGRAD_TILE)
        return out, (x, w, b, conv_param, tiles)
    if channels_last(C, WW):  # (pixels, taps) @ (taps, F) tile by tile: the output NHWC
        rows = filter_rows(w)
        products = scratch("conv products", (N * H_out * W_out, F), np.result_type(x, w))
        in_place = np.result_type(products, b) == products.dtype
        for at, _, tile in patch_tiles(x, HH, WW, stride, pad, pad):
            np.matmul(tile, rows, out=products[at])
            if in_place:  # the bias while the tile's products are in the cache
                products[at] += b
        if not in_place:
            products = products + b
        out = np.empty((N, F, H_out, W_out), products.dtype)
        np.copyto(out, products.reshape(N, H_out, W_out, F).transpose(0, 3, 1, 2))
        return out, (x, w, b, conv_param, None)  # backward copies the patches again
    # (F, taps + 1) @ (taps + 1, pixels) tile by tile, the bias riding in the product as
    # a column against the tile's row of ones: a tile of output rows of one image is
    # written in place, one of whole images is put into place after.
    w_rows = np.concatenate([w.reshape(F, -1), b[:, None]], axis=1)
    out = np.empty((N, F, H_out, W_out), np.result_type(x, w, b))
    for at, (n0, n1, h0, h1), tile in patch_tiles(x, HH, WW, stride, pad, pad, ones=True):
        if n1 - n0 == 1:
            np.matmul(w_rows, tile, out=np.reshape(out[n0, :, h0:h1], (F, -1), copy=False))
            continue
        products = scratch("conv products", (F, at.stop - at.start), out.dtype)
        np.matmul(w_rows, tile, out=products)
        np.copyto(out[n0:n1], products.reshape(F, n1 - n0, H_out, W_out).transpose(1, 0, 2, 3))
    return out, (x, w, b, conv_param, None)


def _plus(a, b):
    """a + b, in place when the sum has a's dtype (as it has on the float32 path)."""
    if np.result_type(a, b) != a.dtype:
        return a + b
    a += b
    return a


def conv_backward_fast(dout, cache, *, input_grad=True, out=None):
    """dout: (N, F, H_out, W_out). Returns dx (N, C, H, W), dw (F, C, HH, WW), db (F,).

    As affine_backward: input_grad=False skips dx (returned as None; a network's first
    layer does not need it, and it is half of the work), and `out=(dw, db)` writes the
    weight gradients into given C-contiguous arrays, e.g. views of a flat gradient buffer.
    """
    x, w, b, conv_param, patches = cache
    stride, pad, H_out, W_out = check_conv_input(x, w, b, conv_param)
    N, (F, C, HH, WW) = x.shape[0], w.shape
    check_dout(dout, (N, F, H_out, W_out), "conv")
    dw, db = out if out is not None else (np.empty(w.shape, np.result_type(dout, x)), None)
    db = np.sum(dout, axis=(0, 2, 3), out=db)
    if uses_winograd(C, F, HH, WW, stride, H_out, W_out):  # patches: the transformed input tiles
        dx, dw = conv3x3_backward(
            dout, x.shape, w, patches, pad, WINOGRAD_TILE, input_grad=input_grad, dw=dw
        )
        return dx, dw, db
    last = channels_last(C, WW)
    if last and channels_last(F, WW) and F < 2 * C and stride == 1 and pad < min(HH, WW):
        return (*_correlation_backward(dout, x, w, pad, input_grad, dw), db)
    if last:  # the patches again, tile by tile, each tile's part of dw added up:
        # (taps, pixels) @ (pixels, F), dout's rows copied channels-last once
        dout_rows = scratch("dout rows", (N, H_out, W_out, F), dout.dtype)
        copy_nhwc(dout_rows, dout)
        dout_rows = dout_rows.reshape(-1, F)
        dw_rows = np.zeros((HH * WW * C, F), dw.dtype)
        part = np.empty_like(dw_rows)
        for at, _, tile in patch_tiles(x, HH, WW, stride, pad, pad):
            dw_rows += np.matmul(tile.T, dout_rows[at], out=part)
    else:  # with tap columns: per image, (taps, pixels) @ dout's (F, pixels) transposed,
        # a view (an NHWC copy of dout would cost more than the products gain from it)
        dout = np.ascontiguousarray(dout)  # (a strided dout has no such views)
        dw_rows = np.zeros((C * HH * WW, F), dw.dtype)
        for _, (n0, n1, h0, h1), tile in patch_tiles(x, HH, WW, stride, pad, pad):
            pixels = (h1 - h0) * W_out
            tiles = tile.reshape(-1, n1 - n0, pixels).transpose(1, 0, 2)
            douts = np.reshape(dout[n0:n1, :, h0:h1], (n1 - n0, F, pixels), copy=False)
            parts = scratch("dw parts", (n1 - n0, *dw_rows.shape), dw.dtype)
            dw_rows += np.matmul(tiles, douts.transpose(0, 2, 1), out=parts).sum(axis=0)
    filters_from_rows(dw_rows, dw)
    if not input_grad:
        return None, dw, db
    if last:
        dpatches = dout_rows @ filter_rows(w).T  # (pixels, taps)
    else:
        dout_cf = scratch("dout channels first", (F, N, H_out, W_out), dout.dtype)
        np.copyto(dout_cf, dout.transpose(1, 0, 2, 3))
        dpatches = filter_rows(w) @ dout_cf.reshape(F, -1)  # (taps, pixels)
    return col2im(dpatches, x.shape, HH, WW, stride, pad), dw, db


def _correlation_backward(dout, x, w, pad, input_grad, dw):
    """dx and dw of a stride-1 pixel-rows conv from one pass over dout's patches.

    dx is the correlation of dout, padded by (filter - 1 - pad), with the filters flipped
    and their channel axes swapped: a product like the forward one, with F * HH * WW deep
    rows, instead of col2im's HH * WW strided adds (2.2x slower for 32 -> 32 channels).
    The same patches give dw: tap (i', j', f) of pixel p is dout[f] at p shifted by
    (i', j') - (filter - 1 - pad), so x's rows (channels last) times them is dw with its
    taps flipped. Each tile of dout's patches feeds both products while it is in the cache,
    and x's patches are never made."""
    (N, C, H, W), (F, _, HH, WW) = x.shape, w.shape
    x_rows = scratch("x rows", (N, H, W, C), x.dtype)
    copy_nhwc(x_rows, x)
    x_rows = x_rows.reshape(-1, C)
    flipped = filter_rows(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    dx_rows = scratch("dx rows", (N * H * W, C), np.result_type(dout, w)) if input_grad else None
    dw_t = np.zeros((C, HH * WW * F), dw.dtype)  # (c, (i', j', f))
    part = np.empty_like(dw_t)
    for at, _, tile in patch_tiles(dout, HH, WW, 1, HH - 1 - pad, WW - 1 - pad):
        dw_t += np.matmul(x_rows[at].T, tile, out=part)
        if input_grad:
            np.matmul(tile, flipped, out=dx_rows[at])
    np.copyto(dw, dw_t.reshape(C, HH, WW, F)[:, ::-1, ::-1].transpose(3, 0, 1, 2))
    if not input_grad:
        return None, dw
    dx = np.empty(x.shape, dx_rows.dtype)
    np.copyto(dx, dx_rows.reshape(N, H, W, C).transpose(0, 3, 1, 2))
    return dx, dw


def max_pool_forward_fast(x, pool_param):
    """Max pooling as max_pool_forward_naive computes it.

    x: (N, C, H, W); pool_param: {'pool_height', 'pool_width', 'stride'}. Returns out
    (N, C, H_out, W_out) and cache (x, pool_param, out).

    A window's maximum is the maximum over its rows of the maxima over its columns, so
    the work is pool_height + pool_width - 2 elementwise maxima of strided views, tiling
    windows (2x2 stride 2) or overlapping ones alike. (Reducing a reshaped
    (N, C, H_out, 2, W_out, 2) array over axes 3 and 5 is 50-90x slower in numpy 2.4.)
    """
    pool_height, pool_width, stride, H_out, W_out = check_pool_input(x, pool_param)
    row_max = _window_max(x, pool_width, stride, W_out, axis=3)  # (N, C, H, W_out)
    out = _window_max(row_max, pool_height, stride, H_out, axis=2)
    return out, (x, pool_param, out)


def _window_max(a, window, stride, size_out, axis):
    """Elementwise maximum of the `window` views a[..., k : k + stride * size_out : stride]."""

    def shifted(k):
        index = [slice(None)] * a.ndim
        index[axis] = slice(k, k + stride * (size_out - 1) + 1, stride)
        return a[tuple(index)]

    out = shifted(0).copy()
    for k in range(1, window):
        np.maximum(out, shifted(k), out=out)
    return out


def max_pool_backward_fast(dout, cache):
    """dout: (N, C, H_out, W_out). Returns dx (N, C, H, W).

    As in max_pool_backward_naive, each output's gradient goes to the first maximum of its
    window in row-major order: the window positions are visited in that order, and each
    takes the outputs it equals that no earlier position took.
    """
    x, pool_param, out = cache
    pool_height, pool_width = pool_param["pool_height"], pool_param["pool_width"]
    stride = pool_param["stride"]
    check_dout(dout, out.shape, "max pool")
    H_out, W_out = out.shape[2:]
    dx = np.zeros(x.shape, dtype=np.result_type(dout, x))
    overlapping = stride < max(pool_height, pool_width)
    untaken = np.ones(out.shape, dtype=bool)
    positions = list(np.ndindex(pool_height, pool_width))
    for i, j in positions:
        at = (
            slice(None),
            slice(None),
            slice(i, i + stride * (H_out - 1) + 1, stride),
            slice(j, j + stride * (W_out - 1) + 1, stride),
        )
        if (i, j) == positions[-1]:
            taken = untaken  # every window holds its maximum: what is left is here
        else:
            taken = np.equal(x[at], out)
            taken &= untaken
            untaken ^= taken
        if overlapping:
            dx[at] += dout * taken
        else:  # each input is in one window at most: write, do not add
            np.multiply(dout, taken, out=dx[at])
    return dx
