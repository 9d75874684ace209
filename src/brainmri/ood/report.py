"""Fitting the OOD guard on a run and measuring it: the gate's bounds and the feature score
from the training subset, the threshold from validation, and per probe kind the AUROC against
validation and the share flagged (what notebook 04 records as ``evaluate.ood.guard``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainmri.evaluation.schema import validate_ood_record
from brainmri.ood import features as feats
from brainmri.ood import gate as gates
from brainmri.ood.energy import energy_record, energy_score
from brainmri.ood.probes import GROUPS, probe_set


def read_raw(files: Sequence[str | Path]) -> list[np.ndarray]:
    """Image files at their own size as uint8 RGB (what the gate looks at in ``predict``)."""
    from brainmri.data.scans import read_pixels

    return [read_pixels(Path(f)) for f in files]


def fit_gate_on(files: Sequence[str | Path], *, quantile: float = 0.001) -> gates.GateBounds:
    """The gate's bounds from image files (the training subset's), read one at a time."""
    from brainmri.data.scans import read_pixels

    return gates.fit_gate((gates.measure(read_pixels(Path(f))) for f in files), quantile=quantile)


def refusals(bounds: gates.GateBounds, images: Sequence[np.ndarray]) -> list[str | None]:
    """The gate's reason for each image (None: it passes)."""
    return [bounds.reason(image) for image in images]


def auroc(foreign: np.ndarray, known: np.ndarray) -> float:
    """The AUROC of telling ``foreign`` scores from ``known`` ones (higher = more foreign);
    ties count half, +inf (refused by the gate) is the highest score."""
    foreign, known = np.asarray(foreign, np.float64), np.asarray(known, np.float64)
    if len(foreign) == 0 or len(known) == 0:
        return float("nan")
    values = np.concatenate([known, foreign])
    finite = np.isfinite(values)
    if not finite.all():  # ranks are all we need: +inf above every finite score
        top = values[finite].max() if finite.any() else 0.0
        values = np.where(finite, values, top + 1.0)
    from scipy.stats import rankdata

    ranks = rankdata(values)[len(known) :]
    n_f, n_k = len(foreign), len(known)
    return float((ranks.sum() - n_f * (n_f + 1) / 2) / (n_f * n_k))


def combined(reasons: Sequence[str | None], scores: np.ndarray) -> np.ndarray:
    """One score per image for the AUROC of the whole guard: +inf where the gate refused it,
    its feature score otherwise."""
    refused = np.array([r is not None for r in reasons], bool)
    return np.where(refused, np.inf, np.asarray(scores, np.float64))


