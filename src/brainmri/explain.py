"""Class-activation explanations (Grad-CAM, Grad-CAM++, Score-CAM) and how well they localise.

Model contract: a functional Keras classifier taking float images 0..255 of shape (N, H, W, 3),
whose backbone layers are top-level layers, with a 4-D feature map, global pooling, Dense layers,
a linear `Dense(K, name=config.LOGITS_LAYER)` and a softmax output. Every map returned here is
float32 (N, H, W) in [0, 1] at the input resolution; masks are boolean (H, W).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import cv2
import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from scipy import stats

from brainmri import config

__all__ = [
    "REAL_METHODS",
    "VizGradCAM",
    "VizResult",
    "cam_model",
    "centre_prior",
    "deletion_insertion",
    "energy_pointing",
    "energy_ratio",
    "explain",
    "find_target_layer",
    "gradcam",
    "gradcam_overlays",
    "gradcam_plus_plus",
    "localisation_report",
    "otsu_iou",
    "overlay",
    "pointing_game",
    "random_map",
    "randomization_check",
    "randomization_maps",
    "randomize_weights",
    "rank_correlation",
    "scorecam",
    "summarise_localisation",
]

REAL_METHODS: tuple[str, ...] = tuple(m for m in config.CAM_METHODS if m != "random")
"""Methods that read the model (the others are baselines that ignore it)."""
BASELINES: tuple[str, ...] = ("random", "centre")
"""Model-free maps every localisation report includes for comparison."""
METRICS: tuple[str, ...] = (
    "pointing",
    "pointing_strict",
    "energy",
    "energy_ratio",
    "iou",
    "deletion_auc",
    "insertion_auc",
)
_EPS = 1e-12  # a map whose peak is below this is treated as all-zero (no division by ~0)


# --- model plumbing ---------------------------------------------------------------------------


class _CamFns(NamedTuple):
    """A cam model and the compiled functions that run it (cached per model and layer)."""

    model: keras.Model
    gradients: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, ...]]
    forward: Callable[[tf.Tensor], Any]


_CACHE: weakref.WeakKeyDictionary[keras.Model, dict[str | None, _CamFns]] = (
    weakref.WeakKeyDictionary()
)
_LOGITS_CACHE: weakref.WeakKeyDictionary[keras.Model, Callable[[tf.Tensor], tf.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def _rank(tensor: Any) -> int | None:
    """Rank of a symbolic tensor, None for lists of tensors."""
    shape = getattr(tensor, "shape", None)
    return None if shape is None else len(shape)


def _four_d_layers(model: keras.Model) -> list[str]:
    """Names of the top-level layers whose (single) output is a 4-D feature map."""
    return [
        layer.name
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer) and _rank(layer.output) == 4
    ]


def find_target_layer(model: keras.Model) -> str:
    """Name of the last 4-D feature-map layer before the global pooling that feeds the logits."""
    names = [layer.name for layer in model.layers]
    if config.LOGITS_LAYER in names:
        op = model.get_layer(config.LOGITS_LAYER)
    else:
        op = model.outputs[0]._keras_history.operation
    # Walk back from the logits along the head: the first 4-D output met is the backbone's
    # last feature map (squeeze-excite poolings inside EfficientNet blocks are not on this path).
    while True:
        inputs = op.input
        if isinstance(inputs, list | tuple):
            if len(inputs) != 1:
                break
            inputs = inputs[0]
        producer = inputs._keras_history.operation
        if isinstance(producer, keras.layers.InputLayer):
            break
        if _rank(producer.output) == 4:
            return producer.name
        op = producer
    raise ValueError(
        f"model {model.name!r}: no 4-D feature map found on the path from the input to "
        f"{op.name!r}; pass layer_name= one of the 4-D layers {_four_d_layers(model)}"
    )


def _single_input(model: keras.Model) -> None:
    """Reject models that do not take exactly one image input."""
    if len(model.inputs) != 1:
        raise ValueError(f"model {model.name!r}: expected one image input, found {model.inputs}")


def _layer_output(model: keras.Model, name: str) -> Any:
    """The symbolic output of a top-level layer in this model's graph."""
    layer = model.get_layer(name)
    if isinstance(layer, keras.Model) and len(layer._inbound_nodes) == 1:
        # A nested backbone's `.output` is its inner graph's tensor; the tensor of its call
        # inside this model is held by its (single) inbound node.
        return layer._inbound_nodes[0].output_tensors[0]
    return layer.output


