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


# --- exact intervals for small classes --------------------------------------------------------


def test_clopper_pearson_and_wilson_match_textbook_values():
    # All right / none right: the bounds have closed forms.
    assert ev.clopper_pearson_interval(15, 15) == pytest.approx((0.025 ** (1 / 15), 1.0))
    assert ev.clopper_pearson_interval(15, 15)[0] == pytest.approx(0.7820, abs=5e-5)
    assert ev.clopper_pearson_interval(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)))
    z2 = 1.959963984540054**2
    assert ev.wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))  # 0 to 0.2775
    assert ev.wilson_interval(10, 10) == pytest.approx((10 / (10 + z2), 1.0))
    # Newcombe (1998), Stat Med 17:857, Table II: methods 3 (Wilson) and 5 (Clopper-Pearson).
    for (x, n), wilson, exact in [
        ((81, 263), (0.2553, 0.3662), (0.2527, 0.3676)),
        ((15, 148), (0.0624, 0.1605), (0.0578, 0.1617)),
        ((0, 20), (0.0, 0.1611), (0.0, 0.1684)),
        ((1, 29), (0.0061, 0.1718), (0.0009, 0.1776)),
    ]:
        assert ev.wilson_interval(x, n) == pytest.approx(wilson, abs=5e-5), (x, n)
        assert ev.clopper_pearson_interval(x, n) == pytest.approx(exact, abs=5e-5), (x, n)
    # 99% is wider than 95%, and Clopper-Pearson (conservative) is wider than Wilson.
    low95, high95 = ev.clopper_pearson_interval(12, 20)
    low99, high99 = ev.clopper_pearson_interval(12, 20, confidence=0.99)
    assert low99 < low95 < 0.6 < high95 < high99
    wilson = ev.wilson_interval(12, 20)
    assert low95 < wilson[0] and wilson[1] < high95


def test_clopper_pearson_agrees_with_scipy_and_takes_fractional_counts():
    from scipy.stats import binomtest

    for n in (1, 7, 30):
        for x in range(n + 1):
            ref = binomtest(x, n).proportion_ci(0.9, method="exact")
            assert ev.clopper_pearson_interval(x, n, confidence=0.9) == pytest.approx(
                (ref.low, ref.high), abs=1e-12
            ), (x, n)
    # An effective count between two integers gives bounds between theirs.
    low7, high7 = ev.clopper_pearson_interval(7, 15)
    low_mid, high_mid = ev.clopper_pearson_interval(7.5, 15)
    low8, high8 = ev.clopper_pearson_interval(8, 15)
    assert low7 < low_mid < low8 and high7 < high_mid < high8


def test_proportion_intervals_refuse_bad_counts():
    with pytest.raises(ValueError, match="n: expected a positive number"):
        ev.clopper_pearson_interval(0, 0)
    with pytest.raises(ValueError, match=r"successes: expected a count in \[0, 10\]"):
        ev.clopper_pearson_interval(11, 10)
    with pytest.raises(ValueError, match="confidence"):
        ev.wilson_interval(3, 10, confidence=95)
    with pytest.raises(ValueError, match="integer counts"):
        ev.wilson_interval(2.5, 10)


def _tiny_class_case() -> tuple[np.ndarray, np.ndarray]:
    """300 cases: pituitary only 15, all right; meningioma 20 with 12 right; rest ~10% wrong."""
    rng = np.random.default_rng(21)
    y = np.array([0] * 140 + [1] * 20 + [2] * 125 + [3] * 15)
    pred = y.copy()
    big = np.flatnonzero((y == 0) | (y == 2))
    wrong = rng.choice(big, size=26, replace=False)
    pred[wrong] = np.where(y[wrong] == 0, 2, 0)  # glioma <-> notumor: nobody called pituitary
    pred[np.flatnonzero(y == 1)[:8]] = 0  # 12 of 20 meningiomas right
    p = np.full((y.size, K), 0.1)
    p[np.arange(y.size), pred] = 0.7
    return y, p


def _evaluate(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None = None) -> dict:
    paths = [f"img{i}.jpg" for i in range(y.size)]
    return ev.evaluate_split(
        y, p, None, paths, n_resamples=300, seed=3, n_bins=10, temperature=None, groups=groups
    )


