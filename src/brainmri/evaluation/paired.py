"""Two models on the same images: McNemar's exact test, overall and per class."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest

from brainmri.config import CLASS_NAMES
from brainmri.evaluation._checks import _check_inputs, _jsonable

__all__ = ["mcnemar_test", "paired_comparison"]


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
            :func:`~brainmri.evaluation.classification_summary`), or names is not two
            distinct strings.
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
