"""tf.data input pipelines: decode and resize once, cache, shuffle, augment, batch, prefetch."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from brainmri.config import CLASS_NAMES
from brainmri.data.images import load_image


def augmentation(params: Mapping[str, Any], seed: int) -> keras.Sequential:
    """The reference augmentation as Keras preprocessing layers (training batches only).

    Args:
        params: the train parameters "aug_horizontal_flip", "aug_rotation" (degrees),
            "aug_width_shift", "aug_height_shift" (fractions), "aug_shear" (degrees, as
            ImageDataGenerator's shear_range), "aug_zoom" and "aug_fill_mode".
        seed: the first of the seeds the random layers take, one each.

    Returns:
        A Sequential of the enabled layers (empty when everything is off).
    """
    fill = params["aug_fill_mode"]
    seeds = iter(range(seed, seed + 5))  # one seed per layer, so their draws are independent
    steps: list[keras.layers.Layer] = []
    if params["aug_horizontal_flip"]:
        steps.append(keras.layers.RandomFlip("horizontal", seed=next(seeds)))
    if params["aug_rotation"] > 0:
        rotation = params["aug_rotation"] / 360.0  # a fraction of a full turn
        steps.append(keras.layers.RandomRotation(rotation, fill_mode=fill, seed=next(seeds)))
    if params["aug_width_shift"] > 0 or params["aug_height_shift"] > 0:
        steps.append(
            keras.layers.RandomTranslation(
                params["aug_height_shift"],
                params["aug_width_shift"],
                fill_mode=fill,
                seed=next(seeds),
            )
        )
    if params["aug_shear"] > 0:
        # ImageDataGenerator's shear_range (the reference) is an angle in degrees; RandomShear
        # takes the shear factor, which is the tangent of that angle.
        factor = math.tan(math.radians(params["aug_shear"]))
        steps.append(
            keras.layers.RandomShear(
                x_factor=factor, y_factor=factor, fill_mode=fill, seed=next(seeds)
            )
        )
    if params["aug_zoom"] > 0:
        steps.append(keras.layers.RandomZoom(params["aug_zoom"], fill_mode=fill, seed=next(seeds)))
    return keras.Sequential(steps, name="augmentation")


def _decode_path(path: bytes, size: int) -> np.ndarray:
    return load_image(Path(path.decode()), size).astype(np.float32)


def cache_key(paths: Sequence[str], image_size: int, tag: str = "") -> str:
    """Key of a decoded-image cache: the files, the image size and a tag (the manifest hash)."""
    digest = hashlib.sha256("\n".join(paths).encode() + f"|{image_size}|{tag}".encode())
    return digest.hexdigest()[:16]


def make_dataset(
    files: Sequence[str | Path],
    labels: Sequence[int] | None,
    image_size: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    cache: str = "memory",
    cache_dir: Path | None = None,
    cache_tag: str = "",
    augment: keras.Sequential | None = None,
) -> tf.data.Dataset:
    """Batches of (float 0-255 images, one-hot labels), or images alone when labels is None.

    A disk cache is keyed by the files, the size and `cache_tag` (pass the manifest hash, so
    changed image contents under the same paths are decoded again).

    Args:
        files: image paths, decoded by ``data.load_image`` (RGB, resized to image_size).
        labels: class indices, one per file, or None for images alone.
        image_size: the side of the square images.
        batch_size: images per batch.
        shuffle: reshuffle the images every epoch (after the cache).
        seed: the shuffle's seed.
        cache: 'memory', 'disk' (under cache_dir) or 'none'.
        cache_dir: the folder of a disk cache.
        cache_tag: part of the disk cache's key.
        augment: layers applied to each training batch (see :func:`augmentation`).

    Returns:
        A prefetched ``tf.data.Dataset`` in file order unless shuffled.
    """
    files = [str(f) for f in files]
    ds = tf.data.Dataset.from_tensor_slices(files)

    def decode(path):
        image = tf.numpy_function(_decode_path, [path, image_size], tf.float32, stateful=False)
        image.set_shape((image_size, image_size, 3))
        return image

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache == "memory":
        ds = ds.cache()
    elif cache == "disk":
        if cache_dir is None:
            raise ValueError("cache='disk' needs a cache_dir")
        cache_dir.mkdir(parents=True, exist_ok=True)
        stem = cache_dir / f"images-{cache_key(files, image_size, cache_tag)}"
        # A run killed while filling the cache leaves a lock file that would block the next run.
        for stale in cache_dir.glob(f"{stem.name}*.lockfile"):
            stale.unlink()
        ds = ds.cache(str(stem))
    if labels is not None:
        onehot = tf.one_hot(np.asarray(labels, dtype=np.int32), len(CLASS_NAMES))
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(onehot)))
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None and len(augment.layers) > 0:
        if labels is None:
            ds = ds.map(lambda x: augment(x, training=True), num_parallel_calls=tf.data.AUTOTUNE)
        else:
            ds = ds.map(
                lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
            )
    return ds.prefetch(tf.data.AUTOTUNE)


def load_batch(files: Sequence[str | Path], image_size: int) -> np.ndarray:
    """Decode a few files into one float32 0-255 array (for explanations and galleries).

    Args:
        files: image paths.
        image_size: the side of the square images.

    Returns:
        An array (len(files), image_size, image_size, 3).
    """
    return np.stack([load_image(Path(f), image_size).astype(np.float32) for f in files])
