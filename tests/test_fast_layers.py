"""distnet.fast_layers against the naive layers (float64, 1e-9), numerical gradients,
dtypes, the keyword options of conv backward, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from distnet.errors import InvalidInput
from distnet.fast_layers import (
    conv_backward_fast,
    conv_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
    uses_winograd,
)
from distnet.gradcheck import eval_numerical_gradient_array, rel_error
from distnet.layers.conv import (
    conv_backward_naive,
    conv_forward_naive,
    max_pool_backward_naive,
    max_pool_forward_naive,
)
from distnet.winograd import conv3x3_backward, conv3x3_forward

# (x shape, w shape, stride, pad): stride 1 and 2, pad 0/1/2, non-square and odd sizes,
# non-square filters, 1x1 filters, a filter as large as the padded input; each of
# fast_layers' paths: few channels with wide rows of 4, 2 or 1 output pixels, many
# channels with dx as a product (stride 1, pad < filter size, > 3 filters) or by col2im.
CONV_CASES = [
    ((2, 3, 8, 8), (4, 3, 7, 7), 1, 3),  # a first layer: rows 4 pixels wide
    ((2, 3, 6, 9), (4, 3, 3, 3), 1, 1),  # rows 2 pixels wide
    ((2, 5, 6, 7), (6, 5, 3, 3), 1, 1),  # dx as a product
    ((2, 4, 5, 6), (5, 4, 3, 3), 1, 2),
    ((2, 5, 6, 6), (2, 5, 3, 3), 1, 1),  # channels last, dx by col2im
    ((2, 3, 7, 5), (4, 3, 3, 3), 1, 1),
    ((2, 3, 9, 7), (4, 3, 3, 3), 2, 0),
    ((3, 2, 8, 6), (3, 2, 3, 1), 1, 2),
    ((2, 3, 7, 7), (2, 3, 5, 5), 2, 2),
    ((1, 4, 6, 10), (5, 4, 2, 4), 2, 1),
    ((2, 3, 5, 5), (3, 3, 1, 1), 1, 0),
    ((2, 2, 4, 3), (3, 2, 6, 5), 1, 1),
    ((4, 3, 15, 15), (6, 3, 3, 3), 2, 1),  # the notebook's timing cell, smaller
    ((2, 4, 17, 16), (8, 4, 3, 3), 1, 1),  # Winograd tiles (3x3 stride 1, F >= 2C, 16x16+)
    ((2, 4, 18, 19), (9, 4, 3, 3), 1, 0),
    ((1, 5, 14, 15), (10, 5, 3, 3), 1, 2),
]
# (x shape, pool_height, pool_width, stride): tiling, overlapping and gapped windows.
POOL_CASES = [
    ((2, 3, 8, 8), 2, 2, 2),
    ((2, 3, 6, 10), 2, 2, 2),
    ((2, 3, 7, 9), 3, 3, 2),
    ((2, 2, 5, 6), 2, 3, 1),
    ((2, 2, 7, 7), 1, 1, 3),
    ((1, 3, 9, 6), 3, 2, 2),
]


def conv_case(x_shape, w_shape, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    return x, w, b


def pool_param(ph, pw, stride):
    return {"pool_height": ph, "pool_width": pw, "stride": stride}


@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "pad"), CONV_CASES)
def test_conv_fast_equals_naive(x_shape, w_shape, stride, pad):
    x, w, b = conv_case(x_shape, w_shape)
    conv_param = {"stride": stride, "pad": pad}
    out_naive, cache_naive = conv_forward_naive(x, w, b, conv_param)
    out_fast, cache_fast = conv_forward_fast(x, w, b, conv_param)
    assert out_fast.shape == out_naive.shape
    assert rel_error(out_fast, out_naive) < 1e-9
    assert all(a is b for a, b in zip(cache_fast[:4], cache_naive, strict=True))
    dout = np.random.default_rng(1).standard_normal(out_naive.shape)
    for naive, fast in zip(
        conv_backward_naive(dout, cache_naive), conv_backward_fast(dout, cache_fast), strict=True
    ):
        assert fast.shape == naive.shape
        assert rel_error(fast, naive) < 1e-9


@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "pad"), CONV_CASES[:5])
def test_conv_fast_numerical_gradients(x_shape, w_shape, stride, pad):
    x, w, b = conv_case(x_shape, w_shape, seed=2)
    conv_param = {"stride": stride, "pad": pad}
    out, cache = conv_forward_fast(x, w, b, conv_param)
    dout = np.random.default_rng(3).standard_normal(out.shape)
    inputs = [x, w, b]

    def out_of(k):  # the forward output as a function of inputs[k] alone
        return lambda a: conv_forward_fast(*inputs[:k], a, *inputs[k + 1 :], conv_param)[0]

    for k, grad in enumerate(conv_backward_fast(dout, cache)):
        assert rel_error(grad, eval_numerical_gradient_array(out_of(k), inputs[k], dout)) < 1e-7


@pytest.mark.parametrize(("x_shape", "ph", "pw", "stride"), POOL_CASES)
def test_max_pool_fast_equals_naive(x_shape, ph, pw, stride):
    x = np.random.default_rng(4).standard_normal(x_shape)
    param = pool_param(ph, pw, stride)
    out_naive, cache_naive = max_pool_forward_naive(x, param)
    out_fast, cache_fast = max_pool_forward_fast(x, param)
    assert out_fast.shape == out_naive.shape
    assert rel_error(out_fast, out_naive) < 1e-9
    assert all(a is b for a, b in zip(cache_fast[:2], cache_naive, strict=True))
    dout = np.random.default_rng(5).standard_normal(out_naive.shape)
    dx_naive = max_pool_backward_naive(dout, cache_naive)
    dx_fast = max_pool_backward_fast(dout, cache_fast)
    assert dx_fast.shape == x.shape
    assert rel_error(dx_fast, dx_naive) < 1e-9


@pytest.mark.parametrize(("size", "ph", "pw", "stride"), [(8, 2, 2, 2), (9, 3, 3, 2), (7, 2, 2, 1)])
def test_max_pool_ties_go_to_the_first_maximum(size, ph, pw, stride):
    # Integers in [0, 2] after a ReLU-like clip: most windows hold several equal maxima.
    x = np.random.default_rng(6).integers(-2, 3, size=(3, 2, size, size)).clip(0).astype(float)
    param = pool_param(ph, pw, stride)
    out, cache = max_pool_forward_fast(x, param)
    dout = np.random.default_rng(7).standard_normal(out.shape)
    dx = max_pool_backward_fast(dout, cache)
    dx_naive = max_pool_backward_naive(dout, max_pool_forward_naive(x, param)[1])
    assert rel_error(dx, dx_naive) < 1e-12  # overlapping windows add in another order
    assert np.isclose(dx.sum(), dout.sum())  # each output's gradient lands exactly once


@pytest.mark.parametrize(("x_shape", "ph", "pw", "stride"), POOL_CASES[:4])
def test_max_pool_fast_numerical_gradient(x_shape, ph, pw, stride):
    # Distinct values far apart: no window maximum changes within the step h.
    rng = np.random.default_rng(8)
    x = rng.permutation(np.prod(x_shape)).reshape(x_shape) * 0.01
    param = pool_param(ph, pw, stride)
    out, cache = max_pool_forward_fast(x, param)
    dout = rng.standard_normal(out.shape)
    dx_num = eval_numerical_gradient_array(lambda a: max_pool_forward_fast(a, param)[0], x, dout)
    assert rel_error(max_pool_backward_fast(dout, cache), dx_num) < 1e-8


def test_winograd_cases_take_the_winograd_path():
    # The last three CONV_CASES are there for it; the 3x3 cases before them are not.
    for k, (x_shape, (F, C, HH, WW), stride, pad) in enumerate(CONV_CASES):
        H_out = (x_shape[2] + 2 * pad - HH) // stride + 1
        W_out = (x_shape[3] + 2 * pad - WW) // stride + 1
        expected = k >= len(CONV_CASES) - 3
        assert uses_winograd(C, F, HH, WW, stride, H_out, W_out) == expected


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize(
    ("x_shape", "filters", "pad"),
    [((2, 3, 5, 7), 4, 1), ((1, 4, 6, 9), 3, 0), ((2, 3, 7, 6), 5, 2), ((2, 6, 3, 3), 2, 0)],
)
def test_winograd_equals_naive(m, x_shape, filters, pad):
    # Any channel counts, odd sizes and every 'same'-or-smaller padding, tiles m wide
    # that do not divide the output (the last tile row and column are cut off).
    x, w, b = conv_case(x_shape, (filters, x_shape[1], 3, 3), seed=14)
    conv_param = {"stride": 1, "pad": pad}
    out_naive, cache = conv_forward_naive(x, w, b, conv_param)
    out, tiles = conv3x3_forward(x, w, b, pad, m)
    assert out.shape == out_naive.shape and out.flags.c_contiguous
    assert rel_error(out, out_naive) < 1e-9
    dout = np.random.default_rng(15).standard_normal(out.shape)
    dx_naive, dw_naive, _ = conv_backward_naive(dout, cache)
    dx, dw = conv3x3_backward(dout, x.shape, w, tiles, pad, m)
    assert rel_error(dx, dx_naive) < 1e-9 and rel_error(dw, dw_naive) < 1e-9
    none, dw_only = conv3x3_backward(dout, x.shape, w, tiles, pad, m, input_grad=False)
    assert none is None and np.array_equal(dw_only, dw)


@pytest.mark.parametrize(("m", "bound"), [(2, 3e-6), (4, 3e-5)])
def test_winograd_float32_error(m, bound):
    # float32 on a network-like layer, against float64: largest error over the largest
    # value (F(4x4) amplifies rounding about 10x; the float32 tests allow 1e-4).
    x, w, b = conv_case((4, 16, 12, 12), (16, 16, 3, 3), seed=16)
    w *= 0.1
    out64, cache = conv_forward_naive(x, w, b, {"stride": 1, "pad": 1})
    dout = np.random.default_rng(17).standard_normal(out64.shape)
    dx64, dw64, _ = conv_backward_naive(dout, cache)
    f32 = [a.astype(np.float32) for a in (x, w, b, dout)]
    out, tiles = conv3x3_forward(*f32[:3], 1, m)
    dx, dw = conv3x3_backward(f32[3], x.shape, f32[1], tiles, 1, m)
    for got, want in ((out, out64), (dx, dx64), (dw, dw64)):
        assert got.dtype == np.float32
        assert np.abs(got - want).max() < bound * np.abs(want).max()


def test_interleaved_layers_do_not_share_state():
    # Two layers' forward passes, then their backward passes in reverse order (as a
    # network runs them), equal the same layers run alone: nothing a call leaves in the
    # reused scratch buffers survives into another call.
    cases = [
        conv_case((3, 6, 8, 8), (7, 6, 3, 3), seed=11),
        conv_case((3, 7, 8, 8), (5, 7, 3, 3), seed=12),
        conv_case((3, 4, 16, 16), (8, 4, 3, 3), seed=18),  # Winograd tiles
    ]
    param = {"stride": 1, "pad": 1}
    dout = [
        np.random.default_rng(13).standard_normal((3, w.shape[0], *x.shape[2:]))
        for x, w, _ in cases
    ]
    alone = [
        conv_backward_fast(d, conv_forward_fast(*case, param)[1])
        for case, d in zip(cases, dout, strict=True)
    ]
    caches = [conv_forward_fast(*case, param)[1] for case in cases]
    for k in (2, 1, 0):
        for a, b in zip(conv_backward_fast(dout[k], caches[k]), alone[k], strict=True):
            assert np.array_equal(a, b)


def test_float32_stays_float32():
    x, w, b = conv_case((4, 3, 13, 9), (5, 3, 3, 3), dtype=np.float32)
    conv_param = {"stride": 2, "pad": 1}
    out, cache = conv_forward_fast(x, w, b, conv_param)
    dout = np.random.default_rng(9).standard_normal(out.shape).astype(np.float32)
    grads = conv_backward_fast(dout, cache)
    assert [a.dtype for a in (out, *grads)] == [np.float32] * 4
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    out64, cache64 = conv_forward_fast(x64, w64, b64, conv_param)
    np.testing.assert_allclose(out, out64, rtol=1e-4, atol=1e-4)
    for g32, g64 in zip(grads, conv_backward_fast(dout.astype(np.float64), cache64), strict=True):
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-4)

    pooled, pool_cache = max_pool_forward_fast(out, pool_param(3, 3, 2))
    dx = max_pool_backward_fast(np.ones_like(pooled), pool_cache)
    assert pooled.dtype == np.float32 and dx.dtype == np.float32


def test_conv_backward_skips_dx_and_writes_into_given_arrays():
    x, w, b = conv_case((2, 3, 6, 6), (4, 3, 3, 3))
    out, cache = conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
    dout = np.random.default_rng(10).standard_normal(out.shape)
    _, dw, db = conv_backward_fast(dout, cache)
    flat = np.zeros(w.size + b.size)  # one gradient buffer, as a model's flat params are
    dw_view, db_view = flat[: w.size].reshape(w.shape), flat[w.size :]
    none, dw_out, db_out = conv_backward_fast(dout, cache, input_grad=False, out=(dw_view, db_view))
    assert none is None
    assert dw_out is dw_view and db_out is db_view
    assert np.array_equal(flat, np.concatenate([dw.ravel(), db]))


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "conv_param", "words"),
    [
        ((2, 3, 8), (4, 3, 3, 3), {"stride": 1, "pad": 1}, "(2, 3, 8)"),
        ((2, 3, 8, 8), (4, 2, 3, 3), {"stride": 1, "pad": 1}, "(4, 2, 3, 3)"),
        ((2, 3, 8, 8), (4, 3, 3, 3), {"stride": 2, "pad": 1}, "do not tile"),
        ((2, 3, 8, 8), (4, 3, 3, 3), {"stride": 1}, "pad"),
        ((2, 3, 4, 4), (4, 3, 7, 7), {"stride": 1, "pad": 1}, "exceeds"),
    ],
)
def test_conv_bad_input_is_one_clear_error(x_shape, w_shape, conv_param, words):
    x, w, b = conv_case(x_shape, w_shape)
    with pytest.raises(InvalidInput) as error:
        conv_forward_fast(x, w, b, conv_param)
    assert words in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("x_shape", "param", "words"),
    [
        ((3, 8, 8), pool_param(2, 2, 2), "(3, 8, 8)"),
        ((2, 3, 7, 8), pool_param(2, 2, 2), "do not tile"),
        ((2, 3, 8, 8), {"pool_height": 2, "stride": 2}, "pool_width"),
    ],
)
def test_max_pool_bad_input_is_one_clear_error(x_shape, param, words):
    with pytest.raises(InvalidInput) as error:
        max_pool_forward_fast(np.zeros(x_shape), param)
    assert words in str(error.value)


def test_backward_names_a_dout_of_the_wrong_shape():
    x, w, b = conv_case((2, 3, 6, 6), (4, 3, 3, 3))
    out, cache = conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
    with pytest.raises(InvalidInput, match=r"\(2, 4, 6, 5\).*\(2, 4, 6, 6\)"):
        conv_backward_fast(out[..., :5], cache)
    pooled, pool_cache = max_pool_forward_fast(out, pool_param(2, 2, 2))
    with pytest.raises(InvalidInput, match=r"\(2, 4, 3, 3\)"):
        max_pool_backward_fast(pooled[:1], pool_cache)


@pytest.mark.parametrize("tile_bytes", [1, 2000, 30_000])
def test_patch_tiles_equal_naive(monkeypatch, tile_bytes):
    # Tiles of one output row, of several rows of one image, and of several images
    # (im2col.patch_tiles), forward, dw and dx (dx as a product and by col2im), stride 1
    # and 2, pixel rows and tap columns: equal to the naive layers, as the single tile of
    # the other cases is.
    import distnet.im2col

    monkeypatch.setattr(distnet.im2col, "TILE_BYTES", tile_bytes)
    for x_shape, w_shape, stride, pad in [
        ((5, 6, 9, 7), (7, 6, 3, 3), 1, 1),
        ((3, 5, 9, 11), (3, 5, 3, 3), 2, 1),
        ((4, 6, 7, 7), (2, 6, 3, 3), 1, 2),
        ((4, 3, 9, 8), (5, 3, 3, 3), 1, 1),  # tap columns
        ((3, 3, 8, 9), (4, 3, 7, 7), 1, 3),
        ((3, 2, 9, 7), (3, 2, 3, 3), 2, 1),
    ]:
        x, w, b = conv_case(x_shape, w_shape, seed=21)
        conv_param = {"stride": stride, "pad": pad}
        out_naive, cache_naive = conv_forward_naive(x, w, b, conv_param)
        out_fast, cache_fast = conv_forward_fast(x, w, b, conv_param)
        assert rel_error(out_fast, out_naive) < 1e-9
        dout = np.random.default_rng(22).standard_normal(out_naive.shape)
        naive, fast = conv_backward_naive(dout, cache_naive), conv_backward_fast(dout, cache_fast)
        for got, want in zip(fast, naive, strict=True):
            assert rel_error(got, want) < 1e-9


@pytest.mark.parametrize("channels", [5, 2])  # pixel rows, tap columns
def test_patch_tiles_cover_the_patch_matrix_once(monkeypatch, channels):
    import distnet.im2col as im2col

    x = np.random.default_rng(23).standard_normal((3, channels, 6, 7))
    whole = im2col.patch_matrix(x, 3, 3, 1, 1, 1)
    if channels < 3:
        whole = whole.T  # compared by pixel
    line = 7 * 9 * channels * 8  # an output row's patches: 7 pixels, 9 C taps, float64
    for tile_bytes, count in ((1, 18), (2 * line, 9), (2 * 6 * line, 2)):
        monkeypatch.setattr(im2col, "TILE_BYTES", tile_bytes)
        got = np.full_like(whole, np.nan)
        tiles = 0
        for rows, _, tile in im2col.patch_tiles(x, 3, 3, 1, 1, 1):
            assert np.isnan(got[rows]).all()  # no pixel twice
            got[rows] = tile if channels > 3 else tile.T
            tiles += 1
        assert np.array_equal(got, whole)
        assert tiles == count  # single rows; 2 rows of an image; 2 images


def test_conv_backward_takes_a_strided_dout():
    # dout as a transposed view (as a caller may hand it): the gradients of its copy (to
    # rounding: numpy sums db in memory order)
    for x_shape, w_shape in [((2, 3, 6, 6), (4, 3, 3, 3)), ((2, 5, 6, 6), (6, 5, 3, 3))]:
        x, w, b = conv_case(x_shape, w_shape)
        out, cache = conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
        strided = np.random.default_rng(24).standard_normal(out.shape[::-1]).T
        for got, want in zip(
            conv_backward_fast(strided, cache),
            conv_backward_fast(np.ascontiguousarray(strided), cache),
            strict=True,
        ):
            assert rel_error(got, want) < 1e-12
