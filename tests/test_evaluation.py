"""Tests of brainmri.evaluation and brainmri.plotting.evaluation against scikit-learn."""

from __future__ import annotations

import copy
import json
import re
import warnings

import jsonschema
import matplotlib
import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_recall_curve,
    precision_recall_fscore_support,
    recall_score,
    roc_auc_score,
    roc_curve,
)

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from brainmri import evaluation as ev  # noqa: E402
from brainmri.config import CLASS_NAMES  # noqa: E402
from brainmri.plotting import evaluation as plots  # noqa: E402

K = len(CLASS_NAMES)


def _noisy_case(n: int, seed: int, sharpness: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and float32 softmax outputs of a mediocre classifier (fixed seed)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, size=n)
    logits = rng.normal(size=(n, K)) * sharpness
    logits[np.arange(n), y] += 2.0
    return y, ev.softmax(logits).astype(np.float32)


def _calibrated_case(n: int, seed: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels sampled from softmax(logits): calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, K)) * 2.0
    p = ev.softmax(logits)
    u = rng.random(n)[:, None]
    y = (u > np.cumsum(p, axis=1)).sum(axis=1)
    return logits * scale, np.minimum(y, K - 1)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --- discrimination ---------------------------------------------------------------------------


def test_summary_agrees_with_sklearn():
    y, p = _noisy_case(400, seed=1)
    pred = p.argmax(axis=1)
    labels = list(range(K))
    s = ev.classification_summary(y, p)

    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    assert s["n"] == 400
    assert s["accuracy"] == pytest.approx(accuracy_score(y, pred))
    for k, name in enumerate(CLASS_NAMES):
        pc = s["per_class"][name]
        assert pc["precision"] == pytest.approx(prec[k])
        assert pc["recall"] == pytest.approx(rec[k])
        assert pc["f1"] == pytest.approx(f1[k])
        assert pc["support"] == sup[k]
        assert pc["roc_auc"] == pytest.approx(roc_auc_score(y == k, p[:, k]))
        assert pc["average_precision"] == pytest.approx(average_precision_score(y == k, p[:, k]))
    for avg in ("macro", "weighted"):
        ref = precision_recall_fscore_support(y, pred, labels=labels, average=avg, zero_division=0)
        assert s[avg]["precision"] == pytest.approx(ref[0])
        assert s[avg]["recall"] == pytest.approx(ref[1])
        assert s[avg]["f1"] == pytest.approx(ref[2])
    macro_auc = roc_auc_score(y, p.astype(np.float64), multi_class="ovr", average="macro")
    assert np.mean([s["per_class"][c]["roc_auc"] for c in CLASS_NAMES]) == pytest.approx(macro_auc)
    assert s["cohen_kappa"] == pytest.approx(cohen_kappa_score(y, pred))
    assert s["mcc"] == pytest.approx(matthews_corrcoef(y, pred))
    cm = confusion_matrix(y, pred, labels=labels)
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


def test_roc_pr_curves_match_sklearn_and_skip_absent_class():
    y, p = _noisy_case(200, seed=2)
    curves = ev.roc_pr_curves(y, p)
    assert list(curves) == list(CLASS_NAMES)
    fpr, tpr, _ = roc_curve(y == 1, p[:, 1].astype(np.float64))
    prec, rec, _ = precision_recall_curve(y == 1, p[:, 1].astype(np.float64))
    np.testing.assert_allclose(curves["meningioma"]["fpr"], fpr)
    np.testing.assert_allclose(curves["meningioma"]["tpr"], tpr)
    np.testing.assert_allclose(curves["meningioma"]["precision"], prec, rtol=1e-6)
    np.testing.assert_allclose(curves["meningioma"]["recall"], rec)
    y_missing = np.where(y == 3, 0, y)
    assert ev.roc_pr_curves(y_missing, p)["pituitary"]["fpr"] == []


