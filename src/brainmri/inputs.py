"""tf.data input pipelines: decode and resize once, cache, shuffle, augment, batch, prefetch."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np
import tensorflow as tf

from brainmri.config import CLASS_NAMES
from brainmri.data.images import BRAIN_THRESHOLD, crop_like_image, load_image, read_grey


def affine_matrices(
    *, rotation, shift_x, shift_y, shear, zoom_x, zoom_y, flip, height, width
) -> tf.Tensor:
    """ImageDataGenerator's affine transforms as the matrices of ``affine_transform``.

    The reference's ``apply_affine_transform(x, theta, tx, ty, shear, zx, zy)`` composes
    rotation . shift . shear . zoom in (x, y) = (column, row) coordinates about the image centre
    and interpolates once; ``horizontal_flip`` then mirrors the result. This builds the same
    mapping in the layout ``keras.ops.image.affine_transform`` takes, so one resampling does it
    all (a test checks it against the reference function). Every argument but the sizes is a
    (n,) tensor.

    Args:
        rotation: degrees (the reference's ``theta``).
        shift_x: pixels along x, the columns (``tx``).
        shift_y: pixels along y, the rows (``ty``).
        shear: degrees.
        zoom_x: zoom factor along x (``zx``; above 1 shows more of the image).
        zoom_y: zoom factor along y (``zy``).
        flip: booleans, mirror the output left-right.
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        (n, 8) rows ``[a0, a1, a2, b0, b1, b2, 0, 0]``: an output pixel (x, y) is read from
        input (a0 x + a1 y + a2, b0 x + b1 y + b2).
    """
    theta = rotation * (math.pi / 180.0)
    phi = shear * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    # [[cos, -sin], [sin, cos]] . [[1, -sin(phi)], [0, cos(phi)]] . diag(zoom_x, zoom_y)
    a0, a1 = cos * zoom_x, -tf.sin(theta + phi) * zoom_y
    b0, b1 = sin * zoom_x, tf.cos(theta + phi) * zoom_y
    # the shift sits between rotation and shear, so it is rotated too
    tx = cos * shift_x - sin * shift_y
    ty = sin * shift_x + cos * shift_y
    # a mirrored output pixel x reads what x' = -x (about the centre) would have read
    mirror = tf.where(flip, -1.0, 1.0)
    a0, b0 = a0 * mirror, b0 * mirror
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    # input = A (output - centre) + centre + shift
    a2 = cx + tx - (a0 * cx + a1 * cy)
    b2 = cy + ty - (b0 * cx + b1 * cy)
    zero = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)


# fill modes of keras.ops.image.affine_transform as OpenCV border modes: nearest (aaa|abcd|ddd),
# reflect (cba|abcd|dcb), constant (000|abcd|000). Not "wrap": Keras/TensorFlow, like the
# reference's scipy.ndimage "wrap", repeat with a period of one pixel less than the side (the last
# and first pixels overlap), which OpenCV's BORDER_WRAP does not do; RandomAffine keeps Keras' op
# for it.
_BORDERS = {
    "nearest": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT,
    "constant": cv2.BORDER_CONSTANT,
}


def warp_affine(images: np.ndarray, matrices: np.ndarray, *, fill_mode: str = "nearest"):
    """Resample each image of a batch with its own matrix of :func:`affine_matrices`, bilinearly.

    The same mapping as ``keras.ops.image.affine_transform(images, matrices, "bilinear",
    fill_mode)`` (within 0.01 of a grey level; a test checks both against the reference's
    ``apply_affine_transform``), done by ``cv2.warpAffine``: about 5x faster on two cores, which
    makes the resampling no longer the input pipeline's bottleneck (docs/benchmarks.md, "Speed against the
    reference pipeline"). OpenCV releases the GIL, so tf.data's parallel calls overlap.

    Args:
        images: (n, height, width, channels) float32, at most 4 channels (image + mask).
        matrices: (n, 8) rows ``[a0, a1, a2, b0, b1, b2, 0, 0]``; an output pixel (x, y) reads
            input (a0 x + a1 y + a2, b0 x + b1 y + b2).
        fill_mode: how pixels from outside the image are filled: nearest, reflect or constant
            (zeros).

    Returns:
        The warped batch, float32, the shape of ``images``.
    """
    if fill_mode not in _BORDERS:
        raise ValueError(f"fill_mode: expected one of {sorted(_BORDERS)}, got {fill_mode!r}")
    images = np.asarray(images, np.float32)
    out = np.empty_like(images)
    height, width = images.shape[1:3]
    for i, (image, matrix) in enumerate(zip(images, np.asarray(matrices, np.float64), strict=True)):
        warped = cv2.warpAffine(
            image,
            matrix[:6].reshape(2, 3),
            (width, height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=_BORDERS[fill_mode],
            borderValue=0,
        )
        out[i] = warped.reshape(out[i].shape)  # OpenCV drops a single channel's axis
    return out


@dataclasses.dataclass(frozen=True)
class RandomAffine:
    """The reference augmentation, drawn per image and applied as one affine resampling.

    ImageDataGenerator (the reference) draws a rotation, shifts, a shear, a zoom per axis and a
    flip for each image, composes them into one matrix and interpolates once. Keras' preprocessing
    layers (RandomRotation, RandomTranslation, RandomShear, RandomZoom) would resample the image
    four times, blurring it four times and costing four times the work; this composes the same
    transforms and resamples once, with :func:`warp_affine` (docs/benchmarks.md, "Speed against the
    reference pipeline").

    Draws are stateless, from ``(seed, a per-batch number)``: a run is reproducible from its seed,
    whatever the number of threads, and every epoch draws anew (see :func:`make_dataset`).

    Attributes:
        rotation: the largest rotation, degrees.
        width_shift: the largest horizontal shift, a fraction of the width.
        height_shift: the largest vertical shift, a fraction of the height.
        shear: the largest shear angle, degrees (ImageDataGenerator's ``shear_range``).
        zoom: zoom factors are drawn from [1 - zoom, 1 + zoom], per axis.
        horizontal_flip: flip half of the images left-right.
        fill_mode: how pixels from outside the image are filled (nearest, reflect, wrap,
            constant).
        seed: the seed of the draws.
    """

    rotation: float = 0.0
    width_shift: float = 0.0
    height_shift: float = 0.0
    shear: float = 0.0
    zoom: float = 0.0
    horizontal_flip: bool = False
    fill_mode: str = "nearest"
    seed: int = 0

    @property
    def enabled(self) -> bool:
        """Whether any transform is on (an all-off augmentation is skipped)."""
        ranges = (self.rotation, self.width_shift, self.height_shift, self.shear, self.zoom)
        return self.horizontal_flip or any(r > 0 for r in ranges)

    def transforms(self, n, height, width, seed) -> tf.Tensor:
        """Draw one transform per image, as ImageDataGenerator's ``get_random_transform`` does.

        Args:
            n: the number of images.
            height: image height in pixels.
            width: image width in pixels.
            seed: two integers, the stateless draws' seed.

        Returns:
            The (n, 8) matrices of :func:`affine_matrices`.
        """
        u = tf.random.stateless_uniform((n, 7), seed=seed, minval=-1.0, maxval=1.0)
        height_f, width_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        return affine_matrices(
            rotation=self.rotation * u[:, 0],
            # the reference scales its x shift by height_shift_range x height (a quirk that
            # only matters when the two ranges or sides differ); this takes them as named
            shift_x=self.width_shift * width_f * u[:, 1],
            shift_y=self.height_shift * height_f * u[:, 2],
            shear=self.shear * u[:, 3],
            zoom_x=1.0 + self.zoom * u[:, 4],
            zoom_y=1.0 + self.zoom * u[:, 5],
            flip=(u[:, 6] < 0.0) if self.horizontal_flip else tf.zeros((n,), tf.bool),
            height=height_f,
            width=width_f,
        )

    def __call__(self, images: tf.Tensor, seed) -> tf.Tensor:
        """Augment a batch (n, height, width, channels) of float images with one draw per image."""
        shape = tf.shape(images)
        matrices = self.transforms(shape[0], shape[1], shape[2], seed)
        if self.fill_mode not in _BORDERS:  # "wrap" (see _BORDERS)
            return keras.ops.image.affine_transform(
                images, matrices, interpolation="bilinear", fill_mode=self.fill_mode
            )
        warped = tf.numpy_function(
            lambda x, m: warp_affine(x, m, fill_mode=self.fill_mode),
            [images, matrices],
            tf.float32,
            stateful=False,
        )
        warped.set_shape(images.shape)
        return warped


def augmentation(params: Mapping[str, Any], seed: int) -> RandomAffine:
    """The training augmentation of a run's train parameters.

    Args:
        params: the train parameters "aug_horizontal_flip", "aug_rotation" (degrees),
            "aug_width_shift", "aug_height_shift" (fractions), "aug_shear" (degrees, as
            ImageDataGenerator's shear_range), "aug_zoom" and "aug_fill_mode".
        seed: the seed of its random draws.

    Returns:
        The :class:`RandomAffine` to pass to :func:`make_dataset` (``enabled`` is False when
        everything is off).
    """
    return RandomAffine(
        rotation=float(params["aug_rotation"]),
        width_shift=float(params["aug_width_shift"]),
        height_shift=float(params["aug_height_shift"]),
        shear=float(params["aug_shear"]),
        zoom=float(params["aug_zoom"]),
        horizontal_flip=bool(params["aug_horizontal_flip"]),
        fill_mode=str(params["aug_fill_mode"]),
        seed=int(seed),
    )


def _decode_path(path: bytes, size: int, crop: bool) -> np.ndarray:
    return load_image(Path(path.decode()), size, crop=bool(crop))


def _decode_with_mask(path: bytes, mask: bytes, size: int, crop: bool) -> np.ndarray:
    """An image with its lesion mask as a fourth channel (0/255; all 0 where mask is "")."""
    image = load_image(Path(path.decode()), size, crop=bool(crop))
    lesion = np.zeros((size, size, 1), np.uint8)
    if mask:
        read = read_grey(mask.decode())  # the pixel limit holds for masks too
        if crop:  # the square the image was cut to
            read = crop_like_image(read, Path(path.decode()))
        # nearest neighbour, as phantom.load_mask: a mask stays a mask
        lesion[..., 0] = np.where(
            cv2.resize(read, (size, size), interpolation=cv2.INTER_NEAREST) > 127, 255, 0
        )
    return np.concatenate([image, lesion], axis=-1)


def _to_float(images: tf.Tensor) -> tf.Tensor:
    return tf.cast(images, tf.float32)


def cache_key(paths: Sequence[str], image_size: int, tag: str = "") -> str:
    """Key of a decoded-image cache: the files, the image size, a tag (the manifest hash) and the
    cached dtype (a cache of another layout is never read as this one)."""
    digest = hashlib.sha256("\n".join(paths).encode() + f"|{image_size}|{tag}|uint8".encode())
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
    augment: RandomAffine | None = None,
    masks: Sequence[str] | None = None,
    crop: bool = False,
) -> tf.data.Dataset:
    """Batches of (float 0-255 images, one-hot labels), or images alone when labels is None.

    With ``masks`` (training with lesion guidance), batches of (images, labels, masks): the
    masks float (N, H, W, 1) in [0, 1], all 0 for an image without one. Each mask is decoded and
    cached with its image as a fourth channel, so the augmentation moves image and mask alike.

    Decoded images are cached as uint8, a quarter of the memory of float32 (about 1 GB for
    Training at 240 px); batches are converted to float32 after the cache. A disk cache is keyed
    by the files, the size and `cache_tag` (pass the manifest hash, so changed image contents
    under the same paths are decoded again).

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
        augment: the random transform of training batches (see :func:`augmentation`); each
            epoch draws new transforms, the same ones in every run with the same seed.
        masks: one mask file per image ("" for none; see ``sources.mask_files``), or None.
        crop: cut each image (and mask) to the square around the head first
            (``model.crop_to_brain``; :func:`brainmri.data.brain_box`).

    Returns:
        A prefetched ``tf.data.Dataset`` in file order unless shuffled.
    """
    files = [str(f) for f in files]
    if masks is not None:
        masks = [str(m) for m in masks]
        if len(masks) != len(files) or labels is None:
            raise ValueError(
                f"masks: expected one entry per file ({len(files)}) and labels, got {len(masks)}"
            )
        ds = tf.data.Dataset.from_tensor_slices((files, masks))
        channels = 4

        def decode(path, mask):
            image = tf.numpy_function(
                _decode_with_mask, [path, mask, image_size, crop], tf.uint8, stateful=False
            )
            image.set_shape((image_size, image_size, channels))
            return image

        # the masks are part of what is cached: another set of masks is another cache
        cache_tag = f"{cache_tag}|masks:" + hashlib.sha256("\n".join(masks).encode()).hexdigest()
    else:
        ds = tf.data.Dataset.from_tensor_slices(files)
        channels = 3

        def decode(path):
            image = tf.numpy_function(
                _decode_path, [path, image_size, crop], tf.uint8, stateful=False
            )
            image.set_shape((image_size, image_size, channels))
            return image

    if crop:  # a cropped cache is another cache (and another threshold another crop)
        cache_tag = f"{cache_tag}|crop:{BRAIN_THRESHOLD}"
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
    if augment is not None and augment.enabled:
        # One seed per batch from a stream that is redrawn every epoch (rerandomize), so the
        # stateless draws differ between epochs yet repeat exactly from run to run.
        draws = tf.data.Dataset.random(seed=augment.seed, rerandomize_each_iteration=True)
        seeds = draws.map(lambda r: tf.stack([tf.constant(augment.seed, tf.int64), r]))
        ds = tf.data.Dataset.zip((ds, seeds))
        if labels is None:
            ds = ds.map(lambda x, s: augment(_to_float(x), s), num_parallel_calls=tf.data.AUTOTUNE)
        else:
            ds = ds.map(
                lambda xy, s: (augment(_to_float(xy[0]), s), xy[1]),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
    elif labels is None:
        ds = ds.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, y: (_to_float(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    if masks is not None:  # split the fourth channel off: (images, labels, masks in [0, 1])
        ds = ds.map(
            lambda x, y: (x[..., :3], y, x[..., 3:] / 255.0), num_parallel_calls=tf.data.AUTOTUNE
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def load_batch(files: Sequence[str | Path], image_size: int, *, crop: bool = False) -> np.ndarray:
    """Decode a few files into one float32 0-255 array (for explanations and galleries).

    Args:
        files: image paths.
        image_size: the side of the square images.
        crop: cut each image to the square around the head first (``model.crop_to_brain``).

    Returns:
        An array (len(files), image_size, image_size, 3).
    """
    return np.stack([load_image(Path(f), image_size, crop=crop).astype(np.float32) for f in files])
