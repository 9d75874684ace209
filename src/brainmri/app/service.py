"""What the page does with an upload, apart from HTTP: predict's :class:`~brainmri.predict.Predictor` on the
scans, the kept batches (bounded in count and memory), their views by method and CSV, and each
row as the page shows it."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from brainmri.config import CLASS_NAMES
from brainmri.predict import Predictor, predictions_csv, view_png
from brainmri.runs import RunInfo

METHODS = ("gradcam", "gradcampp")
"""The explanations offered on the page, the first shown by default (predict's view). Score-CAM
is left out: one forward pass per feature-map channel takes minutes a scan on a CPU."""
MAX_FILES = 500
"""The most files one upload may hold."""
KEEP_BATCHES = 16
"""How many uploaded batches the server keeps for their page, views and CSV."""
KEEP_BYTES = 512 << 20
"""How much memory the kept batches may take (their model inputs, views and CSV); the newest
batch is kept whatever its size."""


@dataclass
class Batch:
    """One upload's results, kept for its page, its views and its CSV."""

    token: str
    rows: list[dict[str, Any]]
    images: dict[int, np.ndarray]
    views: dict[str, dict[int, bytes]] = field(default_factory=dict)
    """method -> row position -> PNG of the scan beside its overlay."""
    csv: str = ""

    @property
    def nbytes(self) -> int:
        """The memory its images, views and CSV take, roughly."""
        images = sum(image.nbytes for image in self.images.values())
        views = sum(len(png) for kind in self.views.values() for png in kind.values())
        return images + views + len(self.csv)


class Service:
    """The model and the uploaded batches of one serve process (no HTTP here: the handlers
    call it from one worker thread, and tests may call it directly).

    Args:
        model: the trained classifier.
        info: its run's records (:func:`brainmri.runs.run_info`).
        profile: the profile whose run it is (shown on the page).
        batch_size: images per forward pass.
        keep: how many batches to keep (the oldest is dropped first).
        keep_bytes: how much memory the kept batches may take (the newest is always kept).
    """

    def __init__(
        self,
        model: Any,
        info: RunInfo,
        *,
        profile: str,
        batch_size: int = 8,
        keep: int = KEEP_BATCHES,
        keep_bytes: int = KEEP_BYTES,
    ) -> None:
        self.predictor = Predictor(model, info, batch_size=batch_size)
        self.info = info
        self.profile = profile
        self.keep = keep
        self.keep_bytes = keep_bytes
        self.batches: OrderedDict[str, Batch] = OrderedDict()
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Trace the model and its explanations once, so that the first upload is quick."""
        self.predictor.warm_up(METHODS)

    def predict(self, uploads: Sequence[tuple[str, bytes]], *, method: str = METHODS[0]) -> Batch:
        """Predict uploaded files through predict's pipeline and keep the batch.

        The files are read as predict reads them (``Predictor.predict_uploads``).

        Args:
            uploads: (file name as uploaded, bytes) pairs.
            method: the explanation whose views to make now (the others on demand).

        Returns:
            The kept :class:`Batch`, its rows named by the uploaded names.
        """
        result = self.predictor.predict_uploads(uploads)
        batch = Batch(secrets.token_urlsafe(12), result.rows, result.images)
        batch.csv = predictions_csv(result.rows)
        # predict's own Grad-CAM maps come with the prediction; another method's now, once
        batch.views["gradcam"] = {
            k: view_png(batch.images[k], cam) for k, cam in result.maps.items()
        }
        self.views(batch, method)
        with self._lock:
            self.batches[batch.token] = batch
            while len(self.batches) > self.keep or (
                len(self.batches) > 1
                and sum(kept.nbytes for kept in self.batches.values()) > self.keep_bytes
            ):
                self.batches.popitem(last=False)
        return batch

    def views(self, batch: Batch, method: str) -> dict[int, bytes]:
        """The batch's views by method, made on first use.

        Raises:
            ValueError: method is not one of METHODS.
        """
        if method not in METHODS:
            raise ValueError(f"method={method!r}: expected one of {', '.join(METHODS)}")
        if method not in batch.views and batch.images:
            order = sorted(batch.images)
            maps = self.predictor.explain(np.stack([batch.images[k] for k in order]), method)
            batch.views[method] = {
                k: view_png(batch.images[k], cam) for k, cam in zip(order, maps, strict=True)
            }
        return batch.views.setdefault(method, {})

    def get(self, token: str) -> Batch | None:
        """A kept batch, or None (never uploaded, or dropped for newer ones)."""
        with self._lock:
            return self.batches.get(token)


def ood_verdict(row: dict[str, Any], info: RunInfo) -> dict[str, Any]:
    """The out-of-distribution verdict of a prediction row as the page shows it: predict's own
    ``ood_flag``, ``ood_layer`` and ``ood_reason`` (nothing is judged again here), and the
    scores with the threshold of the layer that uses them.

    Args:
        row: a row of predict's table (``brainmri.predict.COLUMNS``).
        info: the model's run record, whose guard layers set the thresholds.

    Returns:
        {"flagged": bool, "reason": "layer: why" or "", "scores": [one line each]}
    """
    reason = f"{row['ood_layer']}: {row['ood_reason']}" if row.get("ood_reason") else ""
    scores = []
    distance, energy = row.get("ood_distance"), row.get("ood_score")
    if info.guard is not None and _finite(distance):
        scores.append(f"feature distance {distance:.3f} (flagged above {info.guard.threshold:.3f})")
    if _finite(energy):
        energy_used = info.guard is None and info.ood_threshold is not None
        cut = f" (flagged below {info.ood_threshold:.3f})" if energy_used else ""
        scores.append(f"energy score {energy:.3f}{cut}")
    return {"flagged": bool(row.get("ood_flag", False)), "reason": reason, "scores": scores}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and bool(np.isfinite(value))


def row_view(
    row: dict[str, Any], k: int, batch: Batch, method: str, info: RunInfo
) -> dict[str, Any]:
    """One prediction row as the page shows it (its class, probabilities, OOD verdict and the
    address of its view by the method chosen)."""
    ok = row["status"] == "ok"
    return {
        "file": row["file"],
        "status": row["status"],
        "reason": row["reason"],
        "predicted": row["predicted"],
        "probabilities": [
            {"name": c, "value": float(row[f"p_{c}_calibrated"])} for c in CLASS_NAMES if ok
        ],
        "ood": ood_verdict(row, info),
        "view": f"/batch/{batch.token}/views/{method}/{k}.png" if ok else None,
    }
