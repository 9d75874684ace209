"""Discrimination of one split: summary metrics, one-vs-rest ROC/PR curves and error lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    cohen_kappa_score,
    confusion_matrix,
    matthews_corrcoef,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from brainmri.config import CLASS_NAMES
from brainmri.evaluation._checks import _check_inputs, _num

__all__ = ["classification_summary", "error_analysis", "roc_pr_curves"]


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
