"""im2col for distnet.fast_layers, laid out for the products OpenBLAS runs fastest.

OpenBLAS (single thread, these thin shapes) is fastest when the large matrix is on the
left and contiguous along the summed index. With many channels (more than the filter is
wide), the patches are rows, (pixels, taps) with taps (HH, WW, C), copied in runs of C
floats from a channels-last copy of the input: the forward product (pixels, taps) @
(taps, F) runs about 1.4x faster than (F, taps) @ (taps, pixels), and its result is the
output in NHWC. With few channels (a first layer's 3) the copy into rows would move runs
of 3 or WW floats, twice as slow as the whole product; the patches are then columns,
(taps, pixels) with taps (C, HH, WW), copied in runs of W_out floats from NCHW, which also
suit dw's product (taps, pixels) @ (pixels, F).

With pixel rows the patch matrix is never made whole: `patch_tiles` copies it tile by
tile (about TILE_BYTES each) into one reused buffer and each tile's products run while it
is in the cache. Written whole, a 3x3 layer's patches (9x its input, 59 MB for 32
channels at 32x32, batch 50) go out to memory and come back for the product: tiled, the
copy and the product of 32->32 took 15 ms instead of 27 here.

Temporaries that never outlive a call (padded inputs, a backward pass's patches) live in
per-thread scratch buffers reused across calls: on this VM writing fresh memory costs
about as much as the copy itself.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_scratch = threading.local()


def scratch(role: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of `shape`, a view of this thread's buffer for
    `role`, which grows to the largest size asked for. Valid until the next call for the
    same role: a caller must not keep it or return it."""
    buffers = _scratch.__dict__
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize  # (np.prod of a tuple: 5 us a call)
    buffer = buffers.get(role)
    if buffer is None or buffer.size < size:
        buffer = buffers[role] = np.empty(size, np.uint8)
    return buffer[:size].view(dtype).reshape(shape)


