"""The CAM methods, in pytorch-grad-cam's shape: the gradient methods differ only in how they
weigh the feature-map channels, and a registry maps each name of config.CAM_METHODS to a method.

Every map returned here is float32 (N, H, W) in [0, 1] at the input resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import cv2
import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from brainmri import config
from brainmri.explain._plumbing import (
    CamOptions,
    _cam_batch,
    _probabilities,
    _resize_stack,
    _upsample_and_normalise,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "METHODS",
    "REAL_METHODS",
    "centre_prior",
    "explain",
    "gradcam",
    "gradcam_plus_plus",
    "gradcam_plus_plus_weights",
    "gradcam_weights",
    "random_map",
    "scorecam",
]

REAL_METHODS: tuple[str, ...] = tuple(m for m in config.CAM_METHODS if m != "random")
"""Methods that read the model (the others are baselines that ignore it)."""

WeightFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""Channel weights (N, C) of a gradient method from feature maps and gradients (N, h, w, C)."""


# --- gradient methods: each supplies only its channel weights --------------------------------


def gradcam_weights(fmap: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Grad-CAM's channel weights (N, C): the spatial mean of the gradients (Selvaraju et al. 2017).

    Args:
        fmap: feature maps (N, h, w, C) of the target layer (unused; part of the common signature).
        grads: gradients (N, h, w, C) of the explained class's logit with respect to fmap.

    Returns:
        The weights (N, C) of the channels.
    """
    return grads.mean(axis=(1, 2))


def gradcam_plus_plus_weights(fmap: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Grad-CAM++'s channel weights (N, C): alpha-weighted positive gradients (Chattopadhay 2018).

    Args:
        fmap: feature maps (N, h, w, C) of the target layer.
        grads: gradients (N, h, w, C) of the explained class's logit with respect to fmap.

    Returns:
        The weights (N, C) of the channels.
    """
    # Chattopadhay et al. (2018), eq. 19 with S = exp(logit): the exp factors cancel in
    # alpha, and the positive exp(logit) factor of the weights only scales the map,
    # which the max normalisation removes, so exp is never evaluated (no overflow).
    g2 = grads**2
    g3 = g2 * grads
    denom = 2.0 * g2 + fmap.sum(axis=(1, 2), keepdims=True) * g3
    alpha = np.where(grads != 0, g2 / np.where(denom != 0, denom, 1.0), 0.0)
    return (alpha * np.maximum(grads, 0)).sum(axis=(1, 2))


def _gradient_maps(
    model: keras.Model, images: ArrayLike, *, weights: WeightFn, **options: Unpack[CamOptions]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maps of a gradient method (its channel weights), logits and explained classes."""
    b = _cam_batch(model, images, **options)
    lows, logits, chosen = [], [], []
    for i in range(0, len(b.x), b.batch_size):
        fmap, grads, out, picked = (
            t.numpy()
            for t in b.fns.gradients(
                tf.constant(b.x[i : i + b.batch_size]),
                tf.constant(b.classes[i : i + b.batch_size]),
            )
        )
        lows.append(np.einsum("nhwc,nc->nhw", fmap, weights(fmap, grads)))
        logits.append(out)
        chosen.append(picked)
    maps = _upsample_and_normalise(np.concatenate(lows), b.x.shape[1:3])
    return maps, np.concatenate(logits), np.concatenate(chosen)


def gradcam(model: keras.Model, images: ArrayLike, **options: Unpack[CamOptions]) -> np.ndarray:
    """Grad-CAM maps of a class's pre-softmax score (default: the predicted class).

    Args:
        model: a classifier following the model contract (see `brainmri.explain`).
        images: a float batch (N, H, W, 3) of 0..255 pixels.
        **options: `CamOptions`: class_index, layer_name, batch_size.

    Returns:
        float32 maps (N, H, W) in [0, 1], weighted by `gradcam_weights`.
    """
    return _gradient_maps(model, images, weights=gradcam_weights, **options)[0]


def gradcam_plus_plus(
    model: keras.Model, images: ArrayLike, **options: Unpack[CamOptions]
) -> np.ndarray:
    """Grad-CAM++ maps (Chattopadhay et al. 2018), weighted by `gradcam_plus_plus_weights`.

    Arguments and return value as for `gradcam`.
    """
    return _gradient_maps(model, images, weights=gradcam_plus_plus_weights, **options)[0]


# --- Score-CAM and the model-free baselines ---------------------------------------------------


def scorecam(
    model: keras.Model,
    images: ArrayLike,
    *,
    max_channels: int | None = None,
    **options: Unpack[CamOptions],
) -> np.ndarray:
    """Score-CAM maps (Wang et al. 2020), over every channel or the top max_channels.

    Each channel, upsampled and min-max scaled, masks the image; its weight is the rise of the
    class probability over that of a black image. Wang et al. score every channel, and so does
    this by default; a cap (the `max_channels` channels of each image with the highest mean
    activation) bounds the cost, one forward pass per channel and image, and is then a
    different method: :func:`method_label` names it, so reports never call it plain Score-CAM.

    Args:
        model: a classifier following the model contract (see `brainmri.explain`).
        images: a float batch (N, H, W, 3) of 0..255 pixels.
        max_channels: how many channels to score per image, or None for all of them.
        **options: `CamOptions`: class_index, layer_name, batch_size.

    Returns:
        float32 maps (N, H, W) in [0, 1].
    """
    if max_channels is not None and int(max_channels) < 1:
        raise ValueError(f"max_channels: expected a positive integer or None, got {max_channels!r}")
    b = _cam_batch(model, images, **options)
    x, batch_size = b.x, b.batch_size
    acts, logits = [], []
    for i in range(0, len(x), batch_size):
        fmap, out = b.fns.forward(tf.constant(x[i : i + batch_size]))
        acts.append(fmap.numpy())
        logits.append(out.numpy())
    fmaps, scores = np.concatenate(acts), np.concatenate(logits)
    cls = np.where(b.classes < 0, scores.argmax(axis=1), b.classes)
    height, width = x.shape[1:3]
    # Confidence increase is measured against a black image (the MRI background).
    base = _probabilities(model, np.zeros_like(x[:1]), 1)[0]
    lows = np.zeros(fmaps.shape[:3], np.float32)
    for n, (image, fmap) in enumerate(zip(x, fmaps, strict=True)):
        order = np.argsort(-fmap.mean(axis=(0, 1)), kind="stable")
        keep = order[:max_channels] if max_channels is not None else order
        up = _resize_stack(fmap[..., keep], (height, width))
        lo, hi = up.min(axis=(0, 1)), up.max(axis=(0, 1))
        valid = hi > lo  # a constant channel carries no spatial information
        keep, up, lo, hi = keep[valid], up[..., valid], lo[valid], hi[valid]
        weights = np.zeros(len(keep), np.float32)
        for s in range(0, len(keep), batch_size):
            masks = (up[..., s : s + batch_size] - lo[s : s + batch_size]) / (
                hi[s : s + batch_size] - lo[s : s + batch_size]
            )
            masked = image[None] * np.moveaxis(masks, -1, 0)[..., None]
            probs = _probabilities(model, masked.astype(np.float32), batch_size)
            weights[s : s + batch_size] = probs[:, cls[n]] - base[cls[n]]
        lows[n] = fmap[..., keep] @ weights
    return _upsample_and_normalise(lows, (height, width))


def _spatial_shape(images: ArrayLike | Sequence[int]) -> tuple[int, int, int]:
    """(N, H, W) of an image batch (N, H, W[, C])."""
    shape = np.shape(images)
    if len(shape) not in (3, 4):
        raise ValueError(f"images: expected an array of shape (N, H, W[, C]), got shape {shape}")
    return int(shape[0]), int(shape[1]), int(shape[2])


def random_map(images: ArrayLike, seed: int) -> np.ndarray:
    """Smooth random maps (N, H, W) in [0, 1]: Gaussian-blurred noise, one per image."""
    n, height, width = _spatial_shape(images)
    rng = np.random.default_rng(seed)
    sigma = max(height, width) / 8.0  # blobs about the size of a Grad-CAM cell
    out = np.zeros((n, height, width), np.float32)
    for i in range(n):
        noise = cv2.GaussianBlur(rng.random((height, width), dtype=np.float32), (0, 0), sigma)
        # Hand-written min-max: cv2.normalize can overshoot 1 by a float32 ulp.
        span = float(noise.max() - noise.min())
        out[i] = np.clip((noise - noise.min()) / span, 0.0, 1.0) if span > 0 else 0.0
    return out


def centre_prior(size: int | tuple[int, int]) -> np.ndarray:
    """A centred Gaussian map (H, W) peaking at 1 with a standard deviation of a quarter side."""
    height, width = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if height < 1 or width < 1:
        raise ValueError(f"size: expected positive height and width, got {size!r}")
    rows = cv2.getGaussianKernel(int(height), height / 4.0, cv2.CV_32F)
    cols = cv2.getGaussianKernel(int(width), width / 4.0, cv2.CV_32F)
    prior = rows @ cols.T
    return (prior / prior.max()).astype(np.float32)


# --- the registry -----------------------------------------------------------------------------

CamMethod = Callable[..., np.ndarray]
"""A METHODS entry, called as (model, images, *, seed, max_channels, **CamOptions) -> maps;
each method reads the keywords it needs and ignores the others."""

METHODS: dict[str, CamMethod] = {
    "gradcam": lambda model, x, *, seed, max_channels, **cam: gradcam(model, x, **cam),
    "gradcampp": lambda model, x, *, seed, max_channels, **cam: gradcam_plus_plus(model, x, **cam),
    "scorecam": lambda model, x, *, seed, **cam: scorecam(model, x, **cam),
    "random": lambda model, x, *, seed, max_channels, **cam: random_map(x, seed),
}
"""Each name of config.CAM_METHODS mapped to its method (`explain` looks names up here)."""


def method_label(method: str, max_channels: int | None = None) -> str:
    """The name a report gives a method: Score-CAM with a channel cap says so."""
    if method == "scorecam" and max_channels is not None:
        return f"scorecam (top {int(max_channels)} channels)"
    return method


def explain(
    method: str,
    model: keras.Model,
    images: ArrayLike,
    *,
    seed: int = 0,
    max_channels: int | None = None,
    **options: Unpack[CamOptions],
) -> np.ndarray:
    """Maps by one of config.CAM_METHODS (the random one ignores the model).

    Args:
        method: a name in `METHODS`: "gradcam", "gradcampp", "scorecam" or "random".
        model: a classifier following the model contract (see `brainmri.explain`).
        images: a float batch (N, H, W, 3) of 0..255 pixels.
        seed: the seed of the random baseline (the other methods ignore it).
        max_channels: the channels Score-CAM scores per image, None for all (the other
            methods ignore it).
        **options: `CamOptions` (class_index, layer_name, batch_size) of the methods that read
            the model; the random baseline ignores them.

    Returns:
        float32 maps (N, H, W) in [0, 1] at the input resolution.

    Raises:
        ValueError: for a method not in `METHODS`, and for inputs the method rejects.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {list(config.CAM_METHODS)}")
    return METHODS[method](model, images, seed=seed, max_channels=max_channels, **options)
