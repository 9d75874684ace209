"""Confidence intervals of a split's proportions: the (cluster) percentile bootstrap, Wilson and
Clopper-Pearson intervals, and the choice of the exact interval where the bootstrap fails."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import beta as _beta
from scipy.stats import binomtest

from brainmri.config import CLASS_NAMES
from brainmri.evaluation._checks import _check_labels, _num

__all__ = ["bootstrap_ci", "clopper_pearson_interval", "wilson_interval"]

_BOOTSTRAP_CHUNK_CELLS = 2_000_000
"""Resampled cases held in memory at once; keeps 10k x 7k bootstraps within ~20 MB."""
_EXACT_BELOW = 30
"""A proportion over fewer independent cases than this gets the Clopper-Pearson interval."""

# --- bootstrap --------------------------------------------------------------------------------


def _metrics_from_confusion(cms: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, macro F1 (zero_division=0), per-class sensitivity and specificity of matrices."""
    cms = cms.astype(np.float64)
    tp = np.diagonal(cms, axis1=1, axis2=2)
    actual = cms.sum(axis=2)
    predicted = cms.sum(axis=1)
    n = cms.sum(axis=(1, 2))
    denom = actual + predicted  # = 2TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
        sensitivity = np.where(actual > 0, tp / actual, np.nan)
        negatives = n[:, None] - actual
        true_negatives = negatives - (predicted - tp)
        specificity = np.where(negatives > 0, true_negatives / negatives, np.nan)
    return {
        "accuracy": tp.sum(axis=1) / n,
        "macro_f1": f1.mean(axis=1),
        "sens": sensitivity,
        "spec": specificity,
    }


def bootstrap_ci(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_resamples: int,
    seed: int,
    class_names: Sequence[str] = CLASS_NAMES,
    level: float = 0.95,
    *,
    groups: np.ndarray | None = None,
) -> dict[str, dict[str, float | None]]:
    """Percentile-bootstrap intervals: accuracy, macro F1, per-class sensitivity and specificity.

    Each resample draws clusters with replacement, as many as there are: with ``groups`` the
    near-copy clusters of the split (a cluster bootstrap: copies of one picture are not
    independent evidence, and resampling them one by one would make the intervals too
    narrow), else each case is its own cluster (the ordinary bootstrap). A resample in which a
    class is absent (or is the only class) does not count towards that class's sensitivity
    (specificity) interval.

    Args:
        y_true: the true class indices, shape (N,), each in [0, K).
        y_pred: the predicted class indices, shape (N,), each in [0, K).
        n_resamples: the number of bootstrap resamples, at least 1.
        seed: the seed of the resampling, so the intervals are reproducible.
        class_names: the K class names.
        level: the confidence level of the intervals, in (0, 1).
        groups: one cluster label per case (any hashable values; cases with equal labels are
            resampled together), or None.

    Returns:
        Per metric ("accuracy", "macro_f1", and "sensitivity/<class>" and
        "specificity/<class>" per class) a mapping of "point" (on all cases), "low" and
        "high"; None where the value is undefined.

    Raises:
        ValueError: y_true or y_pred is not N class indices in range, their lengths
            differ, groups is not one label per case, n_resamples is not a positive integer
            or level is not in (0, 1).
    """
    k = len(class_names)
    y = _check_labels(y_true, k)
    pred = _check_labels(y_pred, k, "y_pred")
    if pred.size != y.size:
        raise ValueError(f"y_pred: expected {y.size} predictions like y_true, got {pred.size}")
    if not isinstance(n_resamples, int | np.integer) or n_resamples < 1:
        raise ValueError(f"n_resamples: expected a positive integer, got {n_resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"level: expected a confidence level in (0, 1), got {level!r}")
    if groups is None:
        cluster = np.arange(y.size)
    else:
        if len(groups) != y.size:
            raise ValueError(f"groups: expected {y.size} cluster labels, got {len(groups)}")
        cluster = pd.factorize(np.asarray(groups))[0]

    # Hand-written rather than sklearn in a loop: one matrix product per chunk of resamples is
    # ~1000x faster. Each cluster's confusion-cell counts (G, K*K); a resample's matrix is the
    # sum of its drawn clusters' counts, i.e. (times each cluster was drawn) @ counts.
    codes = y * k + pred
    n_clusters = int(cluster.max()) + 1
    cells = np.zeros((n_clusters, k * k), dtype=np.int64)
    np.add.at(cells, (cluster, codes), 1)
    point = _metrics_from_confusion(cells.sum(axis=0).reshape(1, k, k))
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CHUNK_CELLS // n_clusters)
    parts = []
    for start in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        idx = rng.integers(0, n_clusters, size=(rows, n_clusters))
        offsets = (np.arange(rows) * n_clusters)[:, None]
        drawn = np.bincount((idx + offsets).ravel(), minlength=rows * n_clusters)
        drawn = drawn.reshape(rows, n_clusters)
        parts.append((drawn @ cells).reshape(rows, k, k))
    boot = _metrics_from_confusion(np.concatenate(parts))

    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]

    def interval(point_value: float, samples: np.ndarray) -> dict[str, float | None]:
        finite = samples[np.isfinite(samples)]
        low, high = np.percentile(finite, q) if finite.size else (np.nan, np.nan)
        return {"point": _num(point_value), "low": _num(low), "high": _num(high)}

    out = {
        "accuracy": interval(point["accuracy"][0], boot["accuracy"]),
        "macro_f1": interval(point["macro_f1"][0], boot["macro_f1"]),
    }
    for j, name in enumerate(class_names):
        out[f"sensitivity/{name}"] = interval(point["sens"][0, j], boot["sens"][:, j])
    for j, name in enumerate(class_names):
        out[f"specificity/{name}"] = interval(point["spec"][0, j], boot["spec"][:, j])
    return out


