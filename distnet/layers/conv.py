"""Convolution and max pooling, naive: the readable reference for distnet.fast_layers.

The loops run over output pixels only, each step one matrix product over the batch. The
input checks (`check_conv_input`, `check_pool_input`) are public so that the fast layers
reject exactly what these do, with the same words.
"""

from __future__ import annotations

import numbers

import numpy as np

from distnet.errors import InvalidInput


def _int_params(params, keys: dict[str, int], what: str) -> list[int]:
    """params[key] for each key, each an integer >= its minimum; no other keys allowed."""
    if not isinstance(params, dict):
        raise InvalidInput(f"{what} must be a dict with keys {list(keys)}, got {params!r}")
    missing, unknown = keys.keys() - params.keys(), params.keys() - keys.keys()
    if missing or unknown:
        raise InvalidInput(
            f"{what} needs exactly the keys {list(keys)}"
            + (f"; missing {sorted(missing)}" if missing else "")
            + (f"; unknown {sorted(unknown)}" if unknown else "")
        )
    values = []
    for key, minimum in keys.items():
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise InvalidInput(f"{what}[{key!r}] must be an integer >= {minimum}, got {value!r}")
        values.append(int(value))
    return values


def _output_size(size: int, window: int, stride: int, axis: str, where: str, of="input") -> int:
    """Number of window positions along one axis; the windows must tile it exactly."""
    if window > size:
        raise InvalidInput(f"{where}: the window {axis} {window} exceeds the {of} {axis} {size}")
    if (size - window) % stride:
        raise InvalidInput(
            f"{where}: windows of {axis} {window} at stride {stride} do not tile the {of} "
            f"{axis} {size} ({size} - {window} is not a multiple of {stride})"
        )
    return 1 + (size - window) // stride


def check_conv_input(x, w, b, conv_param) -> tuple[int, int, int, int]:
    """Validate a convolution's inputs; returns (stride, pad, H_out, W_out).

    x: (N, C, H, W); w: (F, C, HH, WW); b: (F,); conv_param: {'stride' >= 1, 'pad' >= 0}.
    The filters must tile the padded input exactly: (H + 2 * pad - HH) % stride == 0.
    """
    stride, pad = _int_params(conv_param, {"stride": 1, "pad": 0}, "conv_param")
    if x.ndim != 4:
        raise InvalidInput(f"conv input x must be (N, C, H, W), got shape {x.shape}")
    if w.ndim != 4:
        raise InvalidInput(f"conv filters w must be (F, C, HH, WW), got shape {w.shape}")
    if x.shape[1] != w.shape[1]:
        raise InvalidInput(
            f"conv input x {x.shape} has {x.shape[1]} channels, "
            f"but the filters w {w.shape} expect {w.shape[1]}"
        )
    if b.shape != (w.shape[0],):
        raise InvalidInput(f"conv bias b must have shape ({w.shape[0]},), got {b.shape}")
    where = f"conv of x {x.shape} with w {w.shape}, stride {stride}, pad {pad}"
    _, _, H, W = x.shape
    of = "padded input" if pad else "input"
    H_out = _output_size(H + 2 * pad, w.shape[2], stride, "height", where, of)
    W_out = _output_size(W + 2 * pad, w.shape[3], stride, "width", where, of)
    return stride, pad, H_out, W_out


def check_pool_input(x, pool_param) -> tuple[int, int, int, int, int]:
    """Validate a max pool's inputs; returns (pool_height, pool_width, stride, H_out, W_out).

    x: (N, C, H, W); pool_param: {'pool_height', 'pool_width', 'stride'}, each >= 1. The
    windows must tile the input exactly: (H - pool_height) % stride == 0.
    """
    keys = {"pool_height": 1, "pool_width": 1, "stride": 1}
    pool_height, pool_width, stride = _int_params(pool_param, keys, "pool_param")
    if x.ndim != 4:
        raise InvalidInput(f"max pool input x must be (N, C, H, W), got shape {x.shape}")
    where = f"{pool_height}x{pool_width} max pool of x {x.shape}, stride {stride}"
    H_out = _output_size(x.shape[2], pool_height, stride, "height", where)
    W_out = _output_size(x.shape[3], pool_width, stride, "width", where)
    return pool_height, pool_width, stride, H_out, W_out


