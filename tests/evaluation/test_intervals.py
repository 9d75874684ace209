"""brainmri.evaluation.intervals: the (cluster) bootstrap, exact intervals and their choice."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, recall_score

from brainmri import evaluation as ev
from brainmri.config import CLASS_NAMES
from brainmri.reports import tables

K = len(CLASS_NAMES)


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


# --- exact intervals for small classes ------------------------------------------------------------


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


def test_evaluate_split_replaces_degenerate_bootstrap_with_clopper_pearson(
    tiny_class_case, evaluate
):
    y, p = tiny_class_case()
    pred = p.argmax(axis=1)
    boot = ev.bootstrap_ci(y, pred, n_resamples=300, seed=3)
    # The failure this fixes: 15/15 right bootstraps to the point interval 1.000-1.000.
    assert boot["sensitivity/pituitary"] == {"point": 1.0, "low": 1.0, "high": 1.0}
    ci = evaluate(y, p)["ci"]

    assert ci["sensitivity/pituitary"] == {
        "point": 1.0,
        "low": pytest.approx(0.025 ** (1 / 15)),
        "high": 1.0,
        "method": "clopper_pearson",
        "successes": 15,
        "n": 15,
    }
    assert tables.format_interval(ci["sensitivity/pituitary"]) == "1.000 (0.782-1.000)"
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


def test_exact_interval_counts_near_copy_clusters_once(tiny_class_case, evaluate):
    y, p = tiny_class_case()
    # The 15 pituitary images are 5 pictures with 3 copies each; every other image is unique.
    groups = np.arange(y.size)
    groups[y == 3] = 1000 + np.arange(15) // 3
    ci = evaluate(y, p, groups)["ci"]
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
