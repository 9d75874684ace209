"""The out-of-distribution flag of predictions: the energy score of the logits (Liu et al. 2020),
a threshold chosen on validation, and the share of foreign images it flags."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


def energy_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Energy-based in-distribution score, T * logsumexp(logits / T) (Liu et al. 2020).

    Higher means more like the training data; images unlike it get lower scores than a plain
    maximum softmax probability would show. Returns one score per row.
    """
    z = np.asarray(logits, dtype=np.float64) / temperature
    top = z.max(axis=1, keepdims=True)
    return temperature * (top[:, 0] + np.log(np.exp(z - top).sum(axis=1)))


def ood_threshold(val_logits: np.ndarray, *, keep: float = 0.95) -> float:
    """The energy score below which an image is flagged: keeps `keep` of the validation images.

    Chosen on validation, never on Testing; stored in the run's metrics ("ood").
    """
    if not 0 < keep < 1:
        raise ValueError(f"keep: expected a fraction in (0, 1), got {keep!r}")
    return float(np.quantile(energy_score(val_logits), 1.0 - keep))


def foreign_images(images: np.ndarray) -> dict[str, np.ndarray]:
    """Clearly foreign inputs made offline from in-distribution images, for the OOD figure.

    Args:
        images: a float batch (N, H, W, 3) of 0..255 in-distribution images.

    Returns:
        {"rotated 90 degrees", "inverted contrast", "photograph"}: the images turned a quarter,
        their negatives, and matplotlib's bundled photograph of Grace Hopper (repeated).
    """
    import matplotlib.cbook

    size = images.shape[1]
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        photo = cv2.imdecode(np.frombuffer(handle.read(), np.uint8), cv2.IMREAD_COLOR)
    photo = cv2.resize(cv2.cvtColor(photo, cv2.COLOR_BGR2RGB), (size, size))
    return {
        "rotated 90 degrees": np.ascontiguousarray(np.rot90(images, axes=(1, 2))),
        "inverted contrast": 255.0 - images,
        "photograph": np.repeat(photo[None].astype(np.float32), 4, axis=0),
    }


def ood_summary(
    model: Any,
    val_logits: np.ndarray,
    val_images: np.ndarray,
    known: dict[str, np.ndarray],
    *,
    keep: float = 0.95,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The OOD threshold chosen on validation, and the share it flags in each group of images.

    Args:
        model: the trained classifier.
        val_logits: logits of the validation images (the threshold keeps `keep` of them).
        val_images: some validation images (0..255 floats), turned into foreign ones
            (:func:`foreign_images`).
        known: further groups of logits to score, e.g. {"clean Testing": logits}.
        keep: the share of validation images kept below the flag.

    Returns:
        ``(ood, scores)``: the record for metrics.json ("score", "keep", "threshold",
        "flagged" per group) and the energy scores per group (validation first).
    """
    from brainmri.model import predict

    threshold = ood_threshold(val_logits, keep=keep)
    scores = {"validation": energy_score(val_logits)}
    scores.update({name: energy_score(logits) for name, logits in known.items()})
    for name, images in foreign_images(val_images).items():
        scores[name] = energy_score(predict(model, images)[0])
    flagged = {name: float((group < threshold).mean()) for name, group in scores.items()}
    ood = {"score": "energy", "keep": keep, "threshold": threshold, "flagged": flagged}
    return ood, scores
