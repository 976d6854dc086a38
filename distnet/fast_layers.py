"""Fast convolution and max pooling: the naive layers' signatures, numpy only.

Convolution is im2col + one matrix product: the input windows are a strided view
(`sliding_window_view`) copied once into a (C * HH * WW, N * H_out * W_out) matrix, so
the whole batch is one BLAS call; backward is two more products and a col2im that loops
over the HH * WW filter taps only. Max pooling takes maxima of strided views, one per
window row and column. No compile step and no loop over images or output pixels.

The functions reject exactly what the naive ones in distnet.layers.conv reject (they share
the checks), keep the dtype they are given (float32 stays float32), and their caches start
with the naive cache and add what backward reuses:
conv (x, w, b, conv_param, cols), max pool (x, pool_param, out).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from distnet.layers import check_conv_input, check_dout, check_pool_input


def conv_forward_fast(x, w, b, conv_param):
    """Convolution as conv_forward_naive computes it.

    x: (N, C, H, W); w: (F, C, HH, WW); b: (F,); conv_param: {'stride', 'pad'}.
    Returns out (N, F, H_out, W_out), C-contiguous, and cache (x, w, b, conv_param, cols)
    with cols (C * HH * WW, N * H_out * W_out), the im2col matrix.
    """
    stride, pad, H_out, W_out = check_conv_input(x, w, b, conv_param)
    N, F = x.shape[0], w.shape[0]
    cols = _im2col(x, w.shape[2], w.shape[3], stride, pad)
    products = w.reshape(F, -1) @ cols  # (F, N * H_out * W_out): the batch in one call
    out = np.empty((N, F, H_out, W_out), dtype=np.result_type(products, b))
    # The bias rides on the copy that puts the images first.
    np.add(products.reshape(F, N, H_out, W_out).transpose(1, 0, 2, 3), b[:, None, None], out=out)
    return out, (x, w, b, conv_param, cols)


def conv_backward_fast(dout, cache, *, input_grad=True, out=None):
    """dout: (N, F, H_out, W_out). Returns dx (N, C, H, W), dw (F, C, HH, WW), db (F,).

    As affine_backward: input_grad=False skips dx (returned as None; a network's first
    layer does not need it, and it is half of the work), and `out=(dw, db)` writes the
    weight gradients into given C-contiguous arrays, e.g. views of a flat gradient buffer.
    """
    x, w, b, conv_param, cols = cache
    stride, pad, H_out, W_out = check_conv_input(x, w, b, conv_param)
    N, (F, _, HH, WW) = x.shape[0], w.shape
    check_dout(dout, (N, F, H_out, W_out), "conv")
    dw, db = out if out is not None else (np.empty(w.shape, np.result_type(dout, cols)), None)
    db = np.sum(dout, axis=(0, 2, 3), out=db)
    # dw.T = cols @ dout as (N * H_out * W_out, F): OpenBLAS runs this orientation, with
    # the large matrix on the left, about 1.4x faster than dout (F, ...) @ cols.T.
    dw_t = cols @ dout.transpose(0, 2, 3, 1).reshape(-1, F)
    np.copyto(np.reshape(dw, (F, -1), copy=False), dw_t.T)
    if not input_grad:
        return None, dw, db
    drows = np.ascontiguousarray(dout.transpose(1, 0, 2, 3)).reshape(F, -1)
    dcols = w.reshape(F, -1).T @ drows  # (C * HH * WW, N * H_out * W_out)
    return _col2im(dcols, x.shape, HH, WW, stride, pad, H_out, W_out), dw, db


def _im2col(x, HH, WW, stride, pad):
    """cols[(c, i, j), (n, h, w)] = padded x[n, c, h * stride + i, w * stride + j]."""
    C = x.shape[1]
    padded = x
    if pad:
        padded = np.zeros(x.shape[:2] + (x.shape[2] + 2 * pad, x.shape[3] + 2 * pad), x.dtype)
        padded[:, :, pad:-pad, pad:-pad] = x
    windows = sliding_window_view(padded, (HH, WW), axis=(2, 3))[:, :, ::stride, ::stride]
    # (N, C, H_out, W_out, HH, WW) -> (C, HH, WW, N, H_out, W_out), copied once.
    return np.ascontiguousarray(windows.transpose(1, 4, 5, 0, 2, 3)).reshape(C * HH * WW, -1)


def _col2im(dcols, x_shape, HH, WW, stride, pad, H_out, W_out):
    """The adjoint of _im2col: each filter tap adds its columns back onto the input."""
    N, C, H, W = x_shape
    taps = dcols.reshape(C, HH, WW, N, H_out, W_out)
    # Channels first, as in dcols, so that each tap adds whole contiguous rows.
    dpadded = np.zeros((C, N, H + 2 * pad, W + 2 * pad), dcols.dtype)
    for i in range(HH):
        for j in range(WW):
            rows = slice(i, i + stride * H_out, stride)
            columns = slice(j, j + stride * W_out, stride)
            dpadded[:, :, rows, columns] += taps[:, i, j]
    return np.ascontiguousarray(dpadded[:, :, pad : pad + H, pad : pad + W].transpose(1, 0, 2, 3))


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
        at = (slice(None), slice(None), slice(i, i + stride * (H_out - 1) + 1, stride),
              slice(j, j + stride * (W_out - 1) + 1, stride))
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
