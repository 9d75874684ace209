"""brainmri.evaluation.paired: McNemar's exact test and the paired comparison of two models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brainmri import evaluation as ev
from brainmri.config import CLASS_NAMES

K = len(CLASS_NAMES)


def test_mcnemar_exact_p_values():
    # b = 10 (a right, b wrong), c = 0: p = 2 * P(X = 10 | Binomial(10, 1/2)).
    a = np.array([True] * 10 + [True] * 5 + [False] * 3)
    b = np.array([False] * 10 + [True] * 5 + [False] * 3)
    assert ev.mcnemar_test(a, b) == {"n": 18, "b": 10, "c": 0, "p_value": pytest.approx(2 / 1024)}
    # b = 3, c = 1: P(X <= 1 or X >= 3 | Binomial(4, 1/2)) = (1 + 4 + 4 + 1) / 16.
    a = [1, 1, 1, 0, 1, 0]
    b = [0, 0, 0, 1, 1, 0]
    assert ev.mcnemar_test(a, b) == {"n": 6, "b": 3, "c": 1, "p_value": pytest.approx(10 / 16)}
    assert ev.mcnemar_test(b, a) == {"n": 6, "b": 1, "c": 3, "p_value": pytest.approx(10 / 16)}
    assert ev.mcnemar_test([1, 0, 1], [1, 0, 1])["p_value"] == 1.0  # no discordant pair
    assert ev.mcnemar_test([], [])["p_value"] is None
    with pytest.raises(ValueError, match="expected 3 flags"):
        ev.mcnemar_test([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="correct_a: expected booleans"):
        ev.mcnemar_test([0.5, 1], [1, 1])


def test_paired_comparison_hand_example():
    # glioma 4 images: a 4/4, b 2/4; meningioma 4: a 2/4, b 4/4; notumor 2: a 2/2, b 0/2;
    # pituitary: none.
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    pred_a = np.array([0, 0, 0, 0, 1, 1, 0, 3, 2, 2])
    pred_b = np.array([0, 0, 1, 3, 1, 1, 1, 1, 0, 3])
    probs_a, probs_b = (np.where(np.eye(K)[pred] == 1, 0.7, 0.1) for pred in (pred_a, pred_b))
    out = ev.paired_comparison(y, probs_a, probs_b, class_names=CLASS_NAMES, names=("old", "new"))
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert out["names"] == ["old", "new"]
    assert out["overall"] == {
        "n": 10,
        "accuracy": {"old": pytest.approx(0.8), "new": pytest.approx(0.6)},
        # b = 2 glioma + 2 notumor, c = 2 meningioma: 2 * P(X >= 4 | Binomial(6, 1/2)) = 44/64
        "mcnemar": {"n": 10, "b": 4, "c": 2, "p_value": pytest.approx(44 / 64)},
    }
    pc = out["per_class"]
    assert pc["glioma"]["accuracy"] == {"old": 1.0, "new": 0.5}
    assert pc["glioma"]["mcnemar"] == {"n": 4, "b": 2, "c": 0, "p_value": pytest.approx(0.5)}
    assert pc["meningioma"]["accuracy"] == {"old": 0.5, "new": 1.0}
    assert pc["meningioma"]["mcnemar"] == {"n": 4, "b": 0, "c": 2, "p_value": pytest.approx(0.5)}
    assert pc["notumor"]["mcnemar"] == {"n": 2, "b": 2, "c": 0, "p_value": pytest.approx(0.5)}
    assert pc["pituitary"] == {
        "n": 0,
        "accuracy": {"old": None, "new": None},
        "mcnemar": {"n": 0, "b": 0, "c": 0, "p_value": None},
    }
    # Per-class accuracy is the sensitivity of classification_summary.
    for name in CLASS_NAMES[:3]:
        recall = ev.classification_summary(y, probs_b)["per_class"][name]["recall"]
        assert pc[name]["accuracy"]["new"] == pytest.approx(recall)

    with pytest.raises(ValueError, match="names: expected two distinct"):
        ev.paired_comparison(y, probs_a, probs_b, names=("m", "m"))
    with pytest.raises(ValueError, match=r"probs: expected shape \(10, 4\)"):
        ev.paired_comparison(y, probs_a, probs_b[:5])
