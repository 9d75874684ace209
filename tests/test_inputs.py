"""The input pipeline: the reference augmentation in one resampling, reproducible draws, caches."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from brainmri import inputs
from brainmri.config import CLASS_NAMES, load_profile

OFF = {
    "aug_horizontal_flip": False,
    "aug_rotation": 0.0,
    "aug_width_shift": 0.0,
    "aug_height_shift": 0.0,
    "aug_shear": 0.0,
    "aug_zoom": 0.0,
    "aug_fill_mode": "nearest",
}


def files_labels(root: Path, split: str) -> tuple[list[Path], list[int]]:
    files = sorted((root / split).glob("*/*.jpg"))
    return files, [CLASS_NAMES.index(f.parent.name) for f in files]


def smooth_image(size: int = 48) -> np.ndarray:
    """A smooth RGB test card: bilinear interpolation of it is well defined everywhere."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.stack(
        [np.sin(xx / 5) * 100 + 120, np.cos(yy / 7) * 80 + 120, (xx + 2 * yy) % 200], axis=-1
    )


def draw(aug: inputs.RandomAffine, n: int = 2000, size: int = 100) -> np.ndarray:
    return aug.transforms(n, size, size, tf.constant([aug.seed, 1], tf.int64)).numpy()


@pytest.mark.parametrize(
    "theta, tx, ty, shear, zx, zy",
    [
        (0, 0, 0, 0, 1, 1),
        (10, 0, 0, 0, 1, 1),
        (0, 3.5, -2, 0, 1, 1),
        (0, 0, 0, 8, 1, 1),
        (0, 0, 0, 0, 1.1, 0.9),
        (-7, 2, 4, 5, 0.95, 1.08),
    ],
)
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.filterwarnings("ignore:Please import `affine_transform`:DeprecationWarning")
def test_one_resampling_equals_the_reference_transform(theta, tx, ty, shear, zx, zy, flip):
    """The fused matrix reproduces ImageDataGenerator's apply_affine_transform (+ its flip)."""
    image = smooth_image()
    reference = tf.keras.preprocessing.image.apply_affine_transform(
        image, theta, tx, ty, shear, zx, zy, row_axis=0, col_axis=1, channel_axis=2,
        fill_mode="nearest", order=1,
    )  # fmt: skip
    if flip:
        reference = reference[:, ::-1]
    matrices = inputs.affine_matrices(
        **{
            name: tf.constant([float(value)])
            for name, value in dict(
                rotation=theta, shift_x=tx, shift_y=ty, shear=shear, zoom_x=zx, zoom_y=zy
            ).items()
        },
        flip=tf.constant([flip]),
        height=48.0,
        width=48.0,
    )
    ours = inputs.warp_affine(image[None], matrices.numpy(), fill_mode="nearest")[0]
    np.testing.assert_allclose(ours, reference, atol=0.01)