def cam_model(model: keras.Model, layer_name: str | None = None) -> keras.Model:
    """A model mapping the classifier's input to [feature map of layer_name, logits]."""
    return _cam_fns(model, layer_name).model


def _cam_fns(model: keras.Model, layer_name: str | None) -> _CamFns:
    """Build (once per model and layer) the cam model and its compiled gradient/forward steps."""
    per_model = _CACHE.setdefault(model, {})
    if layer_name in per_model:
        return per_model[layer_name]
    _single_input(model)
    name = layer_name if layer_name is not None else find_target_layer(model)
    names = [layer.name for layer in model.layers]
    if name not in names:
        raise ValueError(
            f"layer_name={name!r}: no such layer in model {model.name!r}; "
            f"4-D layers are {_four_d_layers(model)}"
        )
    if config.LOGITS_LAYER not in names:
        raise ValueError(
            f"model {model.name!r}: no layer named {config.LOGITS_LAYER!r} (the pre-softmax "
            "Dense layer the explanations read)"
        )
    feature = _layer_output(model, name)
    if _rank(feature) != 4:
        raise ValueError(
            f"layer_name={name!r}: output shape {getattr(feature, 'shape', None)} is not a 4-D "
            f"feature map; 4-D layers are {_four_d_layers(model)}"
        )
    logits = model.get_layer(config.LOGITS_LAYER).output
    try:
        cm = keras.Model(model.inputs[0], [feature, logits], name=f"cam_{name}")
    except ValueError as exc:
        raise ValueError(
            f"layer_name={name!r}: its output is not connected to the input of model "
            f"{model.name!r} (layers inside a nested sub-model cannot be explained; use a "
            f"top-level layer, e.g. one of {_four_d_layers(model)}): {exc}"
        ) from None

    @tf.function(reduce_retracing=True)
    def gradients(x: tf.Tensor, cls: tf.Tensor) -> tuple[tf.Tensor, ...]:
        with tf.GradientTape() as tape:
            fmap, out = cm(x, training=False)
            fmap = tf.cast(fmap, tf.float32)
            out = tf.cast(out, tf.float32)
            chosen = tf.where(cls < 0, tf.argmax(out, axis=-1, output_type=tf.int32), cls)
            score = tf.gather(out, chosen, axis=1, batch_dims=1)
        # Images are independent in inference mode, so the gradient of the summed scores is
        # each image's own gradient.
        grads = tape.gradient(score, fmap)
        if grads is None:  # checked once, while tracing
            raise ValueError(f"layer_name={name!r}: the logits do not depend on this layer")
        return fmap, grads, out, chosen

    @tf.function(reduce_retracing=True)
    def forward(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        fmap, out = cm(x, training=False)
        return tf.cast(fmap, tf.float32), tf.cast(out, tf.float32)

    fns = _CamFns(cm, gradients, forward)
    per_model[layer_name] = fns
    per_model[name] = fns
    return fns


def _logits_fn(model: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """Compiled input -> logits function of the classifier (cached per model)."""
    if model not in _LOGITS_CACHE:
        _single_input(model)
        try:
            logits = model.get_layer(config.LOGITS_LAYER).output
        except ValueError:
            raise ValueError(
                f"model {model.name!r}: no layer named {config.LOGITS_LAYER!r} (the pre-softmax "
                "Dense layer the explanations read)"
            ) from None
        lm = keras.Model(model.inputs[0], logits)
        _LOGITS_CACHE[model] = tf.function(
            lambda x: tf.cast(lm(x, training=False), tf.float32), reduce_retracing=True
        )
    return _LOGITS_CACHE[model]


def _probabilities(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Softmax of the logits for a float batch, evaluated in chunks of batch_size."""
    fn = _logits_fn(model)
    out = [fn(tf.constant(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return tf.nn.softmax(np.concatenate(out), axis=-1).numpy()


def _as_batch(images: ArrayLike, model: keras.Model | None = None) -> np.ndarray:
    """Float32 (N, H, W, C) batch, checked against the model's input shape."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"images: expected an array of shape (N, H, W, C), got shape {x.shape}")
    if len(x) == 0:
        raise ValueError("images: expected at least one image, got an empty batch")
    if not np.isfinite(x).all():
        raise ValueError("images: expected finite pixel values (0..255), found NaN or inf")
    if model is not None:
        _single_input(model)
        expected = tuple(model.input_shape[1:])
        if len(expected) != 3:
            raise ValueError(f"model {model.name!r}: expected an image input, got {expected}")
        axes = ("height", "width", "channels")
        for got, want, axis in zip(x.shape[1:], expected, axes, strict=True):
            if want is not None and got != want:
                raise ValueError(
                    f"images: {axis} is {got} but model {model.name!r} expects input "
                    f"shape {expected}"
                )
    return x


def _class_array(class_index: int | ArrayLike | None, n: int, k: int) -> np.ndarray:
    """Per-image class indices as int32 (-1 = the model's predicted class)."""
    if class_index is None:
        return np.full(n, -1, np.int32)
    cls = np.asarray(class_index)
    if not np.issubdtype(cls.dtype, np.integer):
        raise ValueError(f"class_index: expected an int or an array of ints, got {class_index!r}")
    if cls.ndim == 0:
        cls = np.full(n, int(cls))
    if cls.shape != (n,):
        raise ValueError(f"class_index: expected one index per image ({n}), got shape {cls.shape}")
    if cls.min() < 0 or cls.max() >= k:
        raise ValueError(f"class_index: expected values in [0, {k}), got {cls.tolist()}")
    return cls.astype(np.int32)


def _check_batch_size(batch_size: int) -> None:
    """Reject a non-positive batch size."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")


def _resize_stack(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize an (h, w, C) stack to (H, W, C) with OpenCV."""
    height, width = size
    # cv2.resize handles at most 512 channels per call, so wide feature maps go in chunks.
    parts = [
        cv2.resize(maps[..., i : i + 256], (width, height), interpolation=cv2.INTER_LINEAR)
        for i in range(0, maps.shape[-1], 256)
    ]
    parts = [p[..., None] if p.ndim == 2 else p for p in parts]
    return np.concatenate(parts, axis=-1)


def _finish(low: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """ReLU, bilinear upsampling to size and per-image max normalisation (zeros stay zeros)."""
    height, width = size
    out = np.zeros((len(low), height, width), np.float32)
    for i, cam in enumerate(low):
        up = cv2.resize(
            np.maximum(cam, 0).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR
        )
        peak = float(up.max())
        if peak > _EPS:
            out[i] = up / peak
    return out


def _gradient_maps(
    model: keras.Model,
    images: ArrayLike,
    class_index: int | ArrayLike | None,
    layer_name: str | None,
    batch_size: int,
    plus_plus: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grad-CAM or Grad-CAM++ maps, logits and explained classes for a batch of images."""
    _check_batch_size(batch_size)
    x = _as_batch(images, model)
    fns = _cam_fns(model, layer_name)
    k = int(fns.model.outputs[1].shape[-1])
    cls = _class_array(class_index, len(x), k)
    lows, logits, chosen = [], [], []
    for i in range(0, len(x), batch_size):
        fmap, grads, out, picked = (
            t.numpy()
            for t in fns.gradients(
                tf.constant(x[i : i + batch_size]), tf.constant(cls[i : i + batch_size])
            )
        )
        if plus_plus:
            # Chattopadhay et al. (2018), eq. 19 with S = exp(logit): the exp factors cancel in
            # alpha, and the positive exp(logit) factor of the weights only scales the map,
            # which the max normalisation removes, so exp is never evaluated (no overflow).
            g2 = grads**2
            g3 = g2 * grads
            denom = 2.0 * g2 + fmap.sum(axis=(1, 2), keepdims=True) * g3
            alpha = np.where(grads != 0, g2 / np.where(denom != 0, denom, 1.0), 0.0)
            weights = (alpha * np.maximum(grads, 0)).sum(axis=(1, 2))
        else:
            weights = grads.mean(axis=(1, 2))
        lows.append(np.einsum("nhwc,nc->nhw", fmap, weights))
        logits.append(out)
        chosen.append(picked)
    maps = _finish(np.concatenate(lows), x.shape[1:3])
    return maps, np.concatenate(logits), np.concatenate(chosen)


# --- explanation methods ----------------------------------------------------------------------


def gradcam(
    model: keras.Model,
    images: ArrayLike,
    class_index: int | ArrayLike | None = None,
    layer_name: str | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] of a class's pre-softmax score (default: predicted)."""
    return _gradient_maps(model, images, class_index, layer_name, batch_size, False)[0]


def gradcam_plus_plus(
    model: keras.Model,
    images: ArrayLike,
    class_index: int | ArrayLike | None = None,
    layer_name: str | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM++ maps (N, H, W) in [0, 1] (Chattopadhay et al. 2018)."""
    return _gradient_maps(model, images, class_index, layer_name, batch_size, True)[0]


def scorecam(
    model: keras.Model,
    images: ArrayLike,
    class_index: int | ArrayLike | None = None,
    layer_name: str | None = None,
    batch_size: int = 32,
    max_channels: int | None = 64,
) -> np.ndarray:
    """Score-CAM maps (N, H, W) in [0, 1] (Wang et al. 2020), over the top max_channels channels."""
    _check_batch_size(batch_size)
    if max_channels is not None and int(max_channels) < 1:
        raise ValueError(f"max_channels: expected a positive integer or None, got {max_channels!r}")
    x = _as_batch(images, model)
    fns = _cam_fns(model, layer_name)
    acts, logits = [], []
    for i in range(0, len(x), batch_size):
        fmap, out = fns.forward(tf.constant(x[i : i + batch_size]))
        acts.append(fmap.numpy())
        logits.append(out.numpy())
    fmaps, scores = np.concatenate(acts), np.concatenate(logits)
    cls = _class_array(class_index, len(x), scores.shape[1])
    cls = np.where(cls < 0, scores.argmax(axis=1), cls)
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
    return _finish(lows, (height, width))


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


def explain(
    method: str,
    model: keras.Model,
    images: ArrayLike,
    class_index: int | ArrayLike | None = None,
    layer_name: str | None = None,
    batch_size: int = 32,
    seed: int = 0,
    max_channels: int | None = 64,
) -> np.ndarray:
    """Maps (N, H, W) in [0, 1] by one of config.CAM_METHODS (the random one ignores the model)."""
    if method == "gradcam":
        return gradcam(model, images, class_index, layer_name, batch_size)
    if method == "gradcampp":
        return gradcam_plus_plus(model, images, class_index, layer_name, batch_size)
    if method == "scorecam":
        return scorecam(model, images, class_index, layer_name, batch_size, max_channels)
    if method == "random":
        return random_map(images, seed)
    raise ValueError(f"method={method!r}: expected one of {list(config.CAM_METHODS)}")


# --- overlays and the reference view ----------------------------------------------------------


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


def _check_map(cam: ArrayLike, name: str = "cam") -> np.ndarray:
    """A finite, non-negative 2-D float map."""
    m = np.asarray(cam, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D map (H, W), got shape {m.shape}")
    if not np.isfinite(m).all() or (m.size and m.min() < 0):
        raise ValueError(
            f"{name}: expected finite values in [0, 1], got range [{np.nanmin(m)}, {np.nanmax(m)}]"
        )
    return m


def overlay(
    image_uint8_rgb: ArrayLike,
    cam: ArrayLike,
    interpolant: float = 0.5,
    colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
    """Blend a colour-mapped cam onto an image: interpolant*heatmap + (1-interpolant)*image."""
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
    class_index: int | ArrayLike | None = None,
    layer_name: str | None = None,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(overlays uint8 (N,H,W,3), Grad-CAM maps float32 (N,H,W), class probabilities (N,K))."""
    maps, logits, _ = _gradient_maps(model, images, class_index, layer_name, batch_size, False)
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
    layer_name: str | None = None,
) -> VizResult:
    """Grad-CAM of one (H, W, 3) image: (overlay, heatmap), plus a 1x4 figure when plot_results.

    Unpacks as `overlay, heatmap = VizGradCAM(...)`; the figure (original, heatmap, overlay,
    class-probability bars) is `result.figure`, None when plot_results is False.
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


# --- localisation metrics ---------------------------------------------------------------------


def _check_pair(cam: ArrayLike, mask: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """A validated (map, boolean mask) pair of equal shape."""
    m = _check_map(cam)
    b = np.asarray(mask)
    if b.shape != m.shape:
        raise ValueError(f"mask: expected the map's shape {m.shape}, got {b.shape}")
    return m, b.astype(bool)


def pointing_game(cam: ArrayLike, mask: ArrayLike, tolerance: float = 0.0) -> bool:
    """Whether the map's maximum lies within `tolerance` pixels of the mask (constant map: miss).

    Zhang et al. (2016), who defined the pointing game, count a hit within 15 pixels of the
    object at 224 px; tolerance 0 is the strict variant.
    """
    m, b = _check_pair(cam, mask)
    if m.max() == m.min():
        return False
    y, x = np.unravel_index(int(np.argmax(m)), m.shape)
    if b[y, x]:
        return True
    if tolerance <= 0 or not b.any():
        return False
    # Distance from every pixel to the nearest mask pixel (OpenCV's exact Euclidean transform).
    distance = cv2.distanceTransform((~b).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return bool(distance[y, x] <= tolerance)


def energy_pointing(cam: ArrayLike, mask: ArrayLike) -> float:
    """Share of the map's mass inside the mask (0 for an all-zero map)."""
    m, b = _check_pair(cam, mask)
    total = float(m.sum())
    return float(m[b].sum()) / total if total > 0 else 0.0


def energy_ratio(cam: ArrayLike, mask: ArrayLike) -> float:
    """Energy inside the mask divided by the mask's area fraction (1 = chance)."""
    m, b = _check_pair(cam, mask)
    area = b.mean()
    if area == 0:
        raise ValueError("mask: expected at least one True pixel to compute the energy ratio")
    return energy_pointing(m, b) / float(area)


def otsu_iou(cam: ArrayLike, mask: ArrayLike) -> float:
    """IoU between the mask and the map thresholded by Otsu (0 when both are empty)."""
    m, b = _check_pair(cam, mask)
    u8 = np.round(np.clip(m, 0, 1) * 255).astype(np.uint8)
    _, binary = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    pred = binary > 0
    union = np.logical_or(pred, b).sum()
    return float(np.logical_and(pred, b).sum() / union) if union else 0.0


# --- faithfulness -----------------------------------------------------------------------------


def _baseline_image(image: np.ndarray, baseline: str) -> np.ndarray:
    """The image that removed pixels are replaced with."""
    if baseline == "blur":
        sigma = max(image.shape[:2]) / 16.0  # coarse enough to erase texture and edges
        return cv2.GaussianBlur(image, (0, 0), sigma).reshape(image.shape)
    if baseline == "black":
        return np.zeros_like(image)
    raise ValueError(f"baseline={baseline!r}: expected 'blur' or 'black'")


def deletion_insertion(
    model: keras.Model,
    image: ArrayLike,
    cam: ArrayLike,
    class_index: int,
    steps: int = 20,
    baseline: str = "blur",
) -> dict[str, Any]:
    """Deletion and insertion AUCs of a class's probability as pixels go in order of the map."""
    if int(steps) < 1:
        raise ValueError(f"steps: expected a positive integer, got {steps!r}")
    img = _as_batch(np.asarray(image)[None], model)[0]
    m = _check_map(cam)
    height, width = img.shape[:2]
    if m.shape != (height, width):
        raise ValueError(f"cam: expected the image's shape {(height, width)}, got {m.shape}")
    base = _baseline_image(img, baseline)
    rank = np.empty(m.size, np.int64)
    rank[np.argsort(-m.ravel(), kind="stable")] = np.arange(m.size)
    counts = np.round(np.linspace(0, m.size, steps + 1)).astype(np.int64)
    chosen = (rank[None, :] < counts[:, None]).reshape(steps + 1, height, width, 1)
    batch = np.concatenate([np.where(chosen, base, img), np.where(chosen, img, base)])
    probs = _probabilities(model, batch.astype(np.float32), len(batch))
    k = probs.shape[1]
    if not 0 <= int(class_index) < k:
        raise ValueError(f"class_index: expected a value in [0, {k}), got {class_index!r}")
    curve = probs[:, int(class_index)]
    fractions = np.linspace(0.0, 1.0, steps + 1)
    deletion, insertion = curve[: steps + 1], curve[steps + 1 :]
    return {
        "deletion_auc": float(np.trapezoid(deletion, fractions)),
        "insertion_auc": float(np.trapezoid(insertion, fractions)),
        "fractions": fractions.tolist(),
        "deletion_curve": deletion.tolist(),
        "insertion_curve": insertion.tolist(),
    }


# --- sanity checks ----------------------------------------------------------------------------


def _initializer_of(layer: keras.layers.Layer, var: Any) -> keras.initializers.Initializer | None:
    """The initialiser a layer created a weight with (kernel -> kernel_initializer, ...), if any."""
    name = var.name
    # Keras names most initialisers after their weight; DepthwiseConv2D's "kernel" is the exception.
    attrs = [f"{name}_initializer", f"{name.removesuffix('_kernel')}_initializer"]
    if name == "kernel":
        attrs.append("depthwise_initializer")
    for attr in attrs:
        init = getattr(layer, attr, None)
        if isinstance(init, keras.initializers.Initializer):
            return init
    return None


def randomize_weights(model: keras.Model, seed: int) -> keras.Model:
    """A clone re-initialised, seeded, with each layer's own initialisers (Adebayo et al. 2018).

    Everything learned is reset: weights, and BatchNorm moving statistics, which were learned
    from data under the trained weights. Constants without an initialiser (the input
    normalisation of EfficientNet) are kept. Re-drawing weights around the trained weights' mean
    and keeping the moving statistics instead left a deep ReLU network without normalisation
    dead (all-zero feature maps), which made the check vacuous.
    """
    clone = keras.models.clone_model(model)
    for source, target in zip(model.weights, clone.weights, strict=True):
        target.assign(source.value)
    rng = np.random.default_rng(seed)
    # A frozen backbone's weights are learned weights too. Setting `clone.trainable` does not
    # reach layers frozen one by one, so every (nested) layer is unfrozen explicitly.
    stack = list(clone.layers)
    while stack:
        layer = stack.pop()
        layer.trainable = True
        sublayers = getattr(layer, "layers", [])
        stack.extend(sublayers)
        if sublayers:
            continue  # a nested model: its layers are visited themselves
        for var in layer.weights:
            init = _initializer_of(layer, var)
            if init is None:
                if var.trainable:
                    raise ValueError(
                        f"randomize_weights: layer {layer.name!r} has no initialiser for its "
                        f"weight {var.name!r}; cannot re-initialise it"
                    )
                continue  # a constant, e.g. an input normalisation's mean and variance
            config = init.get_config()
            if "seed" in config:
                config["seed"] = int(rng.integers(2**31 - 1))
            var.assign(init.__class__.from_config(config)(var.shape, dtype=var.dtype))
    return clone


def rank_correlation(maps_a: ArrayLike, maps_b: ArrayLike) -> np.ndarray:
    """Per-image Spearman correlation of two map batches (NaN where a map is constant)."""
    a, b = np.asarray(maps_a), np.asarray(maps_b)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(
            f"maps: expected two (N, H, W) batches of equal shape, got {a.shape}, {b.shape}"
        )
    out = np.full(len(a), np.nan)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            out[i] = stats.spearmanr(x.ravel(), y.ravel()).statistic
    return out


def _nan_to_none(value: float) -> float | None:
    """A JSON-safe float (None for NaN)."""
    return None if value is None or math.isnan(value) else float(value)


def randomization_maps(
    model: keras.Model,
    images: ArrayLike,
    seed: int,
    method: str = "gradcam",
    layer_name: str | None = None,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Maps of the trained model and of its re-initialised clone, both for the trained prediction."""
    if method not in REAL_METHODS:
        raise ValueError(f"method={method!r}: expected one of {list(REAL_METHODS)}")
    x = _as_batch(images, model)
    predicted = _probabilities(model, x, batch_size).argmax(axis=1)
    kw = {"class_index": predicted, "layer_name": layer_name, "batch_size": batch_size}
    return explain(method, model, x, **kw), explain(method, randomize_weights(model, seed), x, **kw)


def randomization_check(
    trained: ArrayLike, randomised: ArrayLike, max_correlation: float = 0.5
) -> dict[str, Any]:
    """Rank correlation between maps of a model and of its re-initialised clone, and a verdict.

    It passes when the mean correlation is below max_correlation, or when every randomised map
    is flat (nothing of the trained explanation survived; the correlation is then undefined).
    """
    rho = rank_correlation(trained, randomised)
    defined = rho[~np.isnan(rho)]
    mean = float(defined.mean()) if defined.size else None
    return {
        "n_images": len(rho),
        "n_undefined": int(np.isnan(rho).sum()),
        "spearman_mean": mean,
        "spearman_per_image": [_nan_to_none(float(r)) for r in rho],
        "max_correlation": float(max_correlation),
        "passed": bool(mean < max_correlation) if mean is not None else True,
    }


# --- reports ----------------------------------------------------------------------------------


def _label_indices(labels: Iterable[Any], n: int) -> np.ndarray:
    """Class indices from class names or integers."""
    out = []
    for label in labels:
        if isinstance(label, str):
            if label not in config.CLASS_NAMES:
                raise ValueError(f"labels: {label!r} is not one of {list(config.CLASS_NAMES)}")
            out.append(config.CLASS_NAMES.index(label))
        else:
            out.append(int(label))
    idx = np.asarray(out, dtype=np.int64)
    if idx.shape != (n,):
        raise ValueError(f"labels: expected one label per image ({n}), got {len(idx)}")
    if len(idx) and (idx.min() < 0 or idx.max() >= len(config.CLASS_NAMES)):
        raise ValueError(f"labels: expected class indices in [0, {len(config.CLASS_NAMES)})")
    return idx


def localisation_report(
    model: keras.Model,
    images: ArrayLike,
    masks: ArrayLike,
    labels: Sequence[Any],
    methods: Sequence[str] = ("gradcam",),
    seed: int = 0,
    steps: int | None = 20,
    layer_name: str | None = None,
    batch_size: int = 32,
    tolerance: float = 0.0,
) -> pd.DataFrame:
    """One row per image x method (plus random and centre baselines) of localisation metrics.

    `pointing` allows `tolerance` pixels (the pointing game's standard slack); `pointing_strict`
    allows none.

    Each map explains the image's labelled class. Faithfulness (deletion/insertion AUC) is
    computed for the model-based methods only, and skipped entirely when steps is None.
    """
    x = _as_batch(images, model)
    n, height, width = x.shape[:3]
    mask_arr = np.asarray(masks).astype(bool)
    if mask_arr.shape != (n, height, width):
        raise ValueError(f"masks: expected shape {(n, height, width)}, got {mask_arr.shape}")
    empty = np.flatnonzero(~mask_arr.any(axis=(1, 2)))
    if empty.size:
        raise ValueError(f"masks: images {empty.tolist()} have an empty mask; expected tumours")
    label_idx = _label_indices(labels, n)
    unknown = [m for m in methods if m not in config.CAM_METHODS]
    if unknown:
        raise ValueError(f"methods: {unknown} unknown; expected from {list(config.CAM_METHODS)}")
    all_methods = list(dict.fromkeys([*methods, *BASELINES]))
    rows = []
    for method in all_methods:
        if method == "centre":
            maps = np.broadcast_to(centre_prior((height, width)), (n, height, width))
        else:
            maps = explain(
                method,
                model,
                x,
                class_index=label_idx,
                layer_name=layer_name,
                batch_size=batch_size,
                seed=seed,
            )
        for i in range(n):
            row: dict[str, Any] = {
                "image": i,
                "label": config.CLASS_NAMES[label_idx[i]],
                "method": method,
                "pointing": pointing_game(maps[i], mask_arr[i], tolerance),
                "pointing_strict": pointing_game(maps[i], mask_arr[i]),
                "energy": energy_pointing(maps[i], mask_arr[i]),
                "energy_ratio": energy_ratio(maps[i], mask_arr[i]),
                "iou": otsu_iou(maps[i], mask_arr[i]),
                "deletion_auc": np.nan,
                "insertion_auc": np.nan,
                "mask_area": float(mask_arr[i].mean()),
            }
            if steps is not None and method in REAL_METHODS:
                faith = deletion_insertion(model, x[i], maps[i], int(label_idx[i]), steps)
                row["deletion_auc"] = faith["deletion_auc"]
                row["insertion_auc"] = faith["insertion_auc"]
            rows.append(row)
    return pd.DataFrame(rows)


def _method_means(df: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Mean of each metric per method (pointing as a rate)."""
    out = {}
    for method, group in df.groupby("method", sort=False):
        means = {
            (f"{metric.replace('pointing', 'pointing_rate')}"): _nan_to_none(
                float(group[metric].astype(float).mean())
            )
            for metric in METRICS
        }
        out[str(method)] = means
    return out


def summarise_localisation(df: pd.DataFrame) -> dict[str, Any]:
    """JSON-ready means per class and method (and overall), with each class's mask area fraction."""
    needed = ["image", "label", "method", *METRICS, "mask_area"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"localisation table: missing column(s) {missing}; expected {needed}")

    def block(part: pd.DataFrame) -> dict[str, Any]:
        per_image = part.drop_duplicates("image")
        return {
            "n_images": int(len(per_image)),
            "mask_area_fraction": _nan_to_none(float(per_image["mask_area"].mean())),
            "methods": _method_means(part),
        }

    classes = {str(c): block(g) for c, g in df.groupby("label", sort=True)}
    return {
        "methods": list(dict.fromkeys(df["method"].astype(str))),
        "classes": classes,
        "overall": block(df),
    }
