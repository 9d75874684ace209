"""One held-out split's evaluation block: metrics, intervals, calibration and mistakes together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from brainmri.config import CLASS_NAMES
from brainmri.evaluation._checks import _check_inputs, _jsonable
from brainmri.evaluation.calibration import brier_score, nll, reliability_curve, softmax
from brainmri.evaluation.classification import classification_summary, error_analysis
from brainmri.evaluation.intervals import _exact_where_small, bootstrap_ci
from brainmri.evaluation.schema import validate_metrics_block

__all__ = ["evaluate_split"]


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
    the "method" that made it; see below) with "bootstrap" settings, "calibration"
    (ece/brier/nll/reliability, plus "temperature" and the same after scaling in "scaled"
    when a temperature is given, else both None) and "misclassified" (every wrong case, most
    confident first).

    Args:
        y_true: the true class indices, shape (N,), each in [0, K).
        probs: the softmax probabilities, shape (N, K), rows summing to 1.
        logits: the pre-softmax scores, shape (N, K); needed only with a temperature, else
            may be None.
        paths: one image path per case, listed in "misclassified".
        n_resamples: the number of bootstrap resamples of the intervals.
        seed: the seed of the bootstrap.
        n_bins: the number of equal-width confidence bins of the reliability curve and ECE.
        temperature: the temperature fitted on validation
            (:func:`~brainmri.evaluation.fit_temperature`), or None to skip the scaled
            calibration.
        class_names: the K class names, in the order of the columns of probs.
        level: the confidence level of the intervals, in (0, 1).
        groups: the near-copy cluster of each case, for a cluster bootstrap (see
            :func:`~brainmri.evaluation.bootstrap_ci`); None resamples images.

    The intervals of accuracy and of each class's sensitivity and specificity also carry
    "successes" and "n" (the cases right and the cases the proportion is over; with groups,
    "clusters": the near-copy clusters among those cases). Where the bootstrap cannot be
    trusted, namely the proportion is over fewer than 30 independent cases (images, or
    clusters with groups), all or none of them are right, or the bootstrap interval is
    degenerate (low == high), the interval is the Clopper-Pearson one instead
    (:func:`~brainmri.evaluation.clopper_pearson_interval`; with groups over the clusters,
    keeping the proportion), and its "method" is "clopper_pearson"; else "method" is
    "bootstrap" (or "cluster_bootstrap" with groups). Macro F1 keeps its bootstrap interval.

    Returns:
        The block with the keys above; undefined values are None. It is checked against
        METRICS_SCHEMA before it is returned.

    Raises:
        ValueError: y_true or probs is invalid (as in
            :func:`~brainmri.evaluation.classification_summary`), paths does not hold one
            path per case, logits is missing or of another shape than probs while a
            temperature is given, or n_resamples, n_bins, level or temperature is out of
            range.
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
