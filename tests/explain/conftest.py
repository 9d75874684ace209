"""Tiny contract-following models and synthetic data shared by the explain tests.

The helpers are handed out as fixtures (factories): with `--import-mode=importlib` and no
`__init__.py`, test modules cannot import one another or this conftest.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import pytest
from keras import layers

from brainmri import config

K = len(config.CLASS_NAMES)


def _head(features, units: int = 0):
    """The contract head: global max pooling, optional Dense, logits, softmax."""
    x = layers.GlobalMaxPooling2D(name="global_max_pool")(features)
    if units:
        x = layers.Dense(units, activation="relu", name="head_dense1")(x)
        x = layers.Dropout(0.3, name="head_dropout1")(x)
    logits = layers.Dense(K, name=config.LOGITS_LAYER)(x)
    return layers.Activation("softmax", name="probs")(logits)


def _cnn(size: int = 32, seed: int = 0) -> keras.Model:
    """A small contract-following CNN with BatchNorm and a 'top_activation' feature map."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(1 / 255.0)(inp)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(8, 3, padding="same", name="conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.Activation("relu", name="top_activation")(x)
    return keras.Model(inp, _head(x, units=8))


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Random 0..255 float images."""
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def _square_data(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise images; class 1 (odd indices) holds a bright square at a random place."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 60, (n, size, size, 3)).astype(np.float32)
    y = np.arange(n) % 2
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        r, c = rng.integers(2, size - 12, 2)
        masks[i, r : r + 10, c : c + 10] = True
        if y[i]:
            x[i][masks[i]] = 230.0
    return x, y, masks


@pytest.fixture(scope="module")
def cnn() -> keras.Model:
    """One small CNN per test module (`make_cnn()`)."""
    return _cnn()


@pytest.fixture
def head() -> Callable:
    """`head(features, units=0)`: the contract head on a 4-D feature tensor."""
    return _head


@pytest.fixture
def make_cnn() -> Callable[..., keras.Model]:
    """`make_cnn(size=32, seed=0)`: a fresh small contract-following CNN."""
    return _cnn


@pytest.fixture
def random_images() -> Callable[..., np.ndarray]:
    """`random_images(n, size, seed=0)`: random 0..255 float images (n, size, size, 3)."""
    return _images


@pytest.fixture
def square_data() -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`square_data(n, size, seed)`: (images, labels, masks) with bright squares in class 1."""
    return _square_data
