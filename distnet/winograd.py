"""Winograd convolution F(m x m, 3 x 3) for distnet.fast_layers' 3x3 stride-1 layers.

Each (m + 2) x (m + 2) input tile (tiles m apart) gives m x m outputs from (m + 2)^2
products per channel pair instead of 9 m^2 (Lavin & Gray, 2015): the input tiles are
transformed (V = B^T d B), the filters too (U = G g G^T), then one batched product per
tile position, V[t] (tiles, C) @ U[t] (C, F), sums over the channels, and the output
transform (A^T M A) gives the m x m outputs. Backward is the adjoint of each step: dw
from V^T @ dM and dx from dM @ U^T, transformed back. So the three products of the layer
make 9 m^2 / (m + 2)^2 fewer multiplies: 2.25x for m = 2, 4x for m = 4.

The transforms are sums of strided views of the channels-last (NHWC) input, one
elementwise pass per nonzero coefficient, separable: rows first, then columns. Data stay
channels-last so that each tile's channels are contiguous, the rows of the products.
Exact in exact arithmetic; in floating point m = 2 adds about one rounding per step
(coefficients 0 and +-1 only), m = 4 amplifies rounding by about 10x (coefficients up to
8 and 1/24).
"""

from __future__ import annotations

import numpy as np

from distnet.im2col import scratch

# Transform matrices, as in Lavin & Gray (interpolation points 0, +-1 for m = 2 and
# 0, +-1, +-2 for m = 4): output tile = A^T [(G g G^T) * (B^T d B)] A.
TRANSFORMS = {
    2: (
        np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], float),  # B^T
        np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),  # G
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float),  # A^T
    ),
    4: (
        np.array(
            [
                [4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1],
            ],
            float,
        ),
        np.array(
            [
                [1 / 4, 0, 0],
                [-1 / 6, -1 / 6, -1 / 6],
                [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6],
                [1 / 24, -1 / 12, 1 / 6],
                [0, 0, 1],
            ]
        ),
        np.array(
            [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
            float,
        ),
    ),
}


