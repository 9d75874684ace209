"""Shared by the tests of brainmri.evaluation: synthetic predictions and evaluation blocks.

The builders are plain functions handed out as fixtures (factories): with
`--import-mode=importlib` and no `__init__.py`, test modules cannot import one another or this
conftest.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from brainmri import evaluation as ev
from brainmri.config import CLASS_NAMES

K = len(CLASS_NAMES)


def _noisy_case(n: int, seed: int, sharpness: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and float32 softmax outputs of a mediocre classifier (fixed seed)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, size=n)
    logits = rng.normal(size=(n, K)) * sharpness
    logits[np.arange(n), y] += 2.0
    return y, ev.softmax(logits).astype(np.float32)


def _block(seed: int, temperature: float | None = 1.7, missing_class: bool = False) -> dict:
    """The evaluation block of 150 cases of a mediocre classifier (200 resamples, 10 bins)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, size=150)
    if missing_class:
        y[y == 2] = 0
    logits = rng.normal(size=(150, K)) * 3
    logits[np.arange(150), y] += 2.5
    paths = [f"Testing/{CLASS_NAMES[c]}/img{i}.jpg" for i, c in enumerate(y)]
    return ev.evaluate_split(
        y,
        ev.softmax(logits).astype(np.float32),
        logits,
        paths,
        n_resamples=200,
        seed=0,
        n_bins=10,
        temperature=temperature,
    )


def _tiny_class_case() -> tuple[np.ndarray, np.ndarray]:
    """300 cases: pituitary only 15, all right; meningioma 20 with 12 right; rest ~10% wrong."""
    rng = np.random.default_rng(21)
    y = np.array([0] * 140 + [1] * 20 + [2] * 125 + [3] * 15)
    pred = y.copy()
    big = np.flatnonzero((y == 0) | (y == 2))
    wrong = rng.choice(big, size=26, replace=False)
    pred[wrong] = np.where(y[wrong] == 0, 2, 0)  # glioma <-> notumor: nobody called pituitary
    pred[np.flatnonzero(y == 1)[:8]] = 0  # 12 of 20 meningiomas right
    p = np.full((y.size, K), 0.1)
    p[np.arange(y.size), pred] = 0.7
    return y, p


def _evaluate(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None = None) -> dict:
    """evaluate_split of (y, p) without a temperature: 300 resamples, seed 3, 10 bins."""
    paths = [f"img{i}.jpg" for i in range(y.size)]
    return ev.evaluate_split(
        y, p, None, paths, n_resamples=300, seed=3, n_bins=10, temperature=None, groups=groups
    )


@pytest.fixture
def noisy_case() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """`noisy_case(n, seed, sharpness=2.0)`: labels and float32 softmax outputs."""
    return _noisy_case


@pytest.fixture
def make_block() -> Callable[..., dict]:
    """`make_block(seed, temperature=1.7, missing_class=False)`: an evaluation block of 150 cases."""
    return _block


@pytest.fixture
def tiny_class_case() -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """`tiny_class_case()`: (labels, probabilities) with a small, perfectly classified class."""
    return _tiny_class_case


@pytest.fixture
def evaluate() -> Callable[..., dict]:
    """`evaluate(y, p, groups=None)`: the evaluation block of (y, p) without a temperature."""
    return _evaluate
