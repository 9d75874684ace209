"""brainmri.evaluation.calibration: reliability and ECE, Brier, NLL, softmax, temperature."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from brainmri import evaluation as ev
from brainmri.config import CLASS_NAMES

K = len(CLASS_NAMES)


def _calibrated_case(n: int, seed: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels sampled from softmax(logits): calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, K)) * 2.0
    p = ev.softmax(logits)
    u = rng.random(n)[:, None]
    y = (u > np.cumsum(p, axis=1)).sum(axis=1)
    return logits * scale, np.minimum(y, K - 1)


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


def test_brier_and_nll_follow_their_definitions(noisy_case):
    y, p = noisy_case(300, seed=10)
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
