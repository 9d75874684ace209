"""brainmri.ood.features: the penultimate features, the Mahalanobis and kNN scores, the
threshold on validation, and ood.npz (written atomically, refused when missing or stale)."""

from __future__ import annotations

import numpy as np
import pytest

from brainmri.ood import features, gate, probes, report


def _clusters(seed: int = 0, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian classes in 8 dimensions, the last unit never firing (a dead ReLU)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n)
    centres = rng.normal(0, 5, (3, 8))
    x = centres[labels] + rng.normal(0, 1, (len(labels), 8))
    x[:, -1] = 0.0
    return x, labels


def test_mahalanobis_is_zero_at_each_class_mean_and_matches_its_definition():
    x, y = _clusters()
    scorer = features.fit_mahalanobis(x, y, ridge=1e-3)
    means = np.stack([x[y == c].mean(0) for c in range(3)])
    assert np.allclose(scorer.score(means), 0.0, atol=1e-9)  # the minimum of the score
    centred = x - means[y]
    cov = centred.T @ centred / len(x)
    cov += np.eye(8) * 1e-3 * np.trace(cov) / 8
    point = x[0] + 0.5
    direct = min(float((point - m) @ np.linalg.inv(cov) @ (point - m)) for m in means)
    assert scorer.score(point[None])[0] == pytest.approx(direct, rel=1e-9)
    # a unit that never fired in training, firing now: far, not ignored (the ridge, not pinv)
    awake = means[:1].copy()
    awake[0, -1] = 1.0
    assert scorer.score(awake)[0] > np.quantile(scorer.score(x), 0.99)


def test_knn_is_the_distance_to_the_kth_normalised_training_feature():
    x, y = _clusters(1)
    scorer = features.fit_knn(x, k=1)
    # each training point is its own nearest neighbour (up to the float16 bank's rounding)
    assert np.all(scorer.score(x) < 0.05)
    scorer5 = features.fit_knn(x, k=5)
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    probe = np.random.default_rng(2).normal(0, 1, (3, 8))
    pz = probe / np.linalg.norm(probe, axis=1, keepdims=True)
    direct = np.sort(np.linalg.norm(pz[:, None] - z[None], axis=2), axis=1)[:, 4]
    assert np.allclose(scorer5.score(probe), direct, atol=5e-3)
    with pytest.raises(ValueError, match="k: expected"):
        features.fit_knn(x, k=0)
    with pytest.raises(ValueError, match="method"):
        features.fit_scorer("energy", x, y)


def test_the_threshold_keeps_the_share_of_validation_with_the_gate_refusals():
    scores = np.arange(1000, dtype=float)
    passed = np.ones(1000, bool)
    passed[:20] = False  # the gate refused 2%
    threshold = features.choose_threshold(scores, passed, keep=0.95)
    kept = passed & (scores <= threshold)
    assert kept.mean() == pytest.approx(0.95, abs=0.002)
    passed[:100] = False  # the gate alone refuses more than 5%: nothing more is flagged
    assert features.choose_threshold(scores, passed, keep=0.95) == 999.0
    with pytest.raises(ValueError, match="refused every"):
        features.choose_threshold(scores, np.zeros(1000, bool))


def test_ood_npz_round_trips_and_is_refused_in_one_line_when_missing_stale_or_broken(tmp_path):
    x, y = _clusters()
    guard = features.FeatureGuard(features.fit_mahalanobis(x, y), 12.5, 0.95, "a" * 64, {"n": 1})
    path = tmp_path / "ood.npz"
    digest = features.save_guard(path, guard)
    assert len(digest) == 64 and not list(tmp_path.glob(".*tmp"))  # atomic: no temporary left
    loaded = features.load_guard(path, model_sha256="a" * 64)
    assert loaded.threshold == 12.5 and loaded.provenance == {"n": 1}
    assert np.allclose(loaded.scorer.score(x[:5]), guard.scorer.score(x[:5]))
    messages = []
    for where, sha in ((tmp_path / "none.npz", None), (path, "b" * 64)):
        with pytest.raises(features.GuardUnavailable) as caught:
            features.load_guard(where, model_sha256=sha)
        messages.append(str(caught.value))
    (tmp_path / "broken.npz").write_bytes(path.read_bytes()[:100])
    with pytest.raises(features.GuardUnavailable) as caught:
        features.load_guard(tmp_path / "broken.npz")
    messages.append(str(caught.value))
    assert "no feature statistics" in messages[0] and "stale" in messages[1]
    assert "unreadable" in messages[2]
    assert all("\n" not in m and "04_evaluate" in m for m in messages)


def test_the_auroc_counts_gate_refusals_as_the_highest_scores():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    known, foreign = rng.normal(0, 1, 50), rng.normal(1, 1, 30)
    expected = roc_auc_score(np.r_[np.zeros(50), np.ones(30)], np.r_[known, foreign])
    assert report.auroc(foreign, known) == pytest.approx(expected)
    foreign[:10] = np.inf
    assert report.auroc(foreign, known) > expected
    assert report.auroc(np.full(5, np.inf), known) == 1.0


@pytest.mark.slow
def test_phantoms_pass_the_guard_and_foreign_images_are_flagged(trained_phantom):
    """On the phantom model: a gate fitted on training phantoms lets held-out phantoms through
    and refuses the photograph, noise and blank images (deterministic, not training luck); the
    feature score is fitted on training features and its threshold keeps 95% of held-out
    phantoms; with Mahalanobis, every class mean of the training features scores 0."""
    model, root, size, _ = trained_phantom
    from brainmri.config import CLASS_NAMES

    train = sorted((root / "Training").glob("*/*.jpg"))[::3]
    val = sorted((root / "Testing").glob("*/*.jpg"))
    labels = np.array([CLASS_NAMES.index(p.parent.name) for p in train])
    val_x, val_logits = features.extract_files(model, val)
    bounds, guard, reasons = report.fit_guard(
        model, train_files=train, train_labels=labels, val_files=val, val_features=val_x,
        crop=False, model_sha256="0" * 64, quantile=0.0, method="mahalanobis",
    )  # fmt: skip
    assert reasons.count(None) >= 0.9 * len(val)
    train_x, _ = features.extract_files(model, train)
    means = np.stack([train_x[labels == c].mean(0) for c in range(len(CLASS_NAMES))])
    assert np.allclose(guard.scorer.score(means), 0.0, atol=1e-6)
    probe_set = {
        k: v
        for k, v in probes.probe_set([], seed=0).items()
        if k in ("photograph", "noise", "blank")
    }
    record, _ = report.measure_guard(
        model, bounds, guard,
        val={"reasons": reasons, "features": val_x, "logits": val_logits}, test=None,
        probes=probe_set, energy_threshold=0.0, crop=False,
    )  # fmt: skip
    from brainmri.evaluation import validate_ood_record

    energy = {"score": "energy", "keep": 0.95, "threshold": 0.0, "flagged": {}}
    validate_ood_record({**energy, "guard": record})
    # at least 95% kept, and no more than one image over (the threshold is a validation score)
    assert 0.95 <= record["validation"]["kept"] <= 0.95 + 1 / len(val) + 1e-9
    for kind in ("photograph", "noise", "blank"):
        assert record["kinds"][kind]["gate"] == 1.0 and record["kinds"][kind]["flagged"] == 1.0
    assert bounds.reason(probes.photographs()[0]) == gate.REASONS["colour"]
