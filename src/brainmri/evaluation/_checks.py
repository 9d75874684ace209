"""Input checks shared by the evaluation modules, and values made fit for JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_PROB_SUM_TOLERANCE = 1e-3
"""Rows of `probs` may deviate this much from summing to 1 (float32 softmax) before we refuse."""


def _check_labels(y_true: Any, n_classes: int, name: str = "y_true") -> np.ndarray:
    """Return y_true as a 1-D int array of indices in [0, n_classes) or raise ValueError."""
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array of class indices, got {y.shape}")
    integral = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating) and bool(np.all(np.mod(y, 1) == 0))
    )
    if not integral:
        raise ValueError(f"{name}: expected integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(
            f"{name}: class indices must lie in [0, {n_classes - 1}], found [{y.min()}, {y.max()}]"
        )
    return y


def _check_probs(probs: Any, n: int, n_classes: int) -> np.ndarray:
    """Return probs as float64 N x K rows summing to 1, or raise ValueError."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape != (n, n_classes):
        raise ValueError(f"probs: expected shape ({n}, {n_classes}), got {p.shape}")
    if not np.all(np.isfinite(p)) or p.min() < 0:
        raise ValueError("probs: expected finite, non-negative probabilities")
    sums = p.sum(axis=1)
    if np.max(np.abs(sums - 1.0)) > _PROB_SUM_TOLERANCE:
        raise ValueError(
            f"probs: rows must sum to 1 (softmax output), found sums in "
            f"[{sums.min():.4f}, {sums.max():.4f}]; pass softmax(logits), not logits"
        )
    # Renormalise the float32 rounding away so scikit-learn's strict float64 checks stay quiet.
    return p / sums[:, None]


def _check_inputs(
    y_true: Any, probs: Any, class_names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (labels, probabilities) pair; K comes from class_names, else from probs."""
    p = np.asarray(probs)
    if class_names is None:
        if p.ndim != 2 or p.shape[1] < 2:
            raise ValueError(f"probs: expected an N x K array with K >= 2, got shape {p.shape}")
        k = p.shape[1]
    else:
        k = len(class_names)
        if k < 2:
            raise ValueError(f"class_names: expected at least 2 classes, got {list(class_names)}")
    y = _check_labels(y_true, k)
    return y, _check_probs(p, y.size, k)


def _num(x: Any) -> float | None:
    """Return a plain float, or None for NaN/inf/None."""
    if x is None:
        return None
    value = float(x)
    return value if math.isfinite(value) else None


def _jsonable(obj: Any) -> Any:
    """Return obj with numpy types turned into plain Python and NaN/inf into None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _num(obj)
    return obj
