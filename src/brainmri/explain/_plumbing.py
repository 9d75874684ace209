"""Model plumbing shared by the explanation methods: the target layer, the cached cam model and
its compiled steps, input checks, and the post-processing every map goes through.

Model contract: a functional Keras classifier taking float images 0..255 of shape (N, H, W, 3),
whose backbone layers are top-level layers, with a 4-D feature map, global pooling, Dense layers,
a linear `Dense(K, name=config.LOGITS_LAYER)` and a softmax output.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple, TypedDict

import cv2
import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from brainmri import config

__all__ = ["CamOptions", "cam_model", "find_target_layer"]

_EPS = 1e-12  # a map whose peak is below this is treated as all-zero (no division by ~0)


class CamOptions(TypedDict, total=False):
    """Keyword options of the methods that read the model (gradcam, gradcam_plus_plus, scorecam).

    Defaults: class_index None, layer_name None, batch_size 32.
    """

    class_index: int | ArrayLike | None
    """The class explained: one index for all images, one per image, or None (predicted)."""
    layer_name: str | None
    """The 4-D feature-map layer explained; None finds it (`find_target_layer`)."""
    batch_size: int
    """Images per forward (and backward) pass."""


class CamFunctions(NamedTuple):
    """A cam model and the compiled functions that run it (cached per model and layer)."""

    model: keras.Model
    gradients: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, ...]]
    forward: Callable[[tf.Tensor], Any]


class _CamBatch(NamedTuple):
    """The checked inputs of a method that reads the model."""

    x: np.ndarray  # float32 (N, H, W, C)
    fns: CamFunctions
    classes: np.ndarray  # int32 (N,), -1 = the model's predicted class
    batch_size: int


_CACHE: weakref.WeakKeyDictionary[keras.Model, dict[str | None, CamFunctions]] = (
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
    """Name of the last 4-D feature-map layer before the global pooling that feeds the logits.

    Args:
        model: a classifier following the model contract (see the module docstring).

    Returns:
        The name of a top-level layer of `model`, e.g. "top_activation" for EfficientNet.

    Raises:
        ValueError: when no 4-D feature map lies on the path from the input to the logits.
    """
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


def layer_output(model: keras.Model, name: str) -> Any:
    """The symbolic output of a top-level layer in this model's graph."""
    layer = model.get_layer(name)
    if isinstance(layer, keras.Model) and len(layer._inbound_nodes) == 1:
        # A nested backbone's `.output` is its inner graph's tensor; the tensor of its call
        # inside this model is held by its (single) inbound node.
        return layer._inbound_nodes[0].output_tensors[0]
    return layer.output


def cam_model(model: keras.Model, layer_name: str | None = None) -> keras.Model:
    """A model mapping the classifier's input to [feature map of layer_name, logits]."""
    return cam_functions(model, layer_name).model


def cam_functions(model: keras.Model, layer_name: str | None) -> CamFunctions:
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
    feature = layer_output(model, name)
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

    fns = CamFunctions(cm, gradients, forward)
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


def _cam_batch(
    model: keras.Model,
    images: ArrayLike,
    class_index: int | ArrayLike | None = None,
    layer_name: str | None = None,
    batch_size: int = 32,
) -> _CamBatch:
    """Check the images and the `CamOptions` of a method that reads the model (their defaults)."""
    _check_batch_size(batch_size)
    x = _as_batch(images, model)
    fns = cam_functions(model, layer_name)
    k = int(fns.model.outputs[1].shape[-1])
    return _CamBatch(x, fns, _class_array(class_index, len(x), k), batch_size)


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


def _upsample_and_normalise(low: np.ndarray, size: tuple[int, int]) -> np.ndarray:
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


def _nan_to_none(value: float) -> float | None:
    """A JSON-safe float (None for NaN)."""
    return None if value is None or math.isnan(value) else float(value)
