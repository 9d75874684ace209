"""Held-out evaluation: discrimination, bootstrap and exact CIs, calibration, errors, comparisons."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema
import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from scipy.special import softmax as _scipy_softmax
from scipy.stats import beta as _beta
from scipy.stats import binomtest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    cohen_kappa_score,
    confusion_matrix,
    log_loss,
    matthews_corrcoef,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from brainmri.config import CLASS_NAMES
from brainmri.io import dig

__all__ = [
    "METRICS_SCHEMA",
    "bootstrap_ci",
    "brier_score",
    "calibration_table",
    "classification_summary",
    "clopper_pearson_interval",
    "compare_runs",
    "compare_table",
    "error_analysis",
    "evaluate_split",
    "expected_calibration_error",
    "fit_temperature",
    "headline_table",
    "format_interval",
    "interval_table",
    "mcnemar_test",
    "nll",
    "paired_comparison",
    "paired_table",
    "per_class_table",
    "reliability_curve",
    "roc_pr_curves",
    "softmax",
    "validate_metrics_block",
    "wilson_interval",
]

_PROB_SUM_TOLERANCE = 1e-3
"""Rows of `probs` may deviate this much from summing to 1 (float32 softmax) before we refuse."""
_BOOTSTRAP_CHUNK_CELLS = 2_000_000
"""Resampled cases held in memory at once; keeps 10k x 7k bootstraps within ~20 MB."""
_LOG_T_BOUNDS = (math.log(0.01), math.log(100.0))
"""Search interval of log T in temperature scaling."""
_EXACT_BELOW = 30
"""A proportion over fewer independent cases than this gets the Clopper-Pearson interval."""


# --- input checks -----------------------------------------------------------------------------


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


# --- discrimination ---------------------------------------------------------------------------


def _specificity(cm: np.ndarray) -> np.ndarray:
    """Per-class TN / (TN + FP) from a K x K confusion matrix (NaN where there are no negatives)."""
    total = cm.sum()
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = total - tp - fp - fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tn + fp > 0, tn / np.maximum(tn + fp, 1), np.nan)


def classification_summary(
    y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str] = CLASS_NAMES
) -> dict[str, Any]:
    """Return accuracy, per-class/macro/weighted metrics, kappa, MCC and confusion matrices.

    The predicted class of a case is the argmax of its probabilities.

    Args:
        y_true: the true class indices, shape (N,), each in [0, K).
        probs: the softmax probabilities, shape (N, K), rows summing to 1.
        class_names: the K class names, in the order of the columns of probs.

    Returns:
        A JSON-ready mapping: "n", "accuracy"; "per_class" (per class name its "precision",
        "recall", "specificity", "f1", "support", "roc_auc" and "average_precision", the
        last two None when the class has no positives or no negatives); "macro" and
        "weighted" ("precision", "recall", "specificity", "f1" averaged equally or by
        support); "cohen_kappa" and "mcc" (None when undefined); "confusion_matrix" (K x K
        counts, true classes as rows) and "confusion_matrix_normalized" (each row divided
        by its support, rows of absent classes all 0).

    Raises:
        ValueError: y_true is not N class indices in range, or probs is not an N x K
            array of probabilities whose rows sum to 1.
    """
    y, p = _check_inputs(y_true, probs, class_names)
    labels = list(range(len(class_names)))
    pred = p.argmax(axis=1)
    prec, rec, f1, support = precision_recall_fscore_support(
        y, pred, labels=labels, zero_division=0
    )
    cm = confusion_matrix(y, pred, labels=labels)
    # normalize="true" divides each row by its support; empty rows come back as zeros.
    with np.errstate(invalid="ignore", divide="ignore"):
        cm_norm = np.nan_to_num(confusion_matrix(y, pred, labels=labels, normalize="true"))
    spec = _specificity(cm)

    per_class: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(class_names):
        positives = y == k
        # AUC / AP are undefined when a class has no positives (or no negatives) in the split.
        defined = 0 < positives.sum() < y.size
        per_class[name] = {
            "precision": float(prec[k]),
            "recall": float(rec[k]),
            "specificity": _num(spec[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
            "roc_auc": float(roc_auc_score(positives, p[:, k])) if defined else None,
            "average_precision": (
                float(average_precision_score(positives, p[:, k])) if defined else None
            ),
        }

    weights = support / support.sum()
    spec_filled = np.nan_to_num(spec)

    def averages(w: np.ndarray) -> dict[str, float]:
        return {
            "precision": float(np.dot(w, prec)),
            "recall": float(np.dot(w, rec)),
            "specificity": float(np.dot(w, spec_filled)),
            "f1": float(np.dot(w, f1)),
        }

    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = cohen_kappa_score(y, pred, labels=labels)
        mcc = matthews_corrcoef(y, pred)
    return {
        "n": int(y.size),
        "accuracy": float(accuracy_score(y, pred)),
        "per_class": per_class,
        "macro": averages(np.full(len(labels), 1.0 / len(labels))),
        "weighted": averages(weights),
        "cohen_kappa": _num(kappa),
        "mcc": _num(mcc),
        "confusion_matrix": cm.astype(int).tolist(),
        "confusion_matrix_normalized": cm_norm.astype(float).tolist(),
    }


def roc_pr_curves(
    y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str] = CLASS_NAMES
) -> dict[str, dict[str, list[float]]]:
    """Return one-vs-rest ROC (fpr, tpr) and PR (precision, recall) curves per class.

    A class without positives or without negatives in y_true gets empty lists.

    Args:
        y_true: (N,) true class indices, as for :func:`classification_summary`.
        probs: (N, K) softmax probabilities; column k scores class k.
        class_names: the K class names.

    Returns:
        Per class name, the lists "fpr", "tpr", "precision" and "recall" (scikit-learn's
        ``roc_curve`` and ``precision_recall_curve`` of that class against the rest).

    Raises:
        ValueError: y_true is not N class indices in range, or probs is not an N x K
            array of probabilities whose rows sum to 1.
    """
    y, p = _check_inputs(y_true, probs, class_names)
    curves: dict[str, dict[str, list[float]]] = {}
    for k, name in enumerate(class_names):
        positives = y == k
        if not 0 < positives.sum() < y.size:
            curves[name] = {"fpr": [], "tpr": [], "precision": [], "recall": []}
            continue
        fpr, tpr, _ = roc_curve(positives, p[:, k])
        precision, recall, _ = precision_recall_curve(positives, p[:, k])
        curves[name] = {
            "fpr": fpr.tolist(),
            "tpr": tpr.tolist(),
            "precision": precision.tolist(),
            "recall": recall.tolist(),
        }
    return curves


# --- bootstrap --------------------------------------------------------------------------------


def _confusion_stack(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Turn an (R, N) matrix of true*K+pred codes into R confusion matrices (R, K, K)."""
    r = codes.shape[0]
    cells = n_classes * n_classes
    flat = (codes + (np.arange(r)[:, None] * cells)).ravel()
    return np.bincount(flat, minlength=r * cells).reshape(r, n_classes, n_classes)


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
    # both agree (tests/test_evaluation.py checks it).
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