# --- exact intervals for proportions ----------------------------------------------------------


def _check_proportion(successes: float, n: float, confidence: float) -> None:
    """Raise ValueError unless 0 <= successes <= n, n > 0 and confidence lies in (0, 1)."""
    if not (math.isfinite(n) and n > 0):
        raise ValueError(f"n: expected a positive number of cases, got {n!r}")
    if not (math.isfinite(successes) and 0 <= successes <= n):
        raise ValueError(f"successes: expected a count in [0, {n}], got {successes!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a level in (0, 1), got {confidence!r}")


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (no continuity correction).

    Unlike the bootstrap it does not collapse to a point when every case (or none) is right:
    0/10 gives 0 to 0.278 at 95%. Its coverage is close to nominal on average but may fall a
    little below it; :func:`clopper_pearson_interval` never does.

    Args:
        successes: the number of successes, an integer in [0, n].
        n: the number of cases, a positive integer.
        confidence: the confidence level, in (0, 1).

    Returns:
        The (low, high) bounds, within [0, 1].

    Raises:
        ValueError: n is not a positive integer, successes is not an integer in [0, n] or
            confidence is not in (0, 1).
    """
    if not all(isinstance(v, int | np.integer) for v in (successes, n)):
        raise ValueError(f"wilson_interval: expected integer counts, got {successes!r}/{n!r}")
    _check_proportion(successes, n, confidence)
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def clopper_pearson_interval(
    successes: float, n: float, *, confidence: float = 0.95
) -> tuple[float, float]:
    """The Clopper-Pearson ("exact") interval of a binomial proportion.

    Its coverage is at least the nominal level for every true proportion (it is
    conservative), and it stays informative at the extremes: 15/15 gives 0.782 to 1 at 95%
    (the low bound is 0.025 ** (1 / 15)), where a bootstrap gives 1 to 1.

    Args:
        successes: the number of successes, in [0, n]. It may be fractional: an effective
            count, e.g. the proportion times the number of independent clusters.
        n: the number of cases (or effective cases), positive, possibly fractional.
        confidence: the confidence level, in (0, 1).

    Returns:
        The (low, high) bounds, within [0, 1]; low is 0 when successes is 0 and high is 1
        when successes is n.

    Raises:
        ValueError: n is not positive, successes is not in [0, n] or confidence is not in
            (0, 1).
    """
    _check_proportion(successes, n, confidence)
    # The beta quantiles that define the interval, rather than scipy's
    # binomtest(...).proportion_ci(method="exact"): that takes integer counts only, and the
    # cluster-adjusted effective counts of evaluate_split are fractional. For integer counts
    # both agree (tests/evaluation/test_intervals.py checks it).
    alpha = 1 - confidence
    low = 0.0 if successes == 0 else float(_beta.ppf(alpha / 2, successes, n - successes + 1))
    high = 1.0 if successes == n else float(_beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return low, high


def _proportion_cases(
    y: np.ndarray, pred: np.ndarray, class_names: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per interval key of a proportion: (mask of the cases it is over, mask of its successes)."""
    right = pred == y
    cases = {"accuracy": (np.ones_like(right), right)}
    for j, name in enumerate(class_names):
        cases[f"sensitivity/{name}"] = (y == j, right)  # TP among the positives
    for j, name in enumerate(class_names):
        cases[f"specificity/{name}"] = (y != j, pred != j)  # TN among the negatives
    return cases


def _exact_where_small(
    ci: Mapping[str, Mapping[str, Any]],
    y: np.ndarray,
    pred: np.ndarray,
    class_names: Sequence[str],
    level: float,
    groups: np.ndarray | None,
) -> dict[str, dict[str, Any]]:
    """The intervals of ci with their method and counts, Clopper-Pearson where bootstrap fails.

    Accuracy, sensitivity and specificity get "successes" and "n" (and "clusters" with
    groups); one over fewer than _EXACT_BELOW independent cases, with all or none right, or
    whose bootstrap interval is degenerate (low == high, or undefined although the value is
    defined) gets the Clopper-Pearson interval. With groups each near-copy cluster counts as
    one case, the proportion kept: x = point * clusters of n = clusters (the most cautious
    design effect, as the cluster bootstrap treats copies as one piece of evidence).
    """
    bootstrap = "bootstrap" if groups is None else "cluster_bootstrap"
    cluster = None if groups is None else pd.factorize(np.asarray(groups))[0]
    cases = _proportion_cases(y, pred, class_names)
    out: dict[str, dict[str, Any]] = {}
    for key, interval in ci.items():
        entry = {**interval, "method": bootstrap}
        out[key] = entry
        if key not in cases:
            continue  # macro F1 is no proportion; only the bootstrap interval applies
        among, hit = cases[key]
        n, successes = int(among.sum()), int((among & hit).sum())
        entry.update(successes=successes, n=n)
        units = n
        if cluster is not None:
            units = int(np.unique(cluster[among]).size)
            entry["clusters"] = units
        if n == 0:
            continue  # undefined (a class absent from the split, or the only class)
        low, high = entry["low"], entry["high"]
        degenerate = low is None or high is None or low == high
        if degenerate or units < _EXACT_BELOW or successes in (0, n):
            low, high = clopper_pearson_interval(successes * units / n, units, confidence=level)
            entry.update(low=low, high=high, method="clopper_pearson")
    return out
