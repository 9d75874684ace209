"""PyTorch EfficientNet-Lite state dicts to Keras weights: which tensor goes where, and how.

Pure arrays in, arrays out: no file, no model. :mod:`brainmri.efficientnet_lite.weights` reads
the state dict, caches the result and sets a model's weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from brainmri.efficientnet_lite.specs import block_specs


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