# --- calibration ------------------------------------------------------------------------------


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


# --- error analysis ---------------------------------------------------------------------------


def error_analysis(
    y_true: np.ndarray,
    probs: np.ndarray,
    paths: Sequence[str],
    k: int,
    class_names: Sequence[str] = CLASS_NAMES,
) -> dict[str, pd.DataFrame]:
    """Return the k most confident mistakes and the k least confident correct predictions.

    Args:
        y_true: the true class indices, shape (N,), each in [0, K).
        probs: the softmax probabilities, shape (N, K), rows summing to 1.
        paths: one image path per case, copied into the tables.
        k: the most rows of each table, at least 0.
        class_names: the K class names, in the order of the columns of probs.

    Returns:
        Two tables, "confident_mistakes" (most confident first) and "unsure_correct" (least
        confident first), ties in input order, with the columns "path", "true", "predicted"
        (class names), "confidence" (the top probability) and "prob_<class>" per class.

    Raises:
        ValueError: y_true or probs is invalid (as in :func:`classification_summary`),
            paths does not hold one path per case, or k is negative.
    """
    y, p = _check_inputs(y_true, probs, class_names)
    if len(paths) != y.size:
        raise ValueError(f"paths: expected {y.size} paths (one per case), got {len(paths)}")
    if k < 0:
        raise ValueError(f"k: expected a non-negative integer, got {k!r}")
    names = np.asarray(class_names, dtype=object)
    pred = p.argmax(axis=1)
    conf = p.max(axis=1)
    table = pd.DataFrame(
        {
            "path": [str(x) for x in paths],
            "true": names[y],
            "predicted": names[pred],
            "confidence": conf,
            **{f"prob_{c}": p[:, j] for j, c in enumerate(class_names)},
        }
    )
    wrong = table[pred != y].sort_values("confidence", ascending=False, kind="stable")
    right = table[pred == y].sort_values("confidence", ascending=True, kind="stable")
    return {
        "confident_mistakes": wrong.head(k).reset_index(drop=True),
        "unsure_correct": right.head(k).reset_index(drop=True),
    }


