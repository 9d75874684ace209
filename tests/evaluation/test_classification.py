"""brainmri.evaluation.classification against scikit-learn: summary metrics, curves, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from brainmri import evaluation as ev
from brainmri.config import CLASS_NAMES

K = len(CLASS_NAMES)


def test_summary_agrees_with_sklearn(noisy_case):
    y, p = noisy_case(400, seed=1)
    pred = p.argmax(axis=1)
    labels = list(range(K))
    s = ev.classification_summary(y, p)

    prec, rec, f1, sup = skm.precision_recall_fscore_support(
        y, pred, labels=labels, zero_division=0
    )
    assert s["n"] == 400
    assert s["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    for k, name in enumerate(CLASS_NAMES):
        pc = s["per_class"][name]
        assert pc["precision"] == pytest.approx(prec[k])
        assert pc["recall"] == pytest.approx(rec[k])
        assert pc["f1"] == pytest.approx(f1[k])
        assert pc["support"] == sup[k]
        assert pc["roc_auc"] == pytest.approx(skm.roc_auc_score(y == k, p[:, k]))
        assert pc["average_precision"] == pytest.approx(
            skm.average_precision_score(y == k, p[:, k])
        )
    for avg in ("macro", "weighted"):
        ref = skm.precision_recall_fscore_support(
            y, pred, labels=labels, average=avg, zero_division=0
        )
        assert s[avg]["precision"] == pytest.approx(ref[0])
        assert s[avg]["recall"] == pytest.approx(ref[1])
        assert s[avg]["f1"] == pytest.approx(ref[2])
    macro_auc = skm.roc_auc_score(y, p.astype(np.float64), multi_class="ovr", average="macro")
    assert np.mean([s["per_class"][c]["roc_auc"] for c in CLASS_NAMES]) == pytest.approx(macro_auc)
    assert s["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred))
    assert s["mcc"] == pytest.approx(skm.matthews_corrcoef(y, pred))
    cm = skm.confusion_matrix(y, pred, labels=labels)
    assert s["confusion_matrix"] == cm.tolist()
    np.testing.assert_allclose(s["confusion_matrix_normalized"], cm / cm.sum(axis=1, keepdims=True))


def test_specificity_hand_example_and_zero_support_class():
    # Only glioma (0) and meningioma (1) occur; predictions: 3/4 glioma right, 4/6 meningioma right.
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    pred = np.array([0, 0, 0, 1, 1, 1, 1, 1, 0, 0])
    p = np.full((10, K), 0.1)
    p[np.arange(10), pred] = 0.7
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing class must not spam warnings
        s = ev.classification_summary(y, p)
    pc = s["per_class"]
    # glioma: negatives are the 6 meningiomas, 2 of them called glioma -> TN 4, FP 2.
    assert pc["glioma"]["specificity"] == pytest.approx(4 / 6)
    # meningioma: negatives are the 4 gliomas, 1 called meningioma -> TN 3, FP 1.
    assert pc["meningioma"]["specificity"] == pytest.approx(3 / 4)
    assert pc["notumor"]["specificity"] == 1.0 and pc["pituitary"]["specificity"] == 1.0
    assert s["macro"]["specificity"] == pytest.approx((4 / 6 + 3 / 4 + 1 + 1) / 4)
    assert s["weighted"]["specificity"] == pytest.approx(0.4 * 4 / 6 + 0.6 * 3 / 4)
    assert pc["notumor"]["support"] == 0
    assert pc["notumor"]["roc_auc"] is None and pc["notumor"]["average_precision"] is None
    assert pc["notumor"]["recall"] == 0.0
    assert s["confusion_matrix_normalized"][2] == [0.0, 0.0, 0.0, 0.0]


def test_roc_pr_curves_match_sklearn_and_skip_absent_class(noisy_case):
    y, p = noisy_case(200, seed=2)
    curves = ev.roc_pr_curves(y, p)
    assert list(curves) == list(CLASS_NAMES)
    fpr, tpr, _ = skm.roc_curve(y == 1, p[:, 1].astype(np.float64))
    prec, rec, _ = skm.precision_recall_curve(y == 1, p[:, 1].astype(np.float64))
    np.testing.assert_allclose(curves["meningioma"]["fpr"], fpr)
    np.testing.assert_allclose(curves["meningioma"]["tpr"], tpr)
    np.testing.assert_allclose(curves["meningioma"]["precision"], prec, rtol=1e-6)
    np.testing.assert_allclose(curves["meningioma"]["recall"], rec)
    y_missing = np.where(y == 3, 0, y)
    assert ev.roc_pr_curves(y_missing, p)["pituitary"]["fpr"] == []


def test_bad_inputs_raise_clear_errors(noisy_case):
    y, p = noisy_case(20, seed=3)
    with pytest.raises(ValueError, match="probs: rows must sum to 1"):
        ev.classification_summary(y, p * 3)
    with pytest.raises(ValueError, match=r"y_true: class indices must lie in \[0, 3\]"):
        ev.classification_summary(np.where(y == 0, 7, y), p)
    with pytest.raises(ValueError, match=r"probs: expected shape \(20, 4\)"):
        ev.classification_summary(y, p[:, :3])
    with pytest.raises(ValueError, match="paths: expected 20 paths"):
        ev.error_analysis(y, p, ["a.jpg"], k=2)


def test_error_analysis_orders_mistakes_and_unsure_cases():
    y = np.array([0, 1, 2, 3, 0, 1])
    p = np.array(
        [
            [0.10, 0.80, 0.05, 0.05],  # wrong, 0.80
            [0.95, 0.03, 0.01, 0.01],  # wrong, 0.95
            [0.10, 0.10, 0.60, 0.20],  # right, 0.60
            [0.30, 0.20, 0.10, 0.40],  # right, 0.40
            [0.90, 0.05, 0.03, 0.02],  # right, 0.90
            [0.20, 0.20, 0.55, 0.05],  # wrong, 0.55
        ]
    )
    paths = [f"case{i}.jpg" for i in range(6)]
    out = ev.error_analysis(y, p, paths, k=2)
    mistakes, unsure = out["confident_mistakes"], out["unsure_correct"]
    assert mistakes["path"].tolist() == ["case1.jpg", "case0.jpg"]
    assert mistakes["true"].tolist() == ["meningioma", "glioma"]
    assert mistakes["predicted"].tolist() == ["glioma", "meningioma"]
    assert mistakes["confidence"].tolist() == pytest.approx([0.95, 0.80])
    assert unsure["path"].tolist() == ["case3.jpg", "case2.jpg"]
    assert list(mistakes.columns) == [
        "path",
        "true",
        "predicted",
        "confidence",
        *[f"prob_{c}" for c in CLASS_NAMES],
    ]
    assert mistakes["prob_meningioma"].tolist() == pytest.approx([0.03, 0.80])
    assert len(ev.error_analysis(y, p, paths, k=10)["confident_mistakes"]) == 3
