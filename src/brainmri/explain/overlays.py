"""Heatmap overlays, the reference Grad-CAM view (VizGradCAM) and the gallery of a batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from brainmri import config
from brainmri.explain._plumbing import CamOptions, _check_map
from brainmri.explain.methods import _gradient_maps, explain, gradcam_weights

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["VizGradCAM", "VizResult", "cam_gallery", "gradcam_overlays", "overlay"]


def _to_uint8_rgb(image: ArrayLike) -> np.ndarray:
    """An (H, W, 3) uint8 RGB copy of a 0..255 grey or RGB image."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image: expected shape (H, W, 3) or (H, W), got {np.shape(image)}")
    if img.dtype != np.uint8:
        img = np.clip(np.round(img.astype(np.float32)), 0, 255).astype(np.uint8)
    return img


def overlay(
    image_uint8_rgb: ArrayLike,
    cam: ArrayLike,
    interpolant: float = 0.5,
    *,
    colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
    """Blend a colour-mapped cam onto an image: interpolant*heatmap + (1-interpolant)*image.

    Args:
        image_uint8_rgb: an (H, W, 3) RGB or (H, W) grey image of 0..255 pixels; other dtypes
            are rounded and clipped to uint8.
        cam: a map (h, w) in [0, 1], resized bilinearly to the image when its shape differs.
        interpolant: the heatmap's weight in [0, 1] (0: the image, 1: the heatmap).
        colormap: an OpenCV colour map.

    Returns:
        The uint8 RGB overlay (H, W, 3).
    """
    if not 0.0 <= interpolant <= 1.0:
        raise ValueError(f"interpolant: expected a value in [0, 1], got {interpolant!r}")
    img = _to_uint8_rgb(image_uint8_rgb)
    m = _check_map(cam).astype(np.float32)
    if m.shape != img.shape[:2]:
        m = cv2.resize(m, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(np.round(np.clip(m, 0, 1) * 255).astype(np.uint8), colormap)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(heat, float(interpolant), img, 1.0 - float(interpolant), 0.0)


def gradcam_overlays(
    model: keras.Model,
    images: ArrayLike,
    interpolant: float = 0.5,
    **options: Unpack[CamOptions],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(overlays uint8 (N,H,W,3), Grad-CAM maps float32 (N,H,W), class probabilities (N,K))."""
    maps, logits, _ = _gradient_maps(model, images, weights=gradcam_weights, **options)
    x = np.asarray(images)
    overlays = np.stack([overlay(img, m, interpolant) for img, m in zip(x, maps, strict=True)])
    probs = tf.nn.softmax(logits, axis=-1).numpy()
    return overlays, maps, probs


class VizResult(tuple):
    """The pair (overlay, heatmap) of VizGradCAM; `.figure` is its 1x4 Figure (or None)."""

    figure: Figure | None

    def __new__(cls, overlay: np.ndarray, heatmap: np.ndarray, figure: Figure | None) -> VizResult:
        obj = super().__new__(cls, (overlay, heatmap))
        obj.figure = figure
        return obj

    @property
    def overlay(self) -> np.ndarray:
        """The uint8 RGB overlay (H, W, 3)."""
        return self[0]

    @property
    def heatmap(self) -> np.ndarray:
        """The Grad-CAM map (H, W) in [0, 1]."""
        return self[1]


def VizGradCAM(  # noqa: N802 - the reference project's name
    model: keras.Model,
    image: ArrayLike,
    interpolant: float = 0.5,
    plot_results: bool = True,
    *,
    layer_name: str | None = None,
) -> VizResult:
    """Grad-CAM of one (H, W, 3) image: (overlay, heatmap), plus a 1x4 figure when plot_results.

    Unpacks as `overlay, heatmap = VizGradCAM(...)`; the figure (original, heatmap, overlay,
    class-probability bars) is `result.figure`, None when plot_results is False.

    Args:
        model: a classifier following the model contract (see `brainmri.explain`).
        image: one float image (H, W, 3) of 0..255 pixels.
        interpolant: the heatmap's weight in the overlay, in [0, 1].
        plot_results: whether to draw the 1x4 figure.
        layer_name: the 4-D feature-map layer explained; None finds it (`find_target_layer`).

    Returns:
        A `VizResult`: the pair (overlay uint8 (H, W, 3), heatmap float32 (H, W) in [0, 1]) of
        the predicted class, with the figure as `.figure`.
    """
    img = np.asarray(image)
    if img.ndim != 3:
        raise ValueError(f"image: expected one image of shape (H, W, 3), got shape {img.shape}")
    overlays, maps, probs = gradcam_overlays(model, img[None], interpolant, layer_name=layer_name)
    figure = None
    if plot_results:
        from brainmri.plotting.explain import plot_viz_gradcam

        names = list(config.CLASS_NAMES)
        if len(names) != probs.shape[1]:
            names = [f"class {i}" for i in range(probs.shape[1])]
        figure = plot_viz_gradcam(_to_uint8_rgb(img), maps[0], overlays[0], probs[0], names)
    return VizResult(overlays[0], maps[0], figure)


def cam_gallery(
    model: keras.Model,
    images: ArrayLike,
    titles: Sequence[str],
    *,
    method: str,
    layer_name: str | None,
    interpolant: float,
    seed: int = 0,
) -> Figure:
    """A grid of each image beside its overlay, by one of config.CAM_METHODS, four per row.

    Args:
        model: a classifier following the model contract (see `brainmri.explain`).
        images: a float batch (N, H, W, 3) of 0..255 pixels.
        titles: one title per image.
        method: a name in `METHODS`, e.g. "gradcam".
        layer_name: the 4-D feature-map layer explained; None finds it (`find_target_layer`).
        interpolant: the heatmap's weight in each overlay, in [0, 1].
        seed: the seed of the random baseline (the other methods ignore it).

    Returns:
        The Figure of `brainmri.plotting.explain.plot_cam_gallery`; each map explains the
        model's predicted class.
    """
    from brainmri.plotting.explain import plot_cam_gallery

    x = np.asarray(images)
    maps = explain(method, model, x, layer_name=layer_name, seed=seed)
    overlays = [overlay(img, m, interpolant) for img, m in zip(x, maps, strict=True)]
    return plot_cam_gallery(x, overlays, titles, ncols=4)
