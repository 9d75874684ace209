"""Figures of the held-out evaluation: confusion matrices, ROC/PR, reliability, CI forest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from brainmri.config import CLASS_NAMES

__all__ = ["plot_ci_forest", "plot_confusion_matrices", "plot_reliability", "plot_roc_pr"]


def _require_keys(mapping: Mapping[str, Any], keys: Sequence[str], what: str) -> None:
    """Raise ValueError naming the missing keys of an input dictionary."""
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise ValueError(f"{what}: missing key(s) {missing}; expected {list(keys)}")


def plot_confusion_matrices(
    summary: Mapping[str, Any], class_names: Sequence[str] = CLASS_NAMES
) -> Figure:
    """Return counts and row-normalised confusion matrices side by side as annotated heatmaps.

    Args:
        summary: a classification summary (``evaluation.classification_summary``, or the
            "summary" of an evaluation block) holding "confusion_matrix" and
            "confusion_matrix_normalized", each K x K with true classes as rows.
        class_names: the K class names labelling the rows and columns.

    Returns:
        A figure of two heatmaps: counts, and rows normalised to 1 (recall on the diagonal).

    Raises:
        ValueError: a matrix is missing or not K x K.
    """
    _require_keys(summary, ["confusion_matrix", "confusion_matrix_normalized"], "summary")
    counts = np.asarray(summary["confusion_matrix"], dtype=int)
    normed = np.asarray(summary["confusion_matrix_normalized"], dtype=float)
    k = len(class_names)
    if counts.shape != (k, k) or normed.shape != (k, k):
        raise ValueError(
            f"summary: confusion matrices of shape {counts.shape}/{normed.shape} do not match "
            f"{k} class names"
        )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), constrained_layout=True)
    panels = [
        (counts, "d", "Counts", None),
        (normed, ".2f", "Row-normalised (recall on the diagonal)", (0.0, 1.0)),
    ]
    for ax, (matrix, fmt, title, limits) in zip(axes, panels, strict=True):
        vmin, vmax = limits if limits else (None, None)
        sns.heatmap(
            matrix,
            ax=ax,
            annot=True,
            fmt=fmt,
            cmap="Blues",
            cbar=False,
            square=True,
            vmin=vmin,
            vmax=vmax,
            xticklabels=list(class_names),
            yticklabels=list(class_names),
        )
        ax.set_title(title)
        ax.set_xlabel("Predicted")
        ax.set_ylabel("True")
    return fig


def plot_roc_pr(
    curves: Mapping[str, Mapping[str, Sequence[float]]], summary: Mapping[str, Any]
) -> Figure:
    """Return one-vs-rest ROC and precision-recall curves per class, AUC/AP in the legends.

    Args:
        curves: per class name, the lists "fpr", "tpr", "precision" and "recall", as
            ``evaluation.roc_pr_curves`` returns them; a class with empty lists (absent from
            the split) is not drawn.
        summary: a classification summary whose "per_class" entries give each class's
            "roc_auc" and "average_precision" for the legends ("n/a" where None or missing).

    Returns:
        A figure of two panels: ROC curves with the chance diagonal, and precision-recall
        curves.

    Raises:
        ValueError: summary has no "per_class", or a curve lacks one of its four lists.
    """
    _require_keys(summary, ["per_class"], "summary")
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(11, 4.6), constrained_layout=True)
    for name, curve in curves.items():
        _require_keys(curve, ["fpr", "tpr", "precision", "recall"], f"curves['{name}']")
        if not len(curve["fpr"]):
            continue  # class absent from the split: no curve is defined
        stats = summary["per_class"].get(name, {})
        auc, ap = stats.get("roc_auc"), stats.get("average_precision")
        auc_txt = f"{auc:.3f}" if auc is not None else "n/a"
        ap_txt = f"{ap:.3f}" if ap is not None else "n/a"
        ax_roc.plot(curve["fpr"], curve["tpr"], label=f"{name} (AUC {auc_txt})")
        ax_pr.step(curve["recall"], curve["precision"], where="post", label=f"{name} (AP {ap_txt})")
    ax_roc.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax_roc.set(xlabel="False positive rate", ylabel="Sensitivity", title="ROC (one-vs-rest)")
    ax_pr.set(xlabel="Recall", ylabel="Precision", title="Precision-recall (one-vs-rest)")
    for ax in (ax_roc, ax_pr):
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize="small")
    return fig


def _reliability_panel(ax: Any, curve: Mapping[str, Any], title: str) -> None:
    """Draw one reliability diagram (accuracy bars against the diagonal) on ax."""
    _require_keys(
        curve, ["bin_centers", "accuracy", "confidence", "count", "ece"], "reliability curve"
    )
    centers = np.asarray(curve["bin_centers"], dtype=float)
    acc = np.array([np.nan if a is None else a for a in curve["accuracy"]], dtype=float)
    conf = np.array([np.nan if c is None else c for c in curve["confidence"]], dtype=float)
    width = 1.0 / len(centers)
    filled = np.isfinite(acc)
    ax.bar(centers[filled], acc[filled], width=width, edgecolor="black", label="accuracy")
    ax.bar(
        centers[filled],
        conf[filled] - acc[filled],
        bottom=acc[filled],
        width=width,
        color="red",
        alpha=0.3,
        edgecolor="red",
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="Confidence (top label)", ylabel="Accuracy")
    ax.set_title(f"{title}: ECE {curve['ece']:.3f} (n={int(np.sum(curve['count']))})")
    ax.legend(loc="upper left", fontsize="small")


def plot_reliability(before: Mapping[str, Any], after: Mapping[str, Any] | None = None) -> Figure:
    """Return reliability diagrams before (and, if given, after) temperature scaling.

    Args:
        before: a reliability curve as ``evaluation.reliability_curve`` returns it (keys
            "bin_centers", "accuracy", "confidence", "count" and "ece"; empty bins hold None),
            e.g. ``block["calibration"]["reliability"]``.
        after: the same curve after temperature scaling, or None for one panel only.

    Returns:
        A figure of one or two panels: accuracy bars per confidence bin, the gap to the
        bin's mean confidence in red, and the diagonal of perfect calibration; each title
        gives the ECE and the number of cases.

    Raises:
        ValueError: a curve lacks one of its keys.
    """
    panels = [(before, "Before temperature scaling" if after is not None else "Reliability")]
    if after is not None:
        panels.append((after, "After temperature scaling"))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.2 * len(panels), 4.8), constrained_layout=True, squeeze=False
    )
    for ax, (curve, title) in zip(axes[0], panels, strict=True):
        _reliability_panel(ax, curve, title)
    return fig


def plot_ci_forest(ci: Mapping[str, Mapping[str, float | None]]) -> Figure:
    """Return a forest plot: point estimate and bootstrap interval per metric.

    Args:
        ci: per metric name, its "point", "low" and "high", as ``evaluation.bootstrap_ci``
            returns them. A metric whose point is None keeps its row empty; one without an
            interval is drawn as a point alone.

    Returns:
        A figure with one row per metric, in the order given, on an x axis from 0 to 1.02.

    Raises:
        ValueError: ci is empty, or a metric lacks "point", "low" or "high".
    """
    if not ci:
        raise ValueError("ci: expected at least one metric with point/low/high")
    names = list(ci)
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(names) + 1.2), constrained_layout=True)
    for row, name in enumerate(names):
        _require_keys(ci[name], ["point", "low", "high"], f"ci['{name}']")
        point, low, high = (ci[name][key] for key in ("point", "low", "high"))
        if point is None:
            continue  # undefined (e.g. a class absent from the split)
        if low is not None and high is not None:
            ax.errorbar(
                point,
                row,
                xerr=[[point - low], [high - point]],
                fmt="o",
                color="C0",
                capsize=3,
            )
        else:
            ax.plot(point, row, "o", color="C0")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("Estimate with bootstrap interval")
    ax.grid(axis="x", alpha=0.3)
    return fig


def plot_guard_scores(parts: Mapping[str, Mapping[str, np.ndarray]], threshold: float) -> Figure:
    """Where each group of images falls on the OOD guard's feature distance.

    Args:
        parts: group name (validation, headline test, a probe kind) mapped to its ``combined``
            scores (``brainmri.ood.report.combined``: +inf where the input gate refused it).
        threshold: the feature distance above which an image is flagged.

    Returns:
        One row per group: its finite distances as dots on a log axis, the threshold as a
        dashed line, and beside each row the share the gate refused and the share flagged.
    """
    names = list(parts)
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(names) + 1.2), constrained_layout=True)
    finite = np.concatenate([np.asarray(p["combined"], float) for p in parts.values()])
    finite = finite[np.isfinite(finite) & (finite > 0)]
    low = max(finite.min() if finite.size else threshold / 10, threshold / 1e3)
    rng = np.random.default_rng(0)
    for row, name in enumerate(names):
        values = np.asarray(parts[name]["combined"], float)
        shown = values[np.isfinite(values)]
        jitter = row + rng.uniform(-0.25, 0.25, len(shown))
        ax.scatter(np.maximum(shown, low), jitter, s=6, alpha=0.5, color="C0")
        refused = float(np.isinf(values).mean()) if values.size else float("nan")
        flagged = float((values > threshold).mean()) if values.size else 0  # +inf: refused
        ax.text(1.01, row, f"gate {refused:.0%}, flagged {flagged:.0%} (n={values.size})",
                transform=ax.get_yaxis_transform(), va="center", fontsize=8)  # fmt: skip
    ax.axvline(threshold, color="black", linestyle="--", label="threshold (validation)")
    ax.set_xscale("log")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("feature distance (higher: less like the training slices)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Out-of-distribution guard: where each kind of image falls")
    return fig