def tiles(size_out: int, m: int) -> int:
    """The number of m-wide output tiles that cover size_out outputs."""
    return -(-size_out // m)


def conv3x3_forward(x, w, b, pad: int, m: int):
    """conv_forward_naive's output for 3x3 filters, stride 1, as F(m x m, 3 x 3).

    Returns out (N, F, H_out, W_out), C-contiguous, and the transformed input tiles V
    ((m + 2)^2, tiles, C), which backward reuses for dw.
    """
    BT, G, AT = TRANSFORMS[m]
    N, C, H, W = x.shape
    F = w.shape[0]
    H_out, W_out = H + 2 * pad - 2, W + 2 * pad - 2
    Th, Tw = tiles(H_out, m), tiles(W_out, m)
    a = m + 2
    padded = scratch("winograd padded", (N, m * Th + 2, m, Tw + 1, C), x.dtype)
    _split_padded(x, pad, m, padded)
    V = np.empty((a, a, N, Th, Tw, C), x.dtype)
    _tiles_transform(padded, BT, m, Th, Tw, V)
    U = np.einsum("ik,jl,fckl->ijcf", G, G, w).astype(w.dtype, copy=False)
    M = np.matmul(V.reshape(a * a, -1, C), U.reshape(a * a, C, F))
    out_tiles = scratch("winograd output", (N, Th, m, Tw, m, F), M.dtype)
    _output_transform(M.reshape(a, a, N, Th, Tw, F), AT, out_tiles)
    out_tiles += b
    out = out_tiles.reshape(N, m * Th, m * Tw, F)[:, :H_out, :W_out].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(out), V.reshape(a * a, -1, C)


def conv3x3_backward(dout, x_shape, w, V, pad: int, m: int, *, input_grad=True, dw=None):
    """The adjoint of conv3x3_forward: dx (N, C, H, W) (None unless input_grad) and dw
    (F, C, 3, 3), written into `dw` if given. V is what forward returned."""
    BT, G, AT = TRANSFORMS[m]
    N, C, H, W = x_shape
    F = w.shape[0]
    H_out, W_out = dout.shape[2:]
    Th, Tw = tiles(H_out, m), tiles(W_out, m)
    a = m + 2
    dout_tiles = scratch("winograd output", (N, Th, m, Tw, m, F), dout.dtype)
    flat = dout_tiles.reshape(N, m * Th, m * Tw, F)
    flat[:, H_out:] = 0
    flat[:, :, W_out:] = 0
    flat[:, :H_out, :W_out] = dout.transpose(0, 2, 3, 1)
    dM = np.empty((a, a, N, Th, Tw, F), dout.dtype)
    _output_transform_adjoint(dout_tiles, AT, dM)
    dM = dM.reshape(a * a, -1, F)
    dU = np.matmul(V.transpose(0, 2, 1), dM).reshape(a, a, C, F)
    grad_w = np.einsum("ik,jl,ijcf->fckl", G, G, dU)
    if dw is None:
        dw = np.empty(w.shape, np.result_type(dout, V))
    np.copyto(dw, grad_w)
    if not input_grad:
        return None, dw
    U = np.einsum("ik,jl,fckl->ijfc", G, G, w).astype(w.dtype, copy=False)
    dV = np.matmul(dM, U.reshape(a * a, F, C)).reshape(a, a, N, Th, Tw, C)
    dpadded = np.zeros((N, m * Th + 2, m, Tw + 1, C), dV.dtype)
    _tiles_transform_adjoint(dV, BT, m, dpadded)
    dx = np.empty(x_shape, dV.dtype)
    for phase, w0, q0, count in _phases(W, pad, m):
        dx[:, :, :, w0::m] = dpadded[:, pad : pad + H, phase, q0 : q0 + count].transpose(0, 3, 1, 2)
    return dx, dw


def _phases(W, pad, m):
    """For each phase p of the padded columns (padded column = m * q + p): the first
    input column w0 in it, its q0 and how many input columns it holds."""
    for phase in range(m):
        w0 = (phase - pad) % m
        yield phase, w0, (w0 + pad) // m, len(range(w0, W, m))


def _split_padded(x, pad, m, padded):
    """padded (N, Hq, m, Q, C) = x (N, C, H, W) zero-padded, channels-last, its columns
    split by phase (column m * q + p at [:, :, p, q]): the column transform's views of
    tile offsets are then contiguous runs, not runs of C floats."""
    H = x.shape[2]
    padded[:, :pad] = 0
    padded[:, pad + H :] = 0
    for phase, w0, q0, count in _phases(x.shape[3], pad, m):
        inside = padded[:, pad : pad + H, phase]
        inside[:, :, :q0] = 0
        inside[:, :, q0 + count :] = 0
        inside[:, :, q0 : q0 + count] = x[:, :, :, w0::m].transpose(0, 2, 3, 1)


def _combine(out, coefficients, terms, temp=None):
    """out = sum of c * term over the nonzero coefficients: one elementwise pass per term
    after the first two (a +-1 pair is one add or subtract)."""
    pairs = [(c, t) for c, t in zip(coefficients, terms, strict=True) if c != 0]
    if not pairs:
        out.fill(0)
        return
    (c0, t0), rest = pairs[0], pairs[1:]
    if rest and abs(c0) == 1 and abs(rest[0][0]) == 1:
        (c1, t1), rest = rest[0], rest[1:]
        if c0 == c1:
            np.add(t0, t1, out=out)
        else:
            np.subtract(t0, t1, out=out)
        if c0 == -1:
            np.negative(out, out=out)
    elif c0 == 1:
        np.copyto(out, t0)
    elif c0 == -1:
        np.negative(t0, out=out)
    else:
        np.multiply(t0, c0, out=out)
    for c, term in rest:
        if c == 1:
            out += term
        elif c == -1:
            out -= term
        else:
            if temp is None:
                temp = np.empty(out.shape, out.dtype)
            np.multiply(term, c, out=temp)
            out += temp


def _accumulate(target, coefficients, terms, temp):
    """target += sum of c * term: the adjoint of _combine into one strided view."""
    _combine(temp, coefficients, terms)
    target += temp


def _offsets(a, k, m, count, axis):
    """a's positions k, k + m, ..., k + m * (count - 1) along axis: a strided view."""
    index = [slice(None)] * a.ndim
    index[axis] = slice(k, k + m * (count - 1) + 1, m)
    return a[tuple(index)]


def _column_offsets(a, k, m, count):
    """Columns k, k + m, ... of a phase-split (N, T, m, Q, C) array: (N, T, count, C)."""
    return a[:, :, k % m, k // m : k // m + count]


def _tiles_transform(padded, BT, m, Th, Tw, V):
    """V[i, j] = (B^T d B)[i, j] for every tile d of padded (N, Hq, Wq, C): rows, then
    columns, each output a combination of the strided views of tile offsets k."""
    a = m + 2
    rows = scratch("winograd rows", (a, padded.shape[0], Th) + padded.shape[2:], padded.dtype)
    row_views = [_offsets(padded, k, m, Th, 1) for k in range(a)]
    for i in range(a):
        _combine(rows[i], BT[i], row_views)
    for i in range(a):
        col_views = [_column_offsets(rows[i], k, m, Tw) for k in range(a)]
        for j in range(a):
            _combine(V[i, j], BT[j], col_views)


def _tiles_transform_adjoint(dV, BT, m, dpadded):
    """dpadded += the adjoint of _tiles_transform applied to dV (a, a, N, Th, Tw, C)."""
    a = m + 2
    _, _, N, Th, Tw, C = dV.shape
    drows = scratch("winograd rows", (a, N, Th) + dpadded.shape[2:], dV.dtype)
    drows.fill(0)
    temp = scratch("winograd temp", (N, Th, Tw, C), dV.dtype)
    for i in range(a):
        for k in range(a):  # column offset k takes sum_j BT[j, k] dV[i, j]
            _accumulate(_column_offsets(drows[i], k, m, Tw), BT[:, k], dV[i], temp)
    temp = scratch("winograd temp", drows.shape[1:], dV.dtype)
    for k in range(a):
        _accumulate(_offsets(dpadded, k, m, Th, 1), BT[:, k], drows, temp)


def _output_transform(M, AT, out_tiles):
    """out_tiles[:, :, i, :, j] = (A^T M A)[i, j], M (a, a, N, Th, Tw, F)."""
    m, a = AT.shape
    _, _, N, Th, Tw, F = M.shape
    half = scratch("winograd half", (m, a, N, Th, Tw, F), M.dtype)
    for i in range(m):
        for j in range(a):
            _combine(half[i, j], AT[i], M[:, j])
    for i in range(m):
        for j in range(m):
            _combine(out_tiles[:, :, i, :, j], AT[j], half[i])


def _output_transform_adjoint(dout_tiles, AT, dM):
    """dM = A dY A^T per tile: the adjoint of _output_transform."""
    m, a = AT.shape
    N, Th, _, Tw, _, F = dout_tiles.shape
    half = scratch("winograd half", (m, a, N, Th, Tw, F), dM.dtype)
    dY = [[dout_tiles[:, :, i, :, j] for j in range(m)] for i in range(m)]
    for i in range(m):
        for ell in range(a):
            _combine(half[i, ell], AT[:, ell], dY[i])
    for k in range(a):
        for ell in range(a):
            _combine(dM[k, ell], AT[:, k], half[:, ell])
