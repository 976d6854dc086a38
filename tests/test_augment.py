"""Augmentation: flips and crops checked pixel by pixel against independent references."""

import numpy as np
import pytest

from distnet.data.augment import AugmentError, augment, random_crop, random_flip
from distnet.errors import DistnetError


def _images(batch, seed=0):
    # Random pixels: no image equals its mirror or a shifted copy of itself.
    return np.random.default_rng(seed).integers(0, 256, (batch, 3072), dtype=np.uint8)


def _flip_reference(image):
    """Mirror one CIFAR row (R, G, B planes of 32x32, row-major) with plain index arithmetic."""
    out = np.empty_like(image)
    for c in range(3):
        for row in range(32):
            for col in range(32):
                out[c * 1024 + row * 32 + col] = image[c * 1024 + row * 32 + (31 - col)]
    return out


def _crop_reference(image, padding, dy, dx):
    """The 32x32 window at (dy, dx) of the zero-padded image, one pixel at a time."""
    out = np.zeros_like(image)
    for c in range(3):
        for row in range(32):
            for col in range(32):
                src_row, src_col = row + dy - padding, col + dx - padding
                if 0 <= src_row < 32 and 0 <= src_col < 32:
                    out[c * 1024 + row * 32 + col] = image[c * 1024 + src_row * 32 + src_col]
    return out


def _crop_candidates(image, padding):
    """Every possible crop of one image, by np.pad and slicing: {(dy, dx): (3072,)}."""
    padded = np.pad(image.reshape(3, 32, 32), ((0, 0), (padding, padding), (padding, padding)))
    side = 2 * padding + 1
    return {
        (dy, dx): padded[:, dy : dy + 32, dx : dx + 32].reshape(3072)
        for dy in range(side)
        for dx in range(side)
    }


def test_flip_mirrors_some_images_and_keeps_the_others():
    images = _images(40)
    out = random_flip(images, np.random.default_rng(1))
    flipped = []
    for before, after in zip(images, out, strict=True):
        mirror = _flip_reference(before)
        assert np.array_equal(after, before) or np.array_equal(after, mirror)
        flipped.append(np.array_equal(after, mirror))
    assert 0 < sum(flipped) < len(flipped)


def test_flip_probability_is_one_half():
    images = _images(2000)
    out = random_flip(images, np.random.default_rng(2))
    # Pixel 0 of a flipped image is old pixel 31 (distinct for most random images).
    distinct = images[:, 0] != images[:, 31]
    rate = np.mean(out[distinct, 0] == images[distinct, 31])
    assert 0.45 < rate < 0.55


@pytest.mark.parametrize("padding", [1, 2, 4])
def test_crop_is_a_window_of_the_zero_padded_image(padding):
    images = _images(60, seed=padding)
    out = random_crop(images, np.random.default_rng(3), padding)
    seen = set()
    for before, after in zip(images, out, strict=True):
        matches = [
            o
            for o, crop in _crop_candidates(before, padding).items()
            if np.array_equal(crop, after)
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 1  # offsets vary from image to image
    assert max(max(o) for o in seen) <= 2 * padding


def test_crop_matches_pixel_reference_at_every_offset_for_small_padding():
    padding = 1
    images = _images(120, seed=7)
    out = random_crop(images, np.random.default_rng(4), padding)
    seen = set()
    for before, after in zip(images, out, strict=True):
        for dy in range(3):
            for dx in range(3):
                if np.array_equal(after, _crop_reference(before, padding, dy, dx)):
                    seen.add((dy, dx))
    assert seen == {(dy, dx) for dy in range(3) for dx in range(3)}


def test_crop_pads_with_zeros():
    padding = 4
    images = np.full((200, 3072), 255, dtype=np.uint8)
    out = random_crop(images, np.random.default_rng(5), padding).reshape(-1, 3, 32, 32)
    assert set(np.unique(out)) == {0, 255}
    for image in out:
        rows = np.flatnonzero(image[0].any(axis=1))
        cols = np.flatnonzero(image[0].any(axis=0))
        # The kept pixels form one rectangle, at least 32 - padding on each side, that
        # touches a horizontal and a vertical border; everything outside it is zero.
        assert len(rows) >= 32 - padding and len(cols) >= 32 - padding
        assert rows[0] == 0 or rows[-1] == 31
        assert cols[0] == 0 or cols[-1] == 31
        inside = np.zeros((32, 32), bool)
        inside[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
        assert np.all(image[:, inside] == 255) and np.all(image[:, ~inside] == 0)
    assert np.any(out == 0)


def test_zero_padding_crop_is_the_identity():
    images = _images(5)
    assert np.array_equal(random_crop(images, np.random.default_rng(0), 0), images)


def test_augment_is_crop_then_flip_with_one_generator():
    images = _images(32)
    expected_rng = np.random.default_rng(9)
    expected = random_flip(random_crop(images, expected_rng, 3), expected_rng)
    assert np.array_equal(augment(images, np.random.default_rng(9), True, 3), expected)


@pytest.mark.parametrize("flip, padding", [(True, 0), (False, 4), (True, 4)])
def test_determinism(flip, padding):
    images = _images(64)
    first = augment(images, np.random.default_rng([7, 1, 3, 0]), flip, padding)
    again = augment(images, np.random.default_rng([7, 1, 3, 0]), flip, padding)
    other = augment(images, np.random.default_rng([7, 1, 4, 0]), flip, padding)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("flip, padding", [(False, 0), (True, 0), (False, 4), (True, 4)])
def test_read_only_memory_map_is_left_alone(tmp_path, flip, padding):
    images = _images(16)
    path = tmp_path / "pixels.u8"
    images.tofile(path)
    mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=images.shape)
    out = augment(mapped, np.random.default_rng(0), flip, padding)
    assert np.array_equal(np.asarray(mapped), images)
    assert not np.shares_memory(out, mapped)
    assert out.dtype == np.uint8 and out.shape == (16, 3072) and out.flags.c_contiguous
    assert out.flags.writeable


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, rng: random_flip(x, rng),
        lambda x, rng: random_crop(x, rng, 2),
        lambda x, rng: augment(x, rng, True, 2),
    ],
)
def test_empty_batch(fn):
    out = fn(np.zeros((0, 3072), np.uint8), np.random.default_rng(0))
    assert out.shape == (0, 3072) and out.dtype == np.uint8