# --- one split --------------------------------------------------------------------------------


def _calibration_block(y: np.ndarray, p: np.ndarray, n_bins: int) -> dict[str, Any]:
    """ECE, Brier, NLL and the reliability curve of one set of probabilities."""
    curve = reliability_curve(y, p, n_bins)
    return {
        "ece": curve["ece"],
        "brier": brier_score(y, p),
        "nll": nll(y, p),
        "reliability": curve,
    }


def evaluate_split(
    y_true: np.ndarray,
    probs: np.ndarray,
    logits: np.ndarray | None,
    paths: Sequence[str],
    *,
    n_resamples: int,
    seed: int,
    n_bins: int,
    temperature: float | None,
    class_names: Sequence[str] = CLASS_NAMES,
    level: float = 0.95,
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Return the JSON-ready evaluation block of one split (see METRICS_SCHEMA for its shape).

    Keys: "summary" (classification_summary), "ci" (the intervals of bootstrap_ci, each with
    the "method" that made it; see below) with "bootstrap" settings, "calibration" (ece/brier/nll/reliability, plus "temperature" and the same after scaling in
    "scaled" when a temperature is given, else both None) and "misclassified" (every wrong case,
    most confident first).

    Args:
        y_true: the true class indices, shape (N,), each in [0, K).
        probs: the softmax probabilities, shape (N, K), rows summing to 1.
        logits: the pre-softmax scores, shape (N, K); needed only with a temperature, else
            may be None.
        paths: one image path per case, listed in "misclassified".
        n_resamples: the number of bootstrap resamples of the intervals.
        seed: the seed of the bootstrap.
        n_bins: the number of equal-width confidence bins of the reliability curve and ECE.
        temperature: the temperature fitted on validation (:func:`fit_temperature`), or None
            to skip the scaled calibration.
        class_names: the K class names, in the order of the columns of probs.
        level: the confidence level of the intervals, in (0, 1).
        groups: the near-copy cluster of each case, for a cluster bootstrap (see
            :func:`bootstrap_ci`); None resamples images.

    The intervals of accuracy and of each class's sensitivity and specificity also carry
    "successes" and "n" (the cases right and the cases the proportion is over; with groups,
    "clusters": the near-copy clusters among those cases). Where the bootstrap cannot be
    trusted, namely the proportion is over fewer than 30 independent cases (images, or
    clusters with groups), all or none of them are right, or the bootstrap interval is
    degenerate (low == high), the interval is the Clopper-Pearson one instead
    (:func:`clopper_pearson_interval`; with groups over the clusters, keeping the
    proportion), and its "method" is "clopper_pearson"; else "method" is "bootstrap" (or
    "cluster_bootstrap" with groups). Macro F1 keeps its bootstrap interval.

    Returns:
        The block with the keys above; undefined values are None. It is checked against
        METRICS_SCHEMA before it is returned.

    Raises:
        ValueError: y_true or probs is invalid (as in :func:`classification_summary`),
            paths does not hold one path per case, logits is missing or of another shape
            than probs while a temperature is given, or n_resamples, n_bins, level or
            temperature is out of range.
    """
    y, p = _check_inputs(y_true, probs, class_names)
    if len(paths) != y.size:
        raise ValueError(f"paths: expected {y.size} paths (one per case), got {len(paths)}")
    calibration = _calibration_block(y, p, n_bins)
    calibration["temperature"] = None
    calibration["scaled"] = None
    if temperature is not None:
        if logits is None:
            raise ValueError("logits: required when a temperature is given")
        z = np.asarray(logits)
        if z.shape != p.shape:
            raise ValueError(f"logits: expected shape {p.shape} like probs, got {z.shape}")
        calibration["temperature"] = float(temperature)
        calibration["scaled"] = _calibration_block(y, softmax(z, temperature), n_bins)
    mistakes = error_analysis(y, p, paths, y.size, class_names)["confident_mistakes"]
    pred = p.argmax(axis=1)
    ci = bootstrap_ci(y, pred, n_resamples, seed, class_names, level, groups=groups)
    block = {
        "summary": classification_summary(y, p, class_names),
        "ci": _exact_where_small(ci, y, pred, class_names, level, groups),
        "bootstrap": {
            "n_resamples": int(n_resamples),
            "seed": int(seed),
            "level": float(level),
            # what one draw resamples: near-copy clusters (a cluster bootstrap) or images
            "unit": "image" if groups is None else "near-copy cluster",
            "clusters": int(y.size if groups is None else len(pd.unique(np.asarray(groups)))),
        },
        "calibration": calibration,
        "misclassified": mistakes[["path", "true", "predicted", "confidence"]].to_dict("records"),
    }
    block = _jsonable(block)
    # Checked here, before anyone writes it: a block off the schema is this module's bug, and
    # metrics.json, compare_runs and the index page all rely on the shape.
    validate_metrics_block(block)
    return block


# --- tables for the report -------------------------------------------------------------------


def headline_table(blocks: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One column per split: images, accuracy with its interval, macro F1, kappa, MCC and ECE.

    Args:
        blocks: evaluation blocks (as :func:`evaluate_split` returns them) keyed by split name.

    Returns:
        A table with one row per headline metric and one column per split.
    """
    return pd.DataFrame(
        {
            split: {
                "images": b["summary"]["n"],
                "accuracy": b["summary"]["accuracy"],
                "accuracy 95% CI": "{low:.4f} to {high:.4f}".format(**b["ci"]["accuracy"]),
                "macro F1": b["summary"]["macro"]["f1"],
                "Cohen's kappa": b["summary"]["cohen_kappa"],
                "MCC": b["summary"]["mcc"],
                "ECE": b["calibration"]["ece"],
            }
            for split, b in blocks.items()
        }
    )


def format_interval(entry: Any, digits: int = 3) -> str:
    """An interval (of :func:`bootstrap_ci` or a block's "ci") as "point (low-high)"; "-" if none."""
    point, low, high = (dig(entry, key) for key in ("point", "low", "high"))
    if not isinstance(point, int | float):
        return "-"
    if isinstance(low, int | float) and isinstance(high, int | float):
        return f"{point:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"
    return f"{point:.{digits}f}"


def interval_table(blocks: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Each class's sensitivity and specificity as "point (low-high)", per split.

    Args:
        blocks: evaluation blocks keyed by split name; intervals missing from a block (one
            written by an older version) show as "-".

    Returns:
        A table of strings with one row per class and a (split, "sensitivity" /
        "specificity") column pair.
    """
    columns = {
        (split, kind): [format_interval(dig(b, "ci", f"{kind}/{name}")) for name in CLASS_NAMES]
        for split, b in blocks.items()
        for kind in ("sensitivity", "specificity")
    }
    return pd.DataFrame(columns, index=list(CLASS_NAMES))


def per_class_table(blocks: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Precision, recall (sensitivity), specificity, F1, ROC AUC and support per class and split.

    Args:
        blocks: evaluation blocks keyed by split name.

    Returns:
        A table with one row per class and a (split, metric) column pair per value.
    """
    columns = ["precision", "recall", "specificity", "f1", "roc_auc", "support"]
    return pd.concat(
        {split: pd.DataFrame(b["summary"]["per_class"]).T[columns] for split, b in blocks.items()},
        axis=1,
    )


def calibration_table(blocks: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """ECE, Brier score and NLL per split, before and after temperature scaling.

    Args:
        blocks: evaluation blocks keyed by split name, evaluated with a temperature.

    Returns:
        A table with one row per calibration metric and one column per split.
    """
    table = {}
    for split, b in blocks.items():
        cal, scaled = b["calibration"], b["calibration"]["scaled"] or {}
        table[split] = {
            "ECE": cal["ece"],
            "Brier": cal["brier"],
            "NLL": cal["nll"],
            "ECE scaled": scaled.get("ece"),
            "Brier scaled": scaled.get("brier"),
            "NLL scaled": scaled.get("nll"),
        }
    return pd.DataFrame(table)


# --- schema -----------------------------------------------------------------------------------

_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_UNIT = {"type": "number", "minimum": 0, "maximum": 1}
_UNIT_OR_NULL = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_COUNT = {"type": "integer", "minimum": 0}
_INTERVAL_METHODS = ("bootstrap", "cluster_bootstrap", "clopper_pearson")
"""The values of the "method" key of a block's intervals (see :func:`evaluate_split`)."""


def _obj(
    properties: dict[str, Any], optional: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """A closed JSON-Schema object: the properties all required, the optional ones allowed."""
    return {
        "type": "object",
        "properties": {**properties, **(optional or {})},
        "required": list(properties),
        "additionalProperties": False,
        **extra,
    }


_AVERAGES = _obj({"precision": _UNIT, "recall": _UNIT, "specificity": _UNIT, "f1": _UNIT})
_CALIBRATION_CORE = {
    "ece": _UNIT,
    "brier": {"type": "number", "minimum": 0, "maximum": 2},
    "nll": {"type": "number", "minimum": 0},
    "reliability": _obj(
        {
            "n_bins": {"type": "integer", "minimum": 1},
            "bin_edges": {"type": "array", "items": _UNIT, "minItems": 2},
            "bin_centers": {"type": "array", "items": _UNIT, "minItems": 1},
            "accuracy": {"type": "array", "items": _UNIT_OR_NULL, "minItems": 1},
            "confidence": {"type": "array", "items": _UNIT_OR_NULL, "minItems": 1},
            "count": {"type": "array", "items": _COUNT, "minItems": 1},
            "ece": _UNIT,
        }
    ),
}

METRICS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://brainmri.local/schemas/evaluation-block.json",
    "title": "Evaluation block of one held-out split (brainmri.evaluation.evaluate_split)",
    "$defs": {
        # method, successes, n and clusters are optional: blocks written before they existed
        # hold point/low/high alone.
        "interval": _obj(
            {"point": _NUM_OR_NULL, "low": _NUM_OR_NULL, "high": _NUM_OR_NULL},
            {
                "method": {"enum": list(_INTERVAL_METHODS)},
                "successes": _COUNT,
                "n": _COUNT,
                "clusters": _COUNT,
            },
        ),
        "class_metrics": _obj(
            {
                "precision": _UNIT,
                "recall": _UNIT,
                "specificity": _UNIT_OR_NULL,
                "f1": _UNIT,
                "support": _COUNT,
                "roc_auc": _UNIT_OR_NULL,
                "average_precision": _UNIT_OR_NULL,
            }
        ),
        "matrix": {
            "type": "array",
            "minItems": 2,
            "items": {"type": "array", "minItems": 2, "items": _NUM},
        },
    },
    **_obj(
        {
            "summary": _obj(
                {
                    "n": {"type": "integer", "minimum": 1},
                    "accuracy": _UNIT,
                    "per_class": {
                        "type": "object",
                        "minProperties": 2,
                        "additionalProperties": {"$ref": "#/$defs/class_metrics"},
                    },
                    "macro": _AVERAGES,
                    "weighted": _AVERAGES,
                    "cohen_kappa": {"type": ["number", "null"], "minimum": -1, "maximum": 1},
                    "mcc": {"type": ["number", "null"], "minimum": -1, "maximum": 1},
                    "confusion_matrix": {
                        "$ref": "#/$defs/matrix",
                        "items": {"items": {"type": "integer", "minimum": 0}},
                    },
                    "confusion_matrix_normalized": {
                        "$ref": "#/$defs/matrix",
                        "items": {"items": _UNIT},
                    },
                }
            ),
            "ci": {
                "type": "object",
                "required": ["accuracy", "macro_f1"],
                "propertyNames": {"pattern": "^(accuracy|macro_f1|sensitivity/.+|specificity/.+)$"},
                "additionalProperties": {"$ref": "#/$defs/interval"},
            },
            "bootstrap": _obj(
                {
                    "n_resamples": {"type": "integer", "minimum": 1},
                    "seed": {"type": "integer"},
                    "level": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                    "unit": {"enum": ["image", "near-copy cluster"]},
                    "clusters": {"type": "integer", "minimum": 1},
                }
            ),
            "calibration": _obj(
                {
                    **_CALIBRATION_CORE,
                    "temperature": {"type": ["number", "null"], "exclusiveMinimum": 0},
                    "scaled": {"oneOf": [{"type": "null"}, _obj(_CALIBRATION_CORE)]},
                }
            ),
            "misclassified": {
                "type": "array",
                "items": _obj(
                    {
                        "path": {"type": "string"},
                        "true": {"type": "string"},
                        "predicted": {"type": "string"},
                        "confidence": _UNIT,
                    }
                ),
            },
        }
    ),
}
"""JSON Schema (draft 2020-12) of the block evaluate_split returns; nulls mark undefined values."""


def _non_finite_paths(obj: Any, where: str = "") -> list[tuple[str, float]]:
    """Paths of NaN/inf floats, which JSON Schema counts as numbers but JSON cannot hold."""
    if isinstance(obj, Mapping):
        return [hit for k, v in obj.items() for hit in _non_finite_paths(v, f"{where}/{k}")]
    if isinstance(obj, list | tuple):
        return [hit for i, v in enumerate(obj) for hit in _non_finite_paths(v, f"{where}/{i}")]
    if isinstance(obj, float) and not math.isfinite(obj):
        return [(where or "/", obj)]
    return []


def validate_metrics_block(block: Mapping[str, Any]) -> None:
    """Raise ValueError naming the failing path if block does not match METRICS_SCHEMA."""
    validator = jsonschema.Draft202012Validator(METRICS_SCHEMA)
    errors = sorted(validator.iter_errors(block), key=lambda e: list(map(str, e.absolute_path)))
    lines = [
        f"at {where}: non-finite number {value} (undefined values must be null)"
        for where, value in _non_finite_paths(block)
    ]
    for err in errors:
        lines.append(f"at /{'/'.join(str(part) for part in err.absolute_path)}: {err.message}")
    if not lines:
        return
    shown = "\n  ".join(lines[:5])
    more = f"\n  ... and {len(lines) - 5} more" if len(lines) > 5 else ""
    raise ValueError(
        f"metrics block does not match METRICS_SCHEMA ({len(lines)} problem(s)):\n  {shown}{more}"
    )


# --- run comparison ---------------------------------------------------------------------------

_SPLIT_ORDER = ("headline", "official", "unguided")


def _block_headline(block: Any, class_names: Sequence[str]) -> dict[str, float | None]:
    """The headline numbers of one evaluation block (None where missing)."""
    rows = {
        "accuracy": dig(block, "summary", "accuracy"),
        "macro F1": dig(block, "summary", "macro", "f1"),
        "Cohen kappa": dig(block, "summary", "cohen_kappa"),
        "MCC": dig(block, "summary", "mcc"),
        "ECE": dig(block, "calibration", "ece"),
        "ECE (T-scaled)": dig(block, "calibration", "scaled", "ece"),
    }
    for name in class_names:
        rows[f"sensitivity {name}"] = dig(block, "summary", "per_class", name, "recall")
    return {
        k: (v if isinstance(v, int | float) and math.isfinite(v) else None) for k, v in rows.items()
    }


def compare_runs(a: Mapping[str, Any], b: Mapping[str, Any], name_a: str, name_b: str) -> str:
    """Return a plain-text table of headline metrics of two runs per split, with b - a.

    The text form of :func:`compare_table` (same arguments), for the terminal.
    """
    return compare_table(a, b, name_a, name_b).to_string(index=False)


def compare_table(
    a: Mapping[str, Any], b: Mapping[str, Any], name_a: str, name_b: str
) -> pd.DataFrame:
    """Headline metrics of two runs per split, with b - a, formatted as strings.

    Args:
        a: the metrics.json content of the first run; its per-split evaluation blocks are
            read from a["evaluate"] (entries holding a "summary").
        b: the metrics.json content of the second run, read the same way.
        name_a: the column heading of run a.
        name_b: the column heading of run b; when both names are equal they get " (a)" and
            " (b)" appended.

    Returns:
        One row per split and metric (accuracy, macro F1, Cohen kappa, MCC, ECE, ECE after
        temperature scaling and the sensitivity of each class), with the values of both
        runs and b - a to four decimals; "-" where a value is missing.
    """
    # Only the per-split blocks (they hold a "summary"); temperature, TTA and errors are not splits.
    eval_a = {k: v for k, v in (dig(a, "evaluate") or {}).items() if dig(v, "summary")}
    eval_b = {k: v for k, v in (dig(b, "evaluate") or {}).items() if dig(v, "summary")}
    splits = [s for s in _SPLIT_ORDER if s in eval_a or s in eval_b]
    splits += sorted((set(eval_a) | set(eval_b)) - set(splits))
    if not splits:
        splits = list(_SPLIT_ORDER)
    found = {
        c
        for ev in (eval_a, eval_b)
        for block in ev.values()
        for c in (dig(block, "summary", "per_class") or {})
    }
    class_names = [c for c in CLASS_NAMES if c in found] + sorted(found - set(CLASS_NAMES))
    if not class_names:
        class_names = list(CLASS_NAMES)

    def fmt(value: float | None, signed: bool = False) -> str:
        if value is None:
            return "-"
        return f"{value:+.4f}" if signed else f"{value:.4f}"

    col_a, col_b = (name_a, name_b) if name_a != name_b else (f"{name_a} (a)", f"{name_b} (b)")
    records = []
    for split in splits:
        head_a = _block_headline(eval_a.get(split), class_names)
        head_b = _block_headline(eval_b.get(split), class_names)
        for metric, va in head_a.items():
            vb = head_b[metric]
            diff = vb - va if va is not None and vb is not None else None
            records.append(
                {
                    "split": split,
                    "metric": metric,
                    col_a: fmt(va),
                    col_b: fmt(vb),
                    f"{col_b} - {col_a}": fmt(diff, signed=True),
                }
            )
    return pd.DataFrame.from_records(records)


# --- paired comparison of two models ----------------------------------------------------------


def _check_correct(values: Any, name: str) -> np.ndarray:
    """Return values as a 1-D bool array of right (True) / wrong (False), or raise ValueError."""
    v = np.asarray(values)
    if v.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of right/wrong flags, got shape {v.shape}")
    if v.size and not (v.dtype == np.bool_ or np.all(np.isin(v, (0, 1)))):
        raise ValueError(f"{name}: expected booleans (or 0/1), got values of dtype {v.dtype}")
    return v.astype(bool)


def mcnemar_test(correct_a: Any, correct_b: Any) -> dict[str, Any]:
    """McNemar's exact test of two classifiers judged on the same cases.

    Only the discordant cases carry evidence: b (a right, b wrong) and c (a wrong, b right).
    Under the null of equal accuracy, b given b + c is Binomial(b + c, 1/2); the p-value is
    the exact two-sided binomial one (scipy's ``binomtest``), so it needs no large-sample
    approximation however few discordant cases there are.

    Args:
        correct_a: per case, whether model a classified it correctly (booleans or 0/1).
        correct_b: the same for model b, case for case in the same order.

    Returns:
        A JSON-ready mapping: "n" (cases), "b", "c" and "p_value" (two-sided; 1.0 when there
        are no discordant cases, None when there are no cases).

    Raises:
        ValueError: the inputs are not 1-D right/wrong flags of equal length.
    """
    a = _check_correct(correct_a, "correct_a")
    b_right = _check_correct(correct_b, "correct_b")
    if a.size != b_right.size:
        raise ValueError(f"correct_b: expected {a.size} flags like correct_a, got {b_right.size}")
    b = int(np.sum(a & ~b_right))
    c = int(np.sum(~a & b_right))
    if a.size == 0:
        p_value = None
    elif b + c == 0:
        p_value = 1.0  # the models agree on every case: no evidence of a difference
    else:
        p_value = float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return {"n": int(a.size), "b": b, "c": c, "p_value": p_value}


def paired_comparison(
    y_true: Any,
    probs_a: Any,
    probs_b: Any,
    *,
    class_names: Sequence[str] = CLASS_NAMES,
    names: tuple[str, str] = ("a", "b"),
) -> dict[str, Any]:
    """Compare two models on the same images: accuracies and McNemar tests, overall and per class.

    Per class the comparison is over the images of that true class, so its accuracy is the
    model's sensitivity to the class. The per-class p-values are not corrected for testing
    K + 1 times.

    Args:
        y_true: the true class indices, shape (N,), each in [0, K).
        probs_a: the softmax probabilities of model a, shape (N, K), rows summing to 1.
        probs_b: those of model b on the same images, in the same order.
        class_names: the K class names, in the order of the columns of the probabilities.
        names: the names of the two models, used as keys of the accuracies; distinct.

    Returns:
        A JSON-ready mapping: "names" (the two names, a first); "overall" with "n",
        "accuracy" (per model name) and "mcnemar" (:func:`mcnemar_test`, b counting the
        images only model a gets right); "per_class", per class name the same over the
        images of that class (accuracies None and p_value None when it has none).

    Raises:
        ValueError: y_true, probs_a or probs_b is invalid (as in
            :func:`classification_summary`), or names is not two distinct strings.
    """
    if len(names) != 2 or names[0] == names[1]:
        raise ValueError(f"names: expected two distinct model names, got {names!r}")
    name_a, name_b = (str(n) for n in names)
    y, p_a = _check_inputs(y_true, probs_a, class_names)
    _, p_b = _check_inputs(y, probs_b, class_names)
    right_a = p_a.argmax(axis=1) == y
    right_b = p_b.argmax(axis=1) == y

    def compare(among: np.ndarray) -> dict[str, Any]:
        n = int(among.sum())
        return {
            "n": n,
            "accuracy": {
                name_a: float(right_a[among].mean()) if n else None,
                name_b: float(right_b[among].mean()) if n else None,
            },
            "mcnemar": mcnemar_test(right_a[among], right_b[among]),
        }

    return _jsonable(
        {
            "names": [name_a, name_b],
            "overall": compare(np.ones_like(right_a)),
            "per_class": {name: compare(y == j) for j, name in enumerate(class_names)},
        }
    )


def paired_table(comparison: Mapping[str, Any]) -> pd.DataFrame:
    """A :func:`paired_comparison` as a table: one row per class, then "overall".

    Args:
        comparison: the mapping :func:`paired_comparison` returns.

    Returns:
        Columns "n", "accuracy <a>", "accuracy <b>", "only <a> right" (McNemar's b), "only
        <b> right" (c) and "McNemar p", where <a> and <b> are the model names.
    """
    name_a, name_b = comparison["names"]
    rows = {**comparison["per_class"], "overall": comparison["overall"]}
    return pd.DataFrame.from_dict(
        {
            label: {
                "n": row["n"],
                f"accuracy {name_a}": row["accuracy"][name_a],
                f"accuracy {name_b}": row["accuracy"][name_b],
                f"only {name_a} right": row["mcnemar"]["b"],
                f"only {name_b} right": row["mcnemar"]["c"],
                "McNemar p": row["mcnemar"]["p_value"],
            }
            for label, row in rows.items()
        },
        orient="index",
    )
