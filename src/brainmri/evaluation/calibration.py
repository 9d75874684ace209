"""Calibration: the reliability curve and ECE, Brier score, NLL, softmax and temperature scaling."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from scipy.special import softmax as _scipy_softmax
from sklearn.metrics import brier_score_loss, log_loss

from brainmri.evaluation._checks import _check_inputs, _check_labels, _num

__all__ = [
    "brier_score",
    "expected_calibration_error",
    "fit_temperature",
    "nll",
    "reliability_curve",
    "softmax",
]

_LOG_T_BOUNDS = (math.log(0.01), math.log(100.0))
"""Search interval of log T in temperature scaling."""


def reliability_curve(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> dict[str, Any]:
    """Return the top-label reliability diagram: center, accuracy, confidence, count per bin.

    Empty bins have accuracy and confidence None; "ece" is the count-weighted mean |acc - conf|.
    """
    if not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins: expected a positive integer, got {n_bins!r}")
    y, p = _check_inputs(y_true, probs)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # Same binning as sklearn.calibration.calibration_curve(strategy="uniform"), which we do not
    # call because it drops empty bins and returns no counts (both needed for ECE and plots).
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_ids = np.searchsorted(edges[1:-1], conf)
    count = np.bincount(bin_ids, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(bin_ids, weights=correct, minlength=n_bins) / count
        mean_conf = np.bincount(bin_ids, weights=conf, minlength=n_bins) / count
    filled = count > 0
    ece = float(np.sum(count[filled] * np.abs(acc[filled] - mean_conf[filled])) / y.size)
    return {
        "n_bins": int(n_bins),
        "bin_edges": edges.tolist(),
        "bin_centers": ((edges[:-1] + edges[1:]) / 2).tolist(),
        "accuracy": [_num(a) for a in acc],
        "confidence": [_num(c) for c in mean_conf],
        "count": count.astype(int).tolist(),
        "ece": ece,
    }


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Return the top-label expected calibration error over equal-width confidence bins."""
    return float(reliability_curve(y_true, probs, n_bins)["ece"])


def brier_score(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Return the multiclass Brier score: mean over cases of sum_k (p_k - onehot_k)^2."""
    y, p = _check_inputs(y_true, probs)
    k = p.shape[1]
    # scikit-learn >= 1.7 handles multiclass; scale_by_half=False keeps the classic [0, 2] form.
    return float(brier_score_loss(y, p, labels=list(range(k)), scale_by_half=False))


def nll(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Return the mean negative log-likelihood (natural log) of the true classes."""
    y, p = _check_inputs(y_true, probs)
    k = p.shape[1]
    return float(log_loss(y, p, labels=list(range(k))))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Return row-wise softmax(logits / temperature) as float64, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits: expected an N x K array, got shape {z.shape}")
    if not temperature > 0:
        raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
    return _scipy_softmax(z / temperature, axis=1)


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """Return the temperature T > 0 minimising the NLL of softmax(logits / T) (1 if none does).

    T is searched in [0.01, 100]. When every case is already classified correctly, the NLL
    keeps falling as T shrinks, so a RuntimeWarning is issued and 1 is returned.

    Args:
        logits: the pre-softmax scores of the fitting cases (the validation split, never
            the test split), a finite N x K array.
        y_true: their true class indices, shape (N,), each in [0, K).

    Returns:
        The fitted temperature; divide logits by it before the softmax.

    Raises:
        ValueError: logits is not a finite N x K array, or y_true is not N class indices in
            range.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or not np.all(np.isfinite(z)):
        raise ValueError(f"logits: expected a finite N x K array, got shape {z.shape}")
    y = _check_labels(y_true, z.shape[1])
    if y.size != z.shape[0]:
        raise ValueError(f"y_true: expected {z.shape[0]} labels like logits, got {y.size}")
    rows = np.arange(y.size)
    if np.all(z.argmax(axis=1) == y):
        # Every case right: the NLL keeps falling as T -> 0, so no finite temperature exists.
        warnings.warn(
            "fit_temperature: every validation case is classified correctly, so no finite "
            "temperature minimises the NLL; using T = 1 (no scaling)",
            RuntimeWarning,
            stacklevel=2,
        )
        return 1.0

    def objective(log_t: float) -> float:
        return float(-np.mean(log_softmax(z / math.exp(log_t), axis=1)[rows, y]))

    result = minimize_scalar(objective, bounds=_LOG_T_BOUNDS, method="bounded")
    return float(math.exp(result.x))