@pytest.mark.parametrize(
    "images, padding, message",
    [
        (np.zeros((2, 3072), np.float32), 2, "uint8 numpy array, got float32"),
        ([[0] * 3072], 2, "uint8 numpy array, got list"),
        (
            np.zeros((2, 3, 32, 31), np.uint8),
            2,
            r"shape \(B, 3072\) or \(B, 3, 32, 32\), got \(2, 3, 32, 31\)",
        ),
        (np.zeros((2, 32, 32, 3), np.uint8), 2, r"got \(2, 32, 32, 3\)"),  # channels last
        (np.zeros((2, 1024), np.uint8), 2, r"shape \(B, 3072\)"),
        (np.zeros(3072, np.uint8), 2, r"got \(3072,\)"),
        (np.zeros((2, 3072), np.uint8), -1, r"crop padding must be in \[0, 31\], got -1"),
        (np.zeros((2, 3072), np.uint8), 32, r"crop padding must be in \[0, 31\], got 32"),
        (np.zeros((2, 3072), np.uint8), 2.5, "crop padding must be an integer"),
        (np.zeros((2, 3072), np.uint8), True, "crop padding must be an integer"),
    ],
)
def test_bad_input_is_named(images, padding, message):
    with pytest.raises(AugmentError, match=message) as info:
        augment(images, np.random.default_rng(0), True, padding)
    assert isinstance(info.value, DistnetError)


# --- the (B, 3, 32, 32) layout ---------------------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, rng: random_flip(x, rng),
        lambda x, rng: random_crop(x, rng, 3),
        lambda x, rng: augment(x, rng, True, 3),
        lambda x, rng: augment(x, rng, False, 0),
    ],
)
def test_images_layout_is_augmented_as_the_rows_are(fn):
    rows = _images(48, seed=11)
    images = rows.reshape(-1, 3, 32, 32)  # the reader's "nchw" layout: the same bytes
    out = fn(images, np.random.default_rng(12))
    assert out.shape == (48, 3, 32, 32) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.array_equal(out.reshape(48, -1), fn(rows, np.random.default_rng(12)))
    assert not np.shares_memory(out, images)


def test_flip_of_images_mirrors_the_width_axis():
    images = _images(40, seed=13).reshape(-1, 3, 32, 32)
    out = random_flip(images, np.random.default_rng(14))
    pairs = list(zip(images, out, strict=True))
    mirrored = [np.array_equal(after, before[:, :, ::-1]) for before, after in pairs]
    kept = [np.array_equal(after, before) for before, after in pairs]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True)) and 0 < sum(mirrored) < len(out)


def test_read_only_memory_mapped_images_are_left_alone(tmp_path):
    images = _images(16).reshape(-1, 3, 32, 32)
    path = tmp_path / "pixels.u8"
    images.tofile(path)
    mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=images.shape)
    out = augment(mapped, np.random.default_rng(0), True, 4)
    assert np.array_equal(np.asarray(mapped), images) and out.shape == images.shape
    assert not np.shares_memory(out, mapped) and out.flags.writeable