@pytest.mark.parametrize("fill_mode", ["nearest", "reflect", "wrap", "constant"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_opencv_resampling_equals_keras_affine_transform(fill_mode, channels):
    """RandomAffine (OpenCV, or Keras for wrap) maps and fills as keras' affine_transform."""
    rng = np.random.default_rng(channels)
    images = rng.uniform(0, 255, (5, 40, 56, channels)).astype(np.float32)
    aug = inputs.RandomAffine(rotation=40, width_shift=0.4, height_shift=0.4, shear=20, zoom=0.5,
                              horizontal_flip=True)  # fmt: skip
    matrices = aug.transforms(5, 40, 56, tf.constant([3, 4], tf.int64)).numpy()
    expected = keras.ops.image.affine_transform(
        images, matrices, interpolation="bilinear", fill_mode=fill_mode
    )
    ours = dataclasses.replace(aug, fill_mode=fill_mode)(images, tf.constant([3, 4], tf.int64))
    assert ours.shape == images.shape and ours.dtype == tf.float32
    np.testing.assert_allclose(ours.numpy(), np.asarray(expected), atol=0.01)
    if fill_mode != "wrap":
        direct = inputs.warp_affine(images, matrices, fill_mode=fill_mode)
        np.testing.assert_array_equal(direct, ours.numpy())
    else:  # OpenCV's wrap has another period than Keras' and the reference's: refused
        with pytest.raises(ValueError, match="fill_mode: expected one of"):
            inputs.warp_affine(images, matrices, fill_mode="wrap")


def test_draws_stay_within_the_ranges_and_flip_half():
    m = draw(inputs.RandomAffine(rotation=10.0, seed=5))
    angles = np.degrees(np.arctan2(m[:, 3], m[:, 0]))
    assert np.abs(angles).max() <= 10.0 + 1e-3 and np.abs(angles).max() > 9.5
    assert np.allclose(m[:, 0] ** 2 + m[:, 3] ** 2, 1.0, atol=1e-5)  # no zoom without zoom

    m = draw(inputs.RandomAffine(width_shift=0.1, height_shift=0.2, seed=5))
    assert np.allclose(m[:, [0, 4]], 1.0) and np.allclose(m[:, [1, 3]], 0.0)
    assert 9.5 < np.abs(m[:, 2]).max() <= 10.0 + 1e-4  # 0.1 of 100 px, along x
    assert 19.0 < np.abs(m[:, 5]).max() <= 20.0 + 1e-4  # 0.2 of 100 px, along y

    m = draw(inputs.RandomAffine(zoom=0.1, seed=5))
    assert m[:, [0, 4]].min() >= 0.9 - 1e-6 and m[:, [0, 4]].max() <= 1.1 + 1e-6
    assert np.corrcoef(m[:, 0], m[:, 4])[0, 1] < 0.1  # the two axes are drawn independently

    m = draw(inputs.RandomAffine(horizontal_flip=True, seed=5))
    assert set(np.round(m[:, 0], 6)) == {-1.0, 1.0}
    assert 0.45 < np.mean(m[:, 0] < 0) < 0.55
    flipped = m[m[:, 0] < 0][0]
    assert flipped[2] == pytest.approx(99.0)  # x reads 99 - x: a mirror about the centre

    shear = draw(inputs.RandomAffine(shear=math.degrees(math.atan(0.1)), seed=5))
    assert np.allclose(shear[:, 3], 0.0) and np.abs(shear[:, 1]).max() <= 0.1


def test_augmentation_changes_training_batches_only(phantom_set):
    files, labels = files_labels(phantom_set, "Training")
    train = load_profile("smoke")["train"]
    aug = inputs.augmentation(train, 0)
    assert aug.enabled and aug.rotation == train["aug_rotation"]
    plain = next(iter(inputs.make_dataset(files, labels, 48, 64)))[0].numpy()
    augmented = next(iter(inputs.make_dataset(files, labels, 48, 64, augment=aug)))[0].numpy()
    assert plain.dtype == augmented.dtype == np.float32
    assert plain.shape == augmented.shape
    assert np.abs(plain - augmented).mean() > 1.0
    assert augmented.min() >= 0 and augmented.max() <= 255.0 + 1e-3
    off = inputs.augmentation({**train, **OFF}, 0)
    assert not off.enabled
    unchanged = next(iter(inputs.make_dataset(files, labels, 48, 64, augment=off)))[0].numpy()
    np.testing.assert_array_equal(unchanged, plain)


def test_augmented_epochs_differ_and_repeat_with_the_seed(phantom_set):
    files, labels = files_labels(phantom_set, "Training")
    train = {**load_profile("smoke")["train"], **OFF, "aug_rotation": 10.0, "aug_zoom": 0.1}

    def two_epochs(seed: int) -> list[np.ndarray]:
        ds = inputs.make_dataset(files, labels, 48, 16, augment=inputs.augmentation(train, seed))
        return [np.concatenate([x.numpy() for x, _ in ds]) for _ in range(2)]

    first, second = two_epochs(3)
    assert np.abs(first - second).mean() > 0.5  # each epoch draws new transforms
    again = two_epochs(3)
    np.testing.assert_array_equal(again[0], first)
    np.testing.assert_array_equal(again[1], second)
    other = two_epochs(4)[0]
    assert np.abs(other - first).mean() > 0.5


def test_disk_cache_is_keyed_and_survives_a_stale_lock(tmp_path, phantom_set):
    files, labels = files_labels(phantom_set, "Testing")
    key = inputs.cache_key([str(f) for f in files], 48)
    (tmp_path / f"images-{key}.lockfile").write_text("stale")

    def read() -> np.ndarray:
        ds = inputs.make_dataset(files, labels, 48, 8, cache="disk", cache_dir=tmp_path)
        return np.concatenate([b[0].numpy() for b in ds])

    first, again = read(), read()
    np.testing.assert_array_equal(first, again)
    assert first.dtype == np.float32
    assert any(p.name.startswith(f"images-{key}") for p in tmp_path.iterdir())
    assert inputs.cache_key([str(f) for f in files], 64) != key


def test_masks_ride_with_their_images_through_the_augmentation(tmp_path):
    import cv2

    size, files, masks = 32, [], []
    rng = np.random.default_rng(0)
    for i in range(6):  # an image that *is* its mask: white square on black, PNG (lossless)
        square = np.zeros((size, size), np.uint8)
        r, c = rng.integers(2, 18, 2)
        square[r : r + 12, c : c + 12] = 255
        cv2.imwrite(str(tmp_path / f"img{i}.png"), square)
        files.append(tmp_path / f"img{i}.png")
        masks.append(str(tmp_path / f"img{i}.png") if i % 3 else "")  # every third: no mask
    aug = inputs.RandomAffine(
        rotation=20, width_shift=0.2, shear=10, zoom=0.2, horizontal_flip=True
    )
    ds = inputs.make_dataset(files, [0] * 6, size, 6, augment=aug, masks=masks)
    images, labels, lesions = next(iter(ds))
    assert images.shape == (6, size, size, 3) and lesions.shape == (6, size, size, 1)
    assert labels.shape == (6, len(CLASS_NAMES))
    moved = images.numpy()[..., 0] / 255.0
    for i in range(6):
        if masks[i]:  # the same transform, to float rounding
            np.testing.assert_allclose(lesions[i, ..., 0], moved[i], atol=1e-4)
            assert lesions[i].numpy().max() == pytest.approx(1.0)
        else:
            assert not lesions[i].numpy().any()
    assert not np.allclose(moved[1], cv2.imread(str(files[1]), cv2.IMREAD_GRAYSCALE) / 255.0)
    with pytest.raises(ValueError, match="one entry per file"):
        inputs.make_dataset(files, [0] * 6, size, 6, masks=masks[:2])


def test_cropped_masks_stay_on_their_images(tmp_path):
    """crop=True cuts image and mask by the same square, cached apart from the uncropped."""
    import cv2

    from brainmri import data

    image = np.zeros((64, 64), np.uint8)
    image[10:50, 14:46] = 100  # the head: above the crop threshold, below a mask's 127
    image[20:30, 20:34] = 255  # the lesion: the same PNG serves as its mask
    cv2.imwrite(str(tmp_path / "scan.png"), image)
    side = data.brain_box(image)[2]  # the crop's side: no resize, so the pixels compare exactly
    files, masks = [tmp_path / "scan.png"], [str(tmp_path / "scan.png")]
    images, _, lesions = next(
        iter(inputs.make_dataset(files, [0], side, 1, masks=masks, crop=True, cache="none"))
    )
    assert side < 64 and images.shape == (1, side, side, 3)
    np.testing.assert_array_equal(lesions[0, ..., 0].numpy() == 1.0, images[0, ..., 0] == 255)
    plain = next(iter(inputs.make_dataset(files, None, side, 1, cache="none")))
    assert images[0, ..., 0].numpy().mean() > plain[0, ..., 0].numpy().mean()
    assert np.array_equal(inputs.load_batch(files, side, crop=True)[0], images[0].numpy())
    # a disk cache of the uncropped images is never served as the cropped ones
    cached = {"cache": "disk", "cache_dir": tmp_path / "cache"}
    for crop in (False, True):
        # read to the end: tf.data writes a disk cache only once an iterator has seen it all
        # (after next() alone, whether it exists depends on how far prefetching had read)
        (batch,) = list(inputs.make_dataset(files, None, side, 1, crop=crop, **cached))
        assert np.array_equal(batch[0].numpy(), (images if crop else plain)[0].numpy())
    assert len(list((tmp_path / "cache").glob("*.index"))) == 2