def copy_nhwc(dst, x) -> None:
    """dst (N, H, W, C), any strides, = x (N, C, H, W) with its channels last.

    When a channel plane is a multiple of 4 KB (32x32 float32), the straight copy reads
    C floats 4 KB apart for each pixel, which alias in the cache (2.5x slower here): the
    planes are then first copied into scratch rows 64 bytes longer."""
    N, C, H, W = x.shape
    if (H * W * x.itemsize) % 4096:
        np.copyto(dst, x.transpose(0, 2, 3, 1))
        return
    staged = scratch("nhwc staging", (N, C, H * W + 64 // x.itemsize), x.dtype)[:, :, : H * W]
    np.copyto(staged, x.reshape(N, C, H * W))
    np.copyto(dst, staged.reshape(N, C, H, W).transpose(0, 2, 3, 1))


def channels_last(channels: int, filter_width: int) -> bool:
    """Whether patch rows order their taps (HH, WW, C) rather than (C, HH, WW)."""
    return channels > filter_width


def padded_nhwc(x, pad_h: int, pad_w: int, last: bool, role: str) -> np.ndarray:
    """x (N, C, H, W) zero-padded, as an (N, H + 2 pad_h, W + 2 pad_w, C) view of a scratch
    buffer laid out channels-last if `last`, else NCHW (the view is then transposed)."""
    N, C, H, W = x.shape
    if not last and not pad_h and not pad_w:
        return x.transpose(0, 2, 3, 1)
    Hp, Wp = H + 2 * pad_h, W + 2 * pad_w
    buffer = scratch(role, (N, Hp, Wp, C) if last else (N, C, Hp, Wp), x.dtype)
    view = buffer if last else buffer.transpose(0, 2, 3, 1)
    # Only the border is zeroed: the buffer is reused, and the inside is overwritten.
    for border in (
        view[:, :pad_h],
        view[:, Hp - pad_h :],
        view[:, :, :pad_w],
        view[:, :, Wp - pad_w :],
    ):
        border.fill(0)
    if last:
        copy_nhwc(view[:, pad_h : pad_h + H, pad_w : pad_w + W], x)
    else:  # an NCHW copy, transposed back
        view[:, pad_h : pad_h + H, pad_w : pad_w + W] = x.transpose(0, 2, 3, 1)
    return view


def patch_matrix(x, HH, WW, stride, pad_h, pad_w, out=None) -> np.ndarray:
    """x (N, C, H, W)'s receptive fields, tap (c, i, j) of pixel (n, h, w) = padded
    x[n, c, h * stride + i, w * stride + j], copied once (into `out` if given) in the
    layout channels_last(C, WW) picks: rows (N * H_out * W_out, HH * WW * C), taps
    (i, j, c); or columns (C * HH * WW, N * H_out * W_out), taps (c, i, j)."""
    N, C = x.shape[:2]
    last = channels_last(C, WW)
    padded = padded_nhwc(x, pad_h, pad_w, last, "padded input")
    windows = sliding_window_view(padded, (HH, WW), axis=(1, 2))[:, ::stride, ::stride]
    # (N, H_out, W_out, C, HH, WW), the axes put in the layout's order, then copied once.
    windows = windows.transpose((0, 1, 2, 4, 5, 3) if last else (3, 4, 5, 0, 1, 2))
    matrix = np.empty(windows.shape, x.dtype) if out is None else out.reshape(windows.shape)
    np.copyto(matrix, windows)
    return matrix.reshape((-1, C * HH * WW) if last else (C * HH * WW, -1))


# Bytes of the patch matrix per tile: about a core's L2 (1 MB here). Interleaved, fwd +
# bwd CPU ms, 256 KB / 512 KB / 1 MB / 2 MB: 7x7 3->32 18.4 / 17.7 / 17.1 / 17.4; 3x3
# 32->32 48.4 / 46.7 / 45.9 / 45.1; 64->64 39.3 / 38.1 / 36.7 / 36.1. Whole matrices
# (the patches written out to memory and read back) were 1.8x slower than tiles.
TILE_BYTES = 1 << 20


def patch_tiles(x, HH, WW, stride, pad_h, pad_w, ones: bool = False):
    """patch_matrix(x, ...) in tiles, in its layout (pixel rows or tap columns): yields
    (pixels, span, tile) with `pixels` a slice of the pixel index (N, H_out, W_out),
    `span` = (n0, n1, h0, h1) the images and output rows it covers, and `tile` those
    pixels' patches, (pixels, taps) or (taps, pixels), in a scratch buffer valid until the
    next tile. A tile is whole images, or whole output rows of one image when an image's
    patches exceed TILE_BYTES: its pixels are contiguous. `ones` (tap columns only): each
    tile has a last row of ones, so that a bias can ride in the product."""
    N, C = x.shape[:2]
    last = channels_last(C, WW)
    padded = padded_nhwc(x, pad_h, pad_w, last, "padded input")
    windows = sliding_window_view(padded, (HH, WW), axis=(1, 2))[:, ::stride, ::stride]
    H_out, W_out = windows.shape[1:3]
    # (N, H_out, W_out, HH, WW, C) for rows; (C, HH, WW, N, H_out, W_out) for columns
    windows = windows.transpose((0, 1, 2, 4, 5, 3) if last else (3, 4, 5, 0, 1, 2))
    taps = HH * WW * C
    line = W_out * taps * x.itemsize  # bytes of one output row's patches
    # Tiles of equal size (a last small one would be a slow small product).
    if H_out * line <= TILE_BYTES:
        images = _even(N, TILE_BYTES // (H_out * line))
        spans = [(n, min(n + images, N), 0, H_out) for n in range(0, N, images)]
    else:
        lines = _even(H_out, max(1, TILE_BYTES // line))
        spans = [
            (n, n + 1, h, min(h + lines, H_out)) for n in range(N) for h in range(0, H_out, lines)
        ]
    for n0, n1, h0, h1 in spans:
        pixels = (n1 - n0) * (h1 - h0) * W_out
        start = (n0 * H_out + h0) * W_out
        if last:
            tile = scratch("patch tile", (n1 - n0, h1 - h0, W_out, HH, WW, C), x.dtype)
            np.copyto(tile, windows[n0:n1, h0:h1])
            tile = tile.reshape(pixels, taps)
        else:
            tile = scratch("patch tile", (taps + ones, pixels), x.dtype)
            np.copyto(
                tile[:taps].reshape(C, HH, WW, n1 - n0, h1 - h0, W_out),
                windows[:, :, :, n0:n1, h0:h1],
            )
            if ones:
                tile[taps] = 1
        yield slice(start, start + pixels), (n0, n1, h0, h1), tile


def _even(total: int, most: int) -> int:
    """The size of ceil(total / most) parts of `total` as equal as can be."""
    parts = -(-total // most)
    return -(-total // parts)


def filter_rows(w) -> np.ndarray:
    """w (F, C, HH, WW) as the (C * HH * WW, F) matrix whose rows match the patch taps."""
    F, C, HH, WW = w.shape
    if channels_last(C, WW):
        return np.ascontiguousarray(w.transpose(2, 3, 1, 0)).reshape(-1, F)
    return w.reshape(F, -1).T


def filters_from_rows(rows, out) -> None:
    """The adjoint of filter_rows: write the (taps, F) matrix `rows` into out (F, C, HH, WW)."""
    F, C, HH, WW = out.shape
    if channels_last(C, WW):
        np.copyto(out, rows.reshape(HH, WW, C, F).transpose(3, 2, 0, 1))
    else:
        np.copyto(np.reshape(out, (F, -1), copy=False), rows.T)


def col2im(dpatches, x_shape, HH, WW, stride, pad) -> np.ndarray:
    """The adjoint of patch_matrix: each filter tap adds its part of dpatches (in
    patch_matrix's layout) back onto the input. Returns dx (N, C, H, W), C-contiguous."""
    N, C, H, W = x_shape
    H_out, W_out = (H + 2 * pad - HH) // stride + 1, (W + 2 * pad - WW) // stride + 1
    shape = (N, H + 2 * pad, W + 2 * pad, C)
    if channels_last(C, WW):
        taps = dpatches.reshape(N, H_out, W_out, HH, WW, C).transpose(0, 1, 2, 5, 3, 4)
        dview = dpadded = np.zeros(shape, dpatches.dtype)
    else:  # channels first, as the columns are, so that each tap adds contiguous rows
        taps = dpatches.reshape(C, HH, WW, N, H_out, W_out).transpose(3, 4, 5, 0, 1, 2)
        dpadded = np.zeros((C, N) + shape[1:3], dpatches.dtype)
        dview = dpadded.transpose(1, 2, 3, 0)
    for i in range(HH):  # taps: (N, H_out, W_out, C, HH, WW); dview: (N, Hp, Wp, C)
        for j in range(WW):
            rows = slice(i, i + stride * H_out, stride)
            dview[:, rows, j : j + stride * W_out : stride] += taps[..., i, j]
    return np.ascontiguousarray(dview[:, pad : pad + H, pad : pad + W].transpose(0, 3, 1, 2))