def test_evaluate_split_replaces_degenerate_bootstrap_with_clopper_pearson():
    y, p = _tiny_class_case()
    pred = p.argmax(axis=1)
    boot = ev.bootstrap_ci(y, pred, n_resamples=300, seed=3)
    # The failure this fixes: 15/15 right bootstraps to the point interval 1.000-1.000.
    assert boot["sensitivity/pituitary"] == {"point": 1.0, "low": 1.0, "high": 1.0}
    ci = _evaluate(y, p)["ci"]

    assert ci["sensitivity/pituitary"] == {
        "point": 1.0,
        "low": pytest.approx(0.025 ** (1 / 15)),
        "high": 1.0,
        "method": "clopper_pearson",
        "successes": 15,
        "n": 15,
    }
    assert ev.format_interval(ci["sensitivity/pituitary"]) == "1.000 (0.782-1.000)"
    # Under 30 cases but not degenerate: exact interval as well.
    mening = ci["sensitivity/meningioma"]
    assert (mening["method"], mening["successes"], mening["n"]) == ("clopper_pearson", 12, 20)
    assert (mening["low"], mening["high"]) == pytest.approx(ev.clopper_pearson_interval(12, 20))
    # Nobody is called pituitary wrongly: specificity 285/285, all right although n is large.
    spec = ci["specificity/pituitary"]
    assert (spec["method"], spec["successes"], spec["n"]) == ("clopper_pearson", 285, 285)
    assert spec["low"] == pytest.approx(0.025 ** (1 / 285)) and spec["high"] == 1.0
    # Large classes and accuracy with some mistakes keep the bootstrap interval.
    for key in ("accuracy", "sensitivity/glioma", "sensitivity/notumor", "specificity/glioma"):
        assert ci[key]["method"] == "bootstrap", key
        assert {k: ci[key][k] for k in ("point", "low", "high")} == boot[key], key
    assert (ci["accuracy"]["successes"], ci["accuracy"]["n"]) == (300 - 26 - 8, 300)
    assert ci["sensitivity/glioma"]["n"] == 140
    assert ci["macro_f1"] == {**boot["macro_f1"], "method": "bootstrap"}  # no count: not a ratio
    for key, entry in ci.items():
        if entry["point"] is not None:
            assert entry["low"] <= entry["point"] <= entry["high"], key


def test_exact_interval_counts_near_copy_clusters_once():
    y, p = _tiny_class_case()
    # The 15 pituitary images are 5 pictures with 3 copies each; every other image is unique.
    groups = np.arange(y.size)
    groups[y == 3] = 1000 + np.arange(15) // 3
    ci = _evaluate(y, p, groups)["ci"]
    pit = ci["sensitivity/pituitary"]
    assert (pit["method"], pit["successes"], pit["n"], pit["clusters"]) == (
        "clopper_pearson",
        15,
        15,
        5,
    )
    # 5 independent pictures, all right: far wider than 15 independent ones would give.
    assert pit["low"] == pytest.approx(0.025 ** (1 / 5)) and pit["high"] == 1.0
    assert ci["sensitivity/glioma"]["method"] == "cluster_bootstrap"
    assert ci["sensitivity/glioma"]["clusters"] == 140
    assert ci["accuracy"]["clusters"] == 285 + 5
    assert ci["macro_f1"]["method"] == "cluster_bootstrap"


def test_interval_schema_accepts_new_keys_and_old_blocks():
    y, p = _tiny_class_case()
    block = _evaluate(y, p)
    ev.validate_metrics_block(block)
    assert json.loads(json.dumps(block, allow_nan=False)) == block
    # A block written before the method and counts existed still validates.
    old = copy.deepcopy(block)
    old["ci"] = {
        key: {k: entry[k] for k in ("point", "low", "high")} for key, entry in old["ci"].items()
    }
    ev.validate_metrics_block(old)
    bad = copy.deepcopy(block)
    bad["ci"]["accuracy"]["method"] = "wald"
    with pytest.raises(ValueError, match="at /ci/accuracy/method: 'wald' is not one of"):
        ev.validate_metrics_block(bad)
    bad = copy.deepcopy(block)
    bad["ci"]["accuracy"]["n"] = -1
    with pytest.raises(ValueError, match="at /ci/accuracy/n"):
        ev.validate_metrics_block(bad)
    bad = copy.deepcopy(block)
    bad["ci"]["accuracy"]["width"] = 0.1  # still closed to unknown keys
    with pytest.raises(ValueError, match="at /ci/accuracy"):
        ev.validate_metrics_block(bad)


# --- paired comparison ------------------------------------------------------------------------


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

    table = ev.paired_table(out)
    assert list(table.index) == [*CLASS_NAMES, "overall"]
    assert list(table.columns) == [
        "n",
        "accuracy old",
        "accuracy new",
        "only old right",
        "only new right",
        "McNemar p",
    ]
    assert table.loc["overall", "only old right"] == 4
    assert table.loc["meningioma", "only new right"] == 2
    assert table.loc["overall", "McNemar p"] == pytest.approx(44 / 64)
    assert table.loc["pituitary", "n"] == 0 and np.isnan(table.loc["pituitary", "McNemar p"])
    with pytest.raises(ValueError, match="names: expected two distinct"):
        ev.paired_comparison(y, probs_a, probs_b, names=("m", "m"))
    with pytest.raises(ValueError, match=r"probs: expected shape \(10, 4\)"):
        ev.paired_comparison(y, probs_a, probs_b[:5])
