"""FlatParams: named views into one buffer that stay views through every kind of update."""

import copy
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distnet import optim
from distnet.models import FullyConnectedNet
from distnet.params import FlatParams

SHAPES = {"W1": (3, 4), "b1": (4,), "W2": (4, 2), "b2": (2,)}


def shares(view, flat):
    return np.shares_memory(view, flat.vector)


@pytest.fixture
def flat():
    p = FlatParams(SHAPES, np.float32)
    p.set_vector(np.arange(p.vector.size, dtype=np.float32))
    return p


def test_layout_is_contiguous_in_insertion_order(flat):
    assert list(flat) == ["W1", "b1", "W2", "b2"]
    assert [tuple(s) for s in flat.layout] == [
        ("W1", (3, 4), 0, 12),
        ("b1", (4,), 12, 4),
        ("W2", (4, 2), 16, 8),
        ("b2", (2,), 24, 2),
    ]
    assert flat.vector.shape == (26,) and flat.vector.dtype == np.float32
    for name, shape, offset, size in flat.layout:
        assert flat[name].shape == shape and shares(flat[name], flat)
        assert np.array_equal(flat[name].ravel(), np.arange(offset, offset + size))
    assert FlatParams(SHAPES, np.float64).vector.dtype == np.float64
    assert np.all(FlatParams(SHAPES).vector == 0)


def test_assignment_copies_into_the_view(flat):
    view = flat["W1"]
    flat["W1"] = np.full((3, 4), 7.0)  # float64 in, stored as float32
    assert flat["W1"] is view and np.all(view == 7) and view.dtype == np.float32
    assert np.all(flat.vector[:12] == 7) and flat.vector[12] == 12
    flat["b1"] += 1  # augmented assignment through the mapping
    assert np.array_equal(flat.vector[12:16], [13, 14, 15, 16])


def test_bad_assignments_name_the_parameter(flat):
    with pytest.raises(ValueError, match=r"'W2' has shape \(4, 2\), got \(2, 4\)"):
        flat["W2"] = np.zeros((2, 4))
    with pytest.raises(KeyError, match="W3"):
        flat["W3"] = np.zeros(2)
    with pytest.raises(TypeError, match="fixed"):
        del flat["b1"]
    assert len(flat) == 4


def test_vector_round_trip_and_checks(flat):
    v = np.linspace(-1, 1, 26, dtype=np.float32)
    flat.set_vector(v)
    assert np.array_equal(flat.vector, v) and flat.vector is not v
    assert np.array_equal(np.concatenate([flat[n].ravel() for n in flat]), v)
    with pytest.raises(ValueError, match="shape"):
        flat.set_vector(np.zeros(25, np.float32))
    with pytest.raises(ValueError, match="dtype"):
        flat.set_vector(np.zeros(26, np.float64))


def test_copies_are_independent_and_wrapping_does_not_copy(flat):
    clone, zeros = flat.copy(), flat.zeros_like()
    assert clone.layout == zeros.layout == flat.layout
    clone["W1"][0, 0] = 100
    assert flat["W1"][0, 0] == 0 and np.all(zeros.vector == 0)
    external = np.arange(26, dtype=np.float32) * 2
    external.flags.writeable = False  # as an array read zero-copy from Ray's object store
    wrapped = flat.with_vector(external)
    assert wrapped.vector is external and wrapped["b2"][1] == 50


def test_pickling_and_deepcopy_keep_views(flat):
    for clone in (pickle.loads(pickle.dumps(flat)), copy.deepcopy(flat)):
        assert np.array_equal(clone.vector, flat.vector)
        assert all(shares(clone[name], clone) for name in clone)
        clone["b2"] = [5, 6]
        assert clone.vector[-1] == 6 and flat.vector[-1] == 25


@pytest.mark.parametrize("rule", sorted(optim.RULES))
def test_views_stay_views_after_updates(rule):
    model = FullyConnectedNet([5], input_dim=4, num_classes=3, use_batchnorm=True, init_seed=0)
    vector = model.params.vector
    X, y = np.random.default_rng(0).standard_normal((6, 4)), np.array([0, 1, 2, 0, 1, 2])
    configs = {name: {} for name in model.params}
    for _ in range(3):
        _, grads = model.loss(X, y)
        for name, w in model.params.items():
            next_w, configs[name] = optim.RULES[rule](w, grads[name], configs[name])
            model.params[name] = next_w  # assignment-style update
    assert model.params.vector is vector
    assert all(shares(model.params[name], model.params) for name in model.params)
    model.params["W1"] = np.ones((4, 5))
    assert np.all(vector[:20] == 1)


def test_gradient_vector_has_the_params_layout():
    model = FullyConnectedNet([6, 5], input_dim=4, num_classes=3, use_batchnorm=True, init_seed=1)
    rng = np.random.default_rng(1)
    _, grads = model.loss(rng.standard_normal((8, 4)), rng.integers(3, size=8))
    assert isinstance(grads, FlatParams) and grads.layout == model.params.layout
    for name, _, offset, size in grads.layout:
        assert np.array_equal(grads.vector[offset : offset + size], grads[name].ravel())
        assert shares(grads[name], grads)


@given(
    st.lists(st.lists(st.integers(0, 4), max_size=3), min_size=1, max_size=6),
    st.sampled_from([np.float32, np.float64]),
)
def test_views_partition_the_vector(shapes, dtype):
    flat = FlatParams({f"p{i}": tuple(s) for i, s in enumerate(shapes)}, dtype)
    v = np.arange(flat.vector.size, dtype=dtype)
    flat.set_vector(v)
    pieces = [flat[name].ravel() for name in flat]
    assert np.array_equal(np.concatenate(pieces) if pieces else v, v)
    assert flat.vector.size == sum(int(np.prod(s)) for s in shapes)