def test_bad_inputs_raise_clear_errors():
    y, p = _noisy_case(20, seed=3)
    with pytest.raises(ValueError, match="probs: rows must sum to 1"):
        ev.classification_summary(y, p * 3)
    with pytest.raises(ValueError, match=r"y_true: class indices must lie in \[0, 3\]"):
        ev.classification_summary(np.where(y == 0, 7, y), p)
    with pytest.raises(ValueError, match=r"probs: expected shape \(20, 4\)"):
        ev.classification_summary(y, p[:, :3])
    with pytest.raises(ValueError, match="paths: expected 20 paths"):
        ev.error_analysis(y, p, ["a.jpg"], k=2)


# --- bootstrap --------------------------------------------------------------------------------


def _predictions_with_error_rate(n: int, error_rate: float, seed: int) -> tuple[np.ndarray, ...]:
    """Balanced labels and predictions with exactly round(n * error_rate) mistakes."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    pred = y.copy()
    wrong = rng.choice(n, size=round(n * error_rate), replace=False)
    pred[wrong] = (y[wrong] + rng.integers(1, K, size=wrong.size)) % K
    return y, pred


def test_bootstrap_points_match_sklearn_and_interval_contains_point():
    y, pred = _predictions_with_error_rate(300, 0.2, seed=4)
    ci = ev.bootstrap_ci(y, pred, n_resamples=500, seed=0)
    assert ci["accuracy"]["point"] == pytest.approx(accuracy_score(y, pred))
    assert ci["macro_f1"]["point"] == pytest.approx(
        f1_score(y, pred, average="macro", labels=list(range(K)), zero_division=0)
    )
    sens = recall_score(y, pred, average=None, labels=list(range(K)))
    for k, name in enumerate(CLASS_NAMES):
        assert ci[f"sensitivity/{name}"]["point"] == pytest.approx(sens[k])
        # Specificity is the recall of "not this class" in the one-vs-rest problem.
        spec = recall_score(y != k, pred != k)
        assert ci[f"specificity/{name}"]["point"] == pytest.approx(spec)
    for entry in ci.values():
        assert entry["low"] <= entry["point"] <= entry["high"]
        assert entry["low"] < entry["high"]


def test_bootstrap_percentiles_equal_a_slow_sklearn_loop():
    y, pred = _predictions_with_error_rate(60, 0.25, seed=5)
    n_resamples, seed = 200, 11
    ci = ev.bootstrap_ci(y, pred, n_resamples=n_resamples, seed=seed)
    idx = np.random.default_rng(seed).integers(0, y.size, size=(n_resamples, y.size))
    acc = [accuracy_score(y[i], pred[i]) for i in idx]
    spec = [recall_score(y[i] != 0, pred[i] != 0) for i in idx]
    mf1 = [
        f1_score(y[i], pred[i], average="macro", labels=list(range(K)), zero_division=0)
        for i in idx
    ]
    assert [ci["accuracy"]["low"], ci["accuracy"]["high"]] == pytest.approx(
        np.percentile(acc, [2.5, 97.5])
    )
    assert [ci["macro_f1"]["low"], ci["macro_f1"]["high"]] == pytest.approx(
        np.percentile(mf1, [2.5, 97.5])
    )
    name = CLASS_NAMES[0]
    assert [ci[f"specificity/{name}"]["low"], ci[f"specificity/{name}"]["high"]] == pytest.approx(
        np.percentile(spec, [2.5, 97.5])
    )


def test_bootstrap_narrows_with_more_cases_and_is_seeded():
    small = ev.bootstrap_ci(*_predictions_with_error_rate(100, 0.15, 6), n_resamples=2000, seed=1)
    large = ev.bootstrap_ci(*_predictions_with_error_rate(2000, 0.15, 6), n_resamples=2000, seed=1)
    for key in ("accuracy", "macro_f1", "sensitivity/glioma"):
        width_small = small[key]["high"] - small[key]["low"]
        width_large = large[key]["high"] - large[key]["low"]
        assert width_large < width_small / 2, key  # ~ 1/sqrt(20) in theory
    y, pred = _predictions_with_error_rate(150, 0.2, seed=7)
    a = ev.bootstrap_ci(y, pred, n_resamples=300, seed=42)
    b = ev.bootstrap_ci(y, pred, n_resamples=300, seed=42)
    c = ev.bootstrap_ci(y, pred, n_resamples=300, seed=43)
    assert a == b
    assert a != c


# --- calibration ------------------------------------------------------------------------------


def test_ece_small_when_calibrated_and_large_when_overconfident():
    logits, y = _calibrated_case(20000, seed=8)
    assert ev.expected_calibration_error(y, ev.softmax(logits), n_bins=15) < 0.02
    assert ev.expected_calibration_error(y, ev.softmax(logits * 5), n_bins=15) > 0.1


def test_reliability_curve_matches_sklearn_calibration_curve():
    logits, y = _calibrated_case(3000, seed=9)
    p = ev.softmax(logits * 2)
    curve = ev.reliability_curve(y, p, n_bins=10)
    correct = (p.argmax(axis=1) == y).astype(int)
    prob_true, prob_pred = calibration_curve(correct, p.max(axis=1), n_bins=10)
    filled = [a is not None for a in curve["accuracy"]]
    np.testing.assert_allclose(np.array(curve["accuracy"])[filled].astype(float), prob_true)
    np.testing.assert_allclose(np.array(curve["confidence"])[filled].astype(float), prob_pred)
    assert sum(curve["count"]) == 3000
    assert curve["accuracy"][0] is None  # top-label confidence of 4 classes is never < 0.1
    counts = np.array(curve["count"])
    gaps = np.abs(prob_true - prob_pred)
    assert curve["ece"] == pytest.approx(np.sum(counts[filled] * gaps) / 3000)


def test_brier_and_nll_follow_their_definitions():
    y, p = _noisy_case(300, seed=10)
    p64 = p.astype(np.float64) / p.sum(axis=1, keepdims=True)
    onehot = np.eye(K)[y]
    assert ev.brier_score(y, p) == pytest.approx(np.mean(np.sum((p64 - onehot) ** 2, axis=1)))
    assert ev.nll(y, p) == pytest.approx(-np.mean(np.log(p64[np.arange(300), y])))
    assert ev.brier_score(y, np.eye(K)[y]) == 0.0


def test_softmax_is_stable_for_large_logits():
    z = np.array([[1000.0, 0.0, -1000.0, 999.0], [-800.0, -800.0, -800.0, -800.0]])
    p = ev.softmax(z)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], [1 / (1 + np.exp(-1)), 0, 0, np.exp(-1) / (1 + np.exp(-1))])
    np.testing.assert_allclose(p[1], 0.25)
    np.testing.assert_allclose(ev.softmax(z, temperature=1000.0), ev.softmax(z / 1000.0))
    with pytest.raises(ValueError, match="temperature"):
        ev.softmax(z, temperature=0.0)


def test_temperature_scaling_recovers_temperature_and_lowers_nll():
    logits, y = _calibrated_case(5000, seed=11)
    overconfident = logits * 5
    t = ev.fit_temperature(overconfident, y)
    assert t == pytest.approx(5.0, rel=0.1)
    before = ev.nll(y, ev.softmax(overconfident))
    after = ev.nll(y, ev.softmax(overconfident, temperature=t))
    assert after < before * 0.8
    assert ev.fit_temperature(logits, y) == pytest.approx(1.0, rel=0.1)


def test_fit_temperature_refuses_a_bound_when_validation_is_separable():
    y = np.arange(40) % 4
    logits = np.eye(4)[y] * 3.0  # every case right with a margin: NLL falls as T -> 0
    with pytest.warns(RuntimeWarning, match="every validation case"):
        assert ev.fit_temperature(logits, y) == 1.0


# --- errors -----------------------------------------------------------------------------------


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


# --- the evaluation block ---------------------------------------------------------------------


def _block(seed: int, temperature: float | None = 1.7, missing_class: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, size=150)
    if missing_class:
        y[y == 2] = 0
    logits = rng.normal(size=(150, K)) * 3
    logits[np.arange(150), y] += 2.5
    paths = [f"Testing/{CLASS_NAMES[c]}/img{i}.jpg" for i, c in enumerate(y)]
    return ev.evaluate_split(
        y,
        ev.softmax(logits).astype(np.float32),
        logits,
        paths,
        n_resamples=200,
        seed=0,
        n_bins=10,
        temperature=temperature,
    )


def test_report_tables_read_the_blocks():
    blocks = {"official": _block(12), "dedup": _block(13)}
    head = ev.headline_table(blocks)
    assert list(head.columns) == ["official", "dedup"]
    assert head.loc["accuracy", "dedup"] == blocks["dedup"]["summary"]["accuracy"]
    low, high = (
        blocks["official"]["ci"]["accuracy"]["low"],
        blocks["official"]["ci"]["accuracy"]["high"],
    )
    assert head.loc["accuracy 95% CI", "official"] == f"{low:.4f} to {high:.4f}"
    per_class = ev.per_class_table(blocks)
    assert list(per_class.index) == list(CLASS_NAMES)
    assert (
        per_class[("dedup", "recall")]["glioma"]
        == (blocks["dedup"]["summary"]["per_class"]["glioma"]["recall"])
    )
    cal = ev.calibration_table({"official": blocks["official"], "unscaled": _block(14, None)})
    assert cal.loc["ECE scaled", "official"] == blocks["official"]["calibration"]["scaled"]["ece"]
    assert cal["unscaled"].isna()["ECE scaled"] and not cal["unscaled"].isna()["ECE"]


def test_evaluate_split_refuses_to_return_an_off_schema_block(monkeypatch):
    """The block is validated at run time, before any caller writes it to metrics.json."""
    monkeypatch.setattr(ev, "_jsonable", lambda block: {**block, "summary": {"n": -1}})
    with pytest.raises(ValueError, match="does not match METRICS_SCHEMA"):
        _block(12)


def test_evaluate_split_validates_and_serialises():
    jsonschema.Draft202012Validator.check_schema(ev.METRICS_SCHEMA)
    for block in (_block(12), _block(13, temperature=None), _block(14, missing_class=True)):
        ev.validate_metrics_block(block)
        assert json.loads(json.dumps(block, allow_nan=False)) == block
    full = _block(12)
    assert full["calibration"]["temperature"] == 1.7
    assert set(full["calibration"]["scaled"]) == {"ece", "brier", "nll", "reliability"}
    assert full["calibration"]["scaled"]["nll"] != full["calibration"]["nll"]
    assert _block(13, temperature=None)["calibration"]["scaled"] is None
    assert _block(14, missing_class=True)["summary"]["per_class"]["notumor"]["roc_auc"] is None
    wrong = [m["confidence"] for m in full["misclassified"]]
    n_wrong = full["summary"]["n"] - round(full["summary"]["accuracy"] * full["summary"]["n"])
    assert len(wrong) == n_wrong and wrong == sorted(wrong, reverse=True)


def test_corrupted_block_fails_with_path():
    block = _block(15)
    bad = copy.deepcopy(block)
    bad["summary"]["per_class"]["glioma"]["recall"] = "high"
    with pytest.raises(ValueError, match=re.escape("/summary/per_class/glioma/recall")):
        ev.validate_metrics_block(bad)
    bad = copy.deepcopy(block)
    del bad["calibration"]["ece"]
    with pytest.raises(ValueError, match=r"at /calibration: 'ece' is a required property"):
        ev.validate_metrics_block(bad)
    bad = copy.deepcopy(block)
    bad["ci"]["accuracy"]["low"] = float("nan")  # undefined values must be null, not NaN
    with pytest.raises(ValueError, match="at /ci/accuracy/low: non-finite number nan"):
        ev.validate_metrics_block(bad)


def test_compare_runs_shows_differences_and_missing_values():
    a = {"evaluate": {"official": _block(16)}}
    b = {"evaluate": {"official": _block(17), "dedup": _block(18)}}
    table = ev.compare_runs(a, b, "baseline", "tuned")
    acc_a = a["evaluate"]["official"]["summary"]["accuracy"]
    acc_b = b["evaluate"]["official"]["summary"]["accuracy"]
    official_acc = next(
        line for line in table.splitlines() if "official" in line and "accuracy" in line
    )
    assert f"{acc_a:.4f}" in official_acc and f"{acc_b:.4f}" in official_acc
    assert f"{acc_b - acc_a:+.4f}" in official_acc
    dedup_acc = next(line for line in table.splitlines() if "dedup" in line and "accuracy" in line)
    assert dedup_acc.split()[-3:] == [
        "-",
        f"{b['evaluate']['dedup']['summary']['accuracy']:.4f}",
        "-",
    ]
    assert "tuned - baseline" in table.splitlines()[0]
    for name in CLASS_NAMES:
        assert f"sensitivity {name}" in table
    assert "MCC" in table and "Cohen kappa" in table and "ECE" in table


# --- plots ------------------------------------------------------------------------------------


def test_plots_return_figures_with_expected_axes():
    y, p = _noisy_case(120, seed=19)
    summary = ev.classification_summary(y, p)
    fig = plots.plot_confusion_matrices(summary, CLASS_NAMES)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    fig = plots.plot_roc_pr(ev.roc_pr_curves(y, p), summary)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    auc = summary["per_class"]["glioma"]["roc_auc"]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert f"glioma (AUC {auc:.3f})" in legend
    before = ev.reliability_curve(y, p, 10)
    assert len(plots.plot_reliability(before, None).axes) == 1
    fig = plots.plot_reliability(before, ev.reliability_curve(y, p, 10))
    assert len(fig.axes) == 2 and f"ECE {before['ece']:.3f}" in fig.axes[0].get_title()
    ci = ev.bootstrap_ci(y, p.argmax(axis=1), n_resamples=100, seed=0)
    fig = plots.plot_ci_forest(ci)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == list(ci)
    with pytest.raises(ValueError, match="do not match 3 class names"):
        plots.plot_confusion_matrices(summary, CLASS_NAMES[:3])


def test_cluster_bootstrap_counts_copies_once():
    """Five copies of each case are one piece of evidence, not five."""
    y, pred = _predictions_with_error_rate(200, 0.15, seed=9)
    copies_y, copies_pred = np.repeat(y, 5), np.repeat(pred, 5)
    cluster = np.repeat(np.arange(200), 5)
    plain = ev.bootstrap_ci(y, pred, n_resamples=500, seed=2)
    clustered = ev.bootstrap_ci(copies_y, copies_pred, n_resamples=500, seed=2, groups=cluster)
    naive = ev.bootstrap_ci(copies_y, copies_pred, n_resamples=500, seed=2)
    # Resampling the 200 clusters of 5 identical cases is resampling the 200 originals.
    for metric, interval in plain.items():
        assert clustered[metric] == pytest.approx(interval), metric
    width = {name: ci["accuracy"]["high"] - ci["accuracy"]["low"] for name, ci in
             (("clustered", clustered), ("naive", naive))}  # fmt: skip
    assert width["naive"] < 0.6 * width["clustered"]  # ~1/sqrt(5): too narrow
    with pytest.raises(ValueError, match="groups: expected 1000"):
        ev.bootstrap_ci(copies_y, copies_pred, n_resamples=5, seed=0, groups=cluster[:10])