def check_dout(dout, expected: tuple[int, ...], layer: str) -> None:
    """A backward pass's upstream gradient must have its forward output's shape."""
    if dout.shape != expected:
        raise InvalidInput(
            f"{layer} backward: dout has shape {dout.shape}, but the forward output had {expected}"
        )


def conv_forward_naive(x, w, b, conv_param):
    """Convolution (cross-correlation, as the assignment and every framework define it).

    x: (N, C, H, W); w: (F, C, HH, WW); b: (F,); conv_param: {'stride', 'pad'} (zero
    padding of `pad` pixels on each side). Returns out (N, F, H_out, W_out) with
    H_out = 1 + (H + 2 * pad - HH) // stride (and so for W), and cache (x, w, b, conv_param).
    """
    stride, pad, H_out, W_out = check_conv_input(x, w, b, conv_param)
    _, _, HH, WW = w.shape
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.empty((x.shape[0], w.shape[0], H_out, W_out), dtype=np.result_type(x, w, b))
    for i in range(H_out):
        for j in range(W_out):
            window = padded[:, :, i * stride : i * stride + HH, j * stride : j * stride + WW]
            out[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    """dout: (N, F, H_out, W_out). Returns dx (N, C, H, W), dw (F, C, HH, WW), db (F,)."""
    x, w, b, conv_param = cache
    stride, pad, H_out, W_out = check_conv_input(x, w, b, conv_param)
    check_dout(dout, (x.shape[0], w.shape[0], H_out, W_out), "conv")
    _, _, HH, WW = w.shape
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dpadded = np.zeros(padded.shape, dtype=np.result_type(dout, w))
    dw = np.zeros(w.shape, dtype=np.result_type(dout, x))
    for i in range(H_out):
        for j in range(W_out):
            rows, cols = slice(i * stride, i * stride + HH), slice(j * stride, j * stride + WW)
            pixel = dout[:, :, i, j]  # (N, F): how much each image wants each filter's output
            dw += np.tensordot(pixel, padded[:, :, rows, cols], axes=([0], [0]))
            dpadded[:, :, rows, cols] += np.tensordot(pixel, w, axes=([1], [0]))
    dx = dpadded[:, :, pad : pad + x.shape[2], pad : pad + x.shape[3]]
    db = dout.sum(axis=(0, 2, 3))
    return dx, dw, db


def max_pool_forward_naive(x, pool_param):
    """Max pooling. x: (N, C, H, W); pool_param: {'pool_height', 'pool_width', 'stride'}.

    Returns out (N, C, H_out, W_out) with H_out = 1 + (H - pool_height) // stride (and so
    for W), and cache (x, pool_param).
    """
    pool_height, pool_width, stride, H_out, W_out = check_pool_input(x, pool_param)
    out = np.empty(x.shape[:2] + (H_out, W_out), dtype=x.dtype)
    for i in range(H_out):
        for j in range(W_out):
            rows = slice(i * stride, i * stride + pool_height)
            cols = slice(j * stride, j * stride + pool_width)
            out[:, :, i, j] = x[:, :, rows, cols].max(axis=(2, 3))
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache):
    """dout: (N, C, H_out, W_out). Returns dx (N, C, H, W).

    Each output's gradient goes to its window's maximum; where several inputs tie for it,
    to the first in row-major order (as PyTorch does), so the gradient sums to dout's.
    """
    x, pool_param = cache
    pool_height, pool_width, stride, H_out, W_out = check_pool_input(x, pool_param)
    N, C = x.shape[:2]
    check_dout(dout, (N, C, H_out, W_out), "max pool")
    dx = np.zeros(x.shape, dtype=np.result_type(dout, x))
    for i in range(H_out):
        for j in range(W_out):
            rows = slice(i * stride, i * stride + pool_height)
            cols = slice(j * stride, j * stride + pool_width)
            first_max = x[:, :, rows, cols].reshape(N, C, -1).argmax(axis=2)[..., None]
            dwindow = np.zeros((N, C, pool_height * pool_width), dtype=dx.dtype)
            np.put_along_axis(dwindow, first_max, dout[:, :, i, j][..., None], axis=2)
            dx[:, :, rows, cols] += dwindow.reshape(N, C, pool_height, pool_width)
    return dx
