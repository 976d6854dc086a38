"""Gradient codecs (distnet.distributed.compression) against independent numpy references."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distnet.distributed.compression import Encoder, Sparse, decode, nbytes, topk_count


def reference_topk(acc: np.ndarray, k: int) -> set[int]:
    """Indices of the k largest magnitudes, by a full sort (no ties in random data)."""
    return {int(i) for i in np.argsort(-np.abs(acc), kind="stable")[:k]}


def test_none_sends_the_slice_itself():
    grad = np.arange(5, dtype=np.float32)
    payload = Encoder("none").encode(0, grad)
    assert payload is grad and decode(payload, np.float32) is grad
    assert nbytes(payload) == 20


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fp16_round_trips_within_half_precision(dtype):
    grad = np.random.default_rng(0).normal(0, 1e-2, 1000).astype(dtype)
    payload = Encoder("fp16").encode(0, grad)
    assert payload.dtype == np.float16 and nbytes(payload) == 2 * grad.size
    dense = decode(payload, dtype)
    assert dense.dtype == dtype
    # float16 keeps 11 significant bits: relative error at most 2**-11 for normal numbers
    np.testing.assert_allclose(dense, grad, rtol=2.0**-11, atol=6e-8)
    assert not np.array_equal(dense, grad)  # it really was rounded


@pytest.mark.parametrize(
    "size,ratio,k", [(1000, 0.01, 10), (1001, 0.01, 11), (7, 0.5, 4), (5, 1e-9, 1), (3, 1.0, 3)]
)
def test_topk_count_is_the_ceiling_and_at_least_one(size, ratio, k):
    assert topk_count(size, ratio) == k


def test_topk_sends_exactly_the_k_largest_magnitudes():
    grad = np.random.default_rng(1).normal(size=500).astype(np.float32)
    payload = Encoder("topk", ratio=0.03).encode(0, grad)
    assert isinstance(payload, Sparse)
    assert payload.indices.dtype == np.int32 and payload.values.dtype == np.float32
    assert set(payload.indices.tolist()) == reference_topk(grad, 15)
    np.testing.assert_array_equal(payload.values, grad[payload.indices])
    assert nbytes(payload) == 15 * (4 + 4)
    dense = decode(payload, np.float32)
    kept = np.zeros(500, bool)
    kept[payload.indices] = True
    np.testing.assert_array_equal(dense[kept], grad[kept])
    assert not dense[~kept].any()


def test_error_feedback_matches_a_reference_and_loses_nothing():
    rng = np.random.default_rng(2)
    encoder = Encoder("topk", ratio=0.1)
    residual = np.zeros(50)  # the reference, in float64
    total_grad, total_sent = np.zeros(50), np.zeros(50)
    for _ in range(6):
        grad = rng.normal(size=50).astype(np.float32)
        acc = residual + grad
        expected = reference_topk(acc, 5)
        payload = encoder.encode(0, grad)
        assert set(payload.indices.tolist()) == expected
        sent = decode(payload, np.float64)
        np.testing.assert_allclose(sent[sorted(expected)], acc[sorted(expected)], rtol=1e-6)
        residual = acc - sent
        total_grad += grad
        total_sent += sent
        np.testing.assert_allclose(encoder.residuals[0], residual, rtol=1e-5, atol=1e-6)
    # what was not sent yet is exactly what is still held back
    np.testing.assert_allclose(total_sent + encoder.residuals[0], total_grad, atol=1e-5)


def test_each_slice_has_its_own_residual():
    encoder = Encoder("topk", ratio=0.5)
    encoder.encode(0, np.array([1.0, 2.0], np.float32))
    encoder.encode(1, np.array([3.0, -5.0], np.float32))
    np.testing.assert_array_equal(encoder.residuals[0], [1.0, 0.0])
    np.testing.assert_array_equal(encoder.residuals[1], [3.0, 0.0])
    # slice 0's held-back 1.0 now wins against a fresh 0.5
    payload = encoder.encode(0, np.array([1.0, 0.5], np.float32))
    assert payload.indices.tolist() == [0] and payload.values.tolist() == [2.0]


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 300),
    ratio=st.floats(1e-3, 1.0),
    steps=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_topk_conserves_the_gradient_sum(size, ratio, steps, seed):
    rng = np.random.default_rng(seed)
    encoder = Encoder("topk", ratio=ratio)
    total_grad, total_sent = np.zeros(size), np.zeros(size)
    for _ in range(steps):
        grad = rng.normal(size=size).astype(np.float32)
        payload = encoder.encode(0, grad)
        assert payload.indices.size == min(size, max(1, math.ceil(ratio * size)))
        assert np.all(np.diff(payload.indices) > 0)  # distinct, ascending
        total_grad += grad
        total_sent += decode(payload, np.float64)
    np.testing.assert_allclose(total_sent + encoder.residuals[0], total_grad, atol=1e-4)


def test_unknown_codec_is_refused():
    with pytest.raises(ValueError, match="zip"):
        Encoder("zip")
