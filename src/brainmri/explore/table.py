"""The explorer's table: every validation and test image of a run with its prediction.

04_evaluate does not keep per-image predictions (only its galleries' images), so the table is
computed once from the run's model, as 04 computes them (:func:`brainmri.model.predict_files`,
or :func:`brainmri.ood.extract_files` where the run has a feature guard), and each image is put
to the run's input gate as predict puts a scan to it. The logits, feature distances and gate
verdicts are kept in the run's ``.cache/`` under the model's hash: the next opening of the same
model reads them back instead of predicting again.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pandas as pd

from brainmri import runs, sources
from brainmri.config import CLASS_NAMES
from brainmri.io import write_csv
from brainmri.predict.outputs import COLUMNS

CACHE_PREFIX = "explore-logits-"
"""The name of the cached logits in a run's ``.cache/``, followed by the model's hash."""


SCORE_COLUMNS = tuple(c for c in COLUMNS if c.startswith(("p_", "ood_")) or c == "predicted")
"""The scores each listed image carries: predict's (:func:`brainmri.predict.score_logits`)."""


def table_logits(
    run: runs.Run, info: runs.RunInfo, rows: pd.DataFrame, *, cache: bool
) -> tuple[np.ndarray, np.ndarray | None, list[str | None] | None]:
    """The logits of the rows; where the run has a feature guard (``ood.npz``), their feature
    distances; where it has an input gate, the gate's reason for refusing each (None: passed).
    From the run's cache when it holds them for this model and these files, else computed (and
    cached where the run's folder is writable)."""
    from brainmri import model as mdl
    from brainmri import ood
    from brainmri.ood.report import read_raw, refusals

    path = run.paths.cache_dir / f"{CACHE_PREFIX}{info.model_sha256[:16]}.csv"
    columns = [f"logit_{c}" for c in CLASS_NAMES]
    guarded, gated = info.guard is not None, info.gate is not None
    if cache and path.is_file():
        try:
            kept = pd.read_csv(path, dtype={"path": str, "ood_gate": str}, keep_default_na=False)
            if kept["path"].tolist() == rows["path"].tolist():
                distances = kept["ood_distance"].to_numpy(np.float64) if guarded else None
                reasons = [r or None for r in kept["ood_gate"]] if gated else None
                return kept[columns].to_numpy(np.float64), distances, reasons
        except (ValueError, KeyError, pd.errors.ParserError):
            pass  # a damaged (or older) cache is predicted again and replaced
    if guarded:  # one pass for both, as 04_evaluate and predict compute them
        features, logits = ood.extract_files(run.model, run.files(rows), crop=run.crop)
        distances = info.guard.scorer.score(features)
    else:
        (logits, _), distances = mdl.predict_files(run.model, run.files(rows), crop=run.crop), None
    # the gate looks at each scan as it is, as predict's reader does
    reasons = refusals(info.gate, read_raw(run.files(rows))) if gated else None
    if cache:
        frame = pd.DataFrame(np.asarray(logits, np.float64), columns=columns)
        frame.insert(0, "path", rows["path"].to_numpy())
        if distances is not None:
            frame["ood_distance"] = distances
        if reasons is not None:
            frame["ood_gate"] = [r or "" for r in reasons]
        # a read-only run: the explorer works, it only predicts again next time
        with contextlib.suppress(OSError):
            write_csv(path, frame)
    return np.asarray(logits), distances, reasons


def build_table(
    run: runs.Run,
    info: runs.RunInfo,
    rows: pd.DataFrame,
    logits: np.ndarray,
    distances: np.ndarray | None = None,
    gate_reasons: list[str | None] | None = None,
) -> pd.DataFrame:
    """The explorer's table (see :class:`Explorer`) of manifest rows and their logits, feature
    distances and gate verdicts (:func:`table_logits`), scored as predict scores a scan."""
    from brainmri.predict import score_logits

    scored = pd.DataFrame(
        score_logits(logits, info, distances=distances, gate_reasons=gate_reasons),
        columns=list(SCORE_COLUMNS),
    )
    table = pd.DataFrame(
        {
            "path": rows["path"].to_numpy(),
            "name": [os.path.basename(p) for p in rows["path"]],
            "subset": rows["subset"].to_numpy(),
            "headline": rows["headline_test"].astype(bool).to_numpy(),
            "label": rows["label"].to_numpy(),
        }
    )
    table = pd.concat([table, scored], axis=1)
    # the predicted class is the calibrated arg-max, so its probability is the row's maximum
    table["confidence"] = scored[[f"p_{c}_calibrated" for c in CLASS_NAMES]].max(axis=1)
    table["correct"] = table["label"] == table["predicted"]
    table["mask"] = sources.mask_files(rows, run.data_root, run.record.get("mask_root"))
    return table
