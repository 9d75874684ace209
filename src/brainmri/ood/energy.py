"""The energy layer of the OOD guard: the energy score of the logits (Liu et al. 2020) and its
threshold chosen on validation; what predict flags by where a run has no ood.npz."""

from __future__ import annotations

from typing import Any

import numpy as np

from brainmri.ood.features import choose_threshold


def energy_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Energy-based in-distribution score, T * logsumexp(logits / T) (Liu et al. 2020).

    Higher means more like the training data; images unlike it get lower scores than a plain
    maximum softmax probability would show. Returns one score per row.
    """
    z = np.asarray(logits, dtype=np.float64) / temperature
    top = z.max(axis=1, keepdims=True)
    return temperature * (top[:, 0] + np.log(np.exp(z - top).sum(axis=1)))


def ood_threshold(
    val_logits: np.ndarray, *, keep: float = 0.95, passed: np.ndarray | None = None
) -> float:
    """The energy score below which an image is flagged: keeps `keep` of the validation images.

    Chosen on validation, never on Testing; stored in the run's metrics ("ood").

    Args:
        val_logits: the validation images' logits.
        keep: the share of validation images kept.
        passed: whether the input gate let each validation image through, where the energy
            score is the layer after the gate (predict's fallback without ood.npz): the
            threshold then keeps ``keep`` of all of them together with the gate, as the feature
            threshold does (:func:`brainmri.ood.features.choose_threshold`). None: the energy
            score alone keeps ``keep``.

    Returns:
        The threshold.
    """
    if not 0 < keep < 1:
        raise ValueError(f"keep: expected a fraction in (0, 1), got {keep!r}")
    scores = energy_score(val_logits)
    if passed is None:
        return float(np.quantile(scores, 1.0 - keep))
    return -choose_threshold(-scores, passed, keep=keep)  # there higher = more foreign


def energy_record(
    val_logits: np.ndarray,
    known: dict[str, np.ndarray],
    *,
    keep: float = 0.95,
    passed: np.ndarray | None = None,
) -> dict[str, Any]:
    """The energy layer's record for metrics.json (``evaluate.ood``): its threshold chosen on
    validation, and the share it flags in each group of logits.

    Args:
        val_logits: logits of the validation images (the threshold keeps ``keep`` of them).
        known: further groups of logits to score, e.g. {"headline test": logits}.
        keep: the share of validation images kept.
        passed: the gate's verdict on each validation image (see :func:`ood_threshold`).

    Returns:
        ``{"score": "energy", "keep", "threshold", "flagged": {group: share}}``, validation first.
    """
    threshold = ood_threshold(val_logits, keep=keep, passed=passed)
    groups = {"validation": val_logits, **known}
    flagged = {name: float((energy_score(g) < threshold).mean()) for name, g in groups.items()}
    return {"score": "energy", "keep": keep, "threshold": threshold, "flagged": flagged}