def score_images(
    model: Any, images: Sequence[np.ndarray], *, crop: bool, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Features and logits of raw images (uint8 RGB at their own sizes), prepared as predict
    prepares a scan (``data.fit_image``)."""
    from brainmri.data.images import fit_image

    size = int(model.input_shape[1])
    x = np.stack([fit_image(image, size, crop=crop) for image in images]).astype(np.float32)
    return feats.extract(model, x, batch_size=batch_size)


def kind_record(
    group: str,
    reasons: Sequence[str | None],
    scores: np.ndarray,
    logits: np.ndarray,
    val: Mapping[str, np.ndarray],
    *,
    threshold: float,
    energy_threshold: float,
) -> dict[str, Any]:
    """One probe kind against validation.

    Args:
        group: ``far``, ``near`` or ``stress``.
        reasons: the gate's reason for each image.
        scores: their feature scores.
        logits: their logits.
        val: the validation images' ``combined`` guard scores and ``energy`` scores.
        threshold: the feature threshold.
        energy_threshold: the energy threshold (the guard without ood.npz).

    Returns:
        ``group``, ``n``, ``flagged`` (the share the guard flags), ``auroc`` (guard score
        against validation), ``gate`` (the share the gate refuses), ``feature_auroc`` (the
        feature score alone), ``energy_flagged`` and ``energy_auroc`` (gate + energy, and the
        energy alone: what predict falls back to).
    """
    refused = np.array([r is not None for r in reasons], bool)
    energy = energy_score(logits) if len(logits) else np.zeros(0)
    guard = combined(reasons, scores)
    return {
        "group": group,
        "n": len(reasons),
        "flagged": float((guard > threshold).mean()),  # a gate refusal is +inf
        "auroc": auroc(guard, val["combined"]),
        "gate": float(refused.mean()),
        "feature_auroc": auroc(np.asarray(scores), val["scores"]),
        "energy_flagged": float((refused | (energy < energy_threshold)).mean()),
        "energy_auroc": auroc(-energy, -val["energy"]),
    }


def pooled(kinds: Mapping[str, Mapping[str, Any]], parts: Mapping[str, Any], group: str) -> dict:
    """The kinds of one group pooled image by image: ``n``, ``flagged``, ``auroc``."""
    names = [k for k, r in kinds.items() if r["group"] == group]
    if not names:
        return {"n": 0, "flagged": None, "auroc": None}
    guard = np.concatenate([parts[k]["combined"] for k in names])
    flagged = np.concatenate([parts[k]["flagged"] for k in names])
    return {
        "n": int(len(guard)),
        "flagged": float(flagged.mean()),
        "auroc": auroc(guard, parts["validation"]["combined"]),
    }


def measure_scores(
    *,
    val_reasons: Sequence[str | None],
    val_scores: np.ndarray,
    val_logits: np.ndarray,
    probes: Mapping[str, tuple[str, Sequence[str | None], np.ndarray, np.ndarray]],
    threshold: float,
    energy_threshold: float,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """How one gate and feature score, at one threshold, treat validation and the probes: the
    measurement of :func:`measure_guard` (notebook 04) and of tools/ood_study.py (which
    compares layers and scores), so both report alike.

    Args:
        val_reasons: the gate's reason for each validation image (None: passed).
        val_scores: their feature scores; val_logits: their logits.
        probes: ``{kind: (group, gate reasons, feature scores, logits)}``.
        threshold: the feature threshold (flagged above it).
        energy_threshold: the energy fallback's threshold.

    Returns:
        ``(record, parts)``: ``validation`` (``n``, ``kept``, ``refused_by_gate``), ``kinds``
        (:func:`kind_record` of each) and ``groups`` (:func:`pooled`); and per group of
        images (``validation`` first, then each kind) its ``combined`` scores and
        ``flagged``.
    """
    val_combined = combined(val_reasons, val_scores)
    val_flagged = val_combined > threshold  # a gate refusal is +inf: flagged too
    val_parts = {
        "combined": val_combined,
        "scores": np.asarray(val_scores),
        "energy": energy_score(val_logits),
        "flagged": val_flagged,
    }
    parts: dict[str, dict[str, np.ndarray]] = {"validation": val_parts}
    kinds = {}
    for kind, (group, reasons, scores, logits) in probes.items():
        kinds[kind] = kind_record(
            group, reasons, scores, logits, val_parts,
            threshold=threshold, energy_threshold=energy_threshold,
        )  # fmt: skip
        guard_scores = combined(reasons, scores)
        parts[kind] = {"combined": guard_scores, "flagged": guard_scores > threshold}
    record = {
        "validation": {
            "n": int(len(val_combined)),
            "kept": float(1 - val_flagged.mean()),
            "refused_by_gate": float(np.isinf(val_combined).mean()),
        },
        "kinds": kinds,
        "groups": {g: pooled(kinds, parts, g) for g in GROUPS},
    }
    return record, parts


def measure_guard(
    model: Any,
    bounds: gates.GateBounds,
    guard: feats.FeatureGuard,
    *,
    val: Mapping[str, Any],
    test: Mapping[str, Any] | None,
    probes: Mapping[str, tuple[str, list[np.ndarray]]],
    energy_threshold: float,
    crop: bool,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """The guard's record for metrics.json, and each group's scores for the figure.

    Args:
        model: the classifier.
        bounds: the gate.
        guard: the fitted feature layer.
        val: the validation images' ``reasons``, ``features`` and ``logits``.
        test: the headline test images' ``files`` and ``features`` (reported only; they choose
            nothing), or None.
        probes: :func:`brainmri.ood.probes.probe_set`.
        energy_threshold: the energy layer's threshold (validation, same keep).
        crop: prepare probe images cut to the head, as the model was trained.

    Returns:
        ``(record, parts)``: the record (method, thresholds, validation kept, headline test
        flagged, per-kind and per-group results) and, per group of images, ``combined`` and
        ``flagged`` arrays.
    """
    probe_scores = {}
    for kind, (group, images) in probes.items():
        features, logits = score_images(model, images, crop=crop)
        probe_scores[kind] = (group, refusals(bounds, images), guard.scorer.score(features), logits)
    measured, parts = measure_scores(
        val_reasons=val["reasons"],
        val_scores=guard.scorer.score(val["features"]),
        val_logits=val["logits"],
        probes=probe_scores,
        threshold=guard.threshold,
        energy_threshold=energy_threshold,
    )
    record: dict[str, Any] = {
        "method": guard.scorer.method,
        "k": guard.scorer.k,
        "threshold": guard.threshold,
        "keep": guard.keep,
        "gate": bounds.to_json(),
        **measured,
    }
    if test is not None:
        test_reasons = refusals(bounds, read_raw(test["files"]))
        test_combined = combined(test_reasons, guard.scorer.score(test["features"]))
        record["headline_test"] = {
            "n": int(len(test_combined)),
            "flagged": float((test_combined > guard.threshold).mean()),
        }
        # the figure shows the test second, beside validation
        parts = {
            "validation": parts.pop("validation"),
            "headline test": {"combined": test_combined},
            **parts,
        }
    return record, parts


def validation_probes(
    val_files: Sequence[str | Path], *, n: int = 60, seed: int = 0
) -> dict[str, tuple[str, list[np.ndarray]]]:
    """The probe set (:func:`brainmri.ood.probes.probe_set`), its near kinds made from ``n``
    validation slices picked with the seed.

    Args:
        val_files: the validation images.
        n: how many of them to make foreign (rotated, inverted, re-contrasted).
        seed: the seed of the pick and of every probe.

    Returns:
        ``{kind: (group, images)}``.
    """
    pick = sorted(np.random.default_rng(seed).permutation(len(val_files))[:n])
    return probe_set(read_raw([val_files[i] for i in pick]), seed=seed)


METHOD = "knn"
"""The feature score the pipeline fits (``features.METHODS``), chosen by tools/ood_study.py on
the `cpu` run's validation and probe images (docs/predict.md): on the pooled features kNN
flagged every far probe kind at 95% of validation kept, Mahalanobis let one of two CT slices
through and told blank and gradient images from slices worse than chance (the input gate
caught those)."""
K = 10
"""The neighbour of the ``knn`` score: k = 1 and 10 measured alike on the far kinds; 10, as
Sun et al. (2022) recommend over 1, leans on no single training image."""


def fit_guard(
    model: Any,
    *,
    train_files: Sequence[str | Path],
    train_labels: np.ndarray,
    val_files: Sequence[str | Path],
    val_features: np.ndarray,
    crop: bool,
    model_sha256: str,
    method: str = METHOD,
    k: int = K,
    keep: float = 0.95,
    quantile: float = 0.001,
    provenance: Mapping[str, Any] | None = None,
) -> tuple[gates.GateBounds, feats.FeatureGuard, list[str | None]]:
    """Fit the guard: the gate and the feature score on training, the threshold on validation.

    Args:
        model: the classifier.
        train_files: the training subset's images (the gate's bounds, the feature statistics).
        train_labels: their class indices.
        val_files: the validation images (the gate's refusals there).
        val_features: their features (``features.extract_files``; the threshold).
        crop: the model's images are cut to the head (``model.crop_to_brain``).
        model_sha256: the model's hash, recorded in ood.npz.
        method: the feature score (:data:`METHOD`).
        k: the kNN score's neighbour.
        keep: the share of validation images the guard keeps.
        quantile: the gate's bounds' training percentile.
        provenance: recorded in ood.npz (e.g. the manifest's hash).

    Returns:
        ``(bounds, guard, val_reasons)``: the gate, the feature guard (save it with
        ``features.save_guard``) and the gate's reason for each validation image.
    """
    bounds = fit_gate_on(train_files, quantile=quantile)
    train_features, _ = feats.extract_files(model, train_files, crop=crop)
    scorer = feats.fit_scorer(method, train_features, train_labels, k=k)
    val_reasons = refusals(bounds, read_raw(val_files))
    passed = np.array([r is None for r in val_reasons], bool)
    threshold = feats.choose_threshold(scorer.score(val_features), passed, keep=keep)
    info = {
        "fitted_on": "train",
        "n_train": len(train_files),
        "threshold_on": "val",
        "n_val": len(val_files),
        "feature_width": int(train_features.shape[1]),
        **dict(provenance or {}),
    }
    return bounds, feats.FeatureGuard(scorer, threshold, keep, model_sha256, info), val_reasons


def evaluate_guard(
    model: Any,
    *,
    path: Path,
    train_files: Sequence[str | Path],
    train_labels: np.ndarray,
    val: Mapping[str, Any],
    test: Mapping[str, Any],
    crop: bool,
    model_sha256: str,
    seed: int,
    provenance: Mapping[str, Any] | None = None,
    keep: float = 0.95,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """What notebook 04 does for the guard: fit it (:func:`fit_guard`), save it as ood.npz,
    choose the energy fallback's threshold, and measure both on validation, the probes (made
    from 60 validation slices, :func:`validation_probes`) and the headline test images.

    Args:
        model: the classifier.
        path: where ood.npz goes (``Paths.ood``, beside the model).
        train_files: the training subset's images; train_labels: their class indices.
        val: the validation images' ``files``, ``features`` and ``logits``.
        test: the headline test images' ``files``, ``features`` and ``logits`` (reported only;
            they choose nothing).
        crop: the model's images are cut to the head.
        model_sha256: the model's hash, recorded in ood.npz.
        seed: the run's seed (the probes).
        provenance: recorded in ood.npz (e.g. the manifest's hash).
        keep: the share of validation images each layer keeps.

    Returns:
        ``(record, parts)``: ``evaluate.ood`` of metrics.json (the energy record with the
        guard's under ``guard``, validated against its schema) and the figure's score groups.
    """
    bounds, guard, val_reasons = fit_guard(
        model,
        train_files=train_files,
        train_labels=train_labels,
        val_files=val["files"],
        val_features=val["features"],
        crop=crop,
        model_sha256=model_sha256,
        keep=keep,
        provenance=provenance,
    )
    sha256 = feats.save_guard(path, guard)
    # the energy score is predict's fallback after the gate: its threshold keeps `keep` with it
    passed = np.array([r is None for r in val_reasons], bool)
    record = energy_record(
        val["logits"], {"headline test": test["logits"]}, keep=keep, passed=passed
    )
    guard_record, parts = measure_guard(
        model,
        bounds,
        guard,
        val={"reasons": val_reasons, "features": val["features"], "logits": val["logits"]},
        test=test,
        probes=validation_probes(val["files"], n=60, seed=seed),
        energy_threshold=record["threshold"],
        crop=crop,
    )
    record["guard"] = guard_record | {"file": {"name": Path(path).name, "sha256": sha256}}
    validate_ood_record(record)  # the schema of evaluate.ood (docs/metrics.md)
    return record, parts
