"""Predict new scans (read by `brainmri.data.scans`): calibrated probabilities, the
out-of-distribution flag (`brainmri.ood`), Grad-CAM overlays and a self-contained HTML page; and
the SavedModel export.

`predict_scans` is the API (JupyterLab); `brainmri predict` / `make predict` call it. Every input
goes through the pipeline's one image normalisation (`data.load_image`); DICOM first through
pydicom's modality and VOI (window) LUTs. A file that cannot be read is listed with its reason and
the run goes on. Results go into a new folder, never over an earlier one.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmri.config import CLASS_NAMES
from brainmri.data.scans import ScanError, read_scan
from brainmri.io import atomic_write, write_csv, write_json
from brainmri.ood import energy_score
from brainmri.runs import RunInfo


def predict_scans(
    files: Sequence[str | Path],
    model: Any,
    info: RunInfo,
    out_dir: str | Path,
    *,
    overlays: bool = True,
    batch_size: int = 32,
    echo=print,
) -> pd.DataFrame:
    """Predict every file and write predictions.csv/.json, overlays/ and index.html.

    Args:
        files: the scans (see :func:`find_scans`).
        model: a trained classifier (``model.load_model``).
        info: its hash, temperature and OOD threshold (:func:`run_info`).
        out_dir: a folder that must not exist yet (an earlier run is never overwritten).
        overlays: also write the reference Grad-CAM view of each image.
        batch_size: images per forward pass.
        echo: where progress lines go.

    Returns:
        One row per file: file, status ("ok" or "skipped"), reason, predicted, the four raw
        and the four temperature-scaled probabilities, ood_score, ood_flag, model_sha256.

    Raises:
        FileExistsError: out_dir exists.
    """
    from brainmri import explain
    from brainmri.evaluation import softmax
    from brainmri.model import predict

    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out}: exists; predictions never overwrite an earlier run")
    out.mkdir(parents=True)
    size = int(model.input_shape[1])
    rows: list[dict[str, Any]] = []
    images, kept = [], []
    started = time.perf_counter()
    for n, path in enumerate(files, 1):
        row: dict[str, Any] = {"file": str(path), "status": "ok", "reason": ""}
        try:
            images.append(read_scan(Path(path), size, crop=info.crop_to_brain))
            kept.append(len(rows))
        except ScanError as exc:
            row.update(status="skipped", reason=str(exc))
        rows.append(row)
        if n % 50 == 0 or n == len(files):
            echo(f"read {n}/{len(files)} files")
    table = pd.DataFrame(rows)
    for name in CLASS_NAMES:
        table[f"p_{name}"] = np.nan
        table[f"p_{name}_calibrated"] = np.nan
    table["predicted"], table["ood_score"], table["ood_flag"] = "", np.nan, False
    if images:
        batch = np.stack(images).astype(np.float32)
        logits = np.concatenate(
            [predict(model, batch[i : i + batch_size])[0] for i in range(0, len(batch), batch_size)]
        )
        raw, calibrated = softmax(logits), softmax(logits, info.temperature)
        scores = energy_score(logits)
        for j, name in enumerate(CLASS_NAMES):
            table.loc[kept, f"p_{name}"] = raw[:, j]
            table.loc[kept, f"p_{name}_calibrated"] = calibrated[:, j]
        table.loc[kept, "predicted"] = [CLASS_NAMES[k] for k in calibrated.argmax(axis=1)]
        table.loc[kept, "ood_score"] = scores
        if info.ood_threshold is not None:
            table.loc[kept, "ood_flag"] = scores < info.ood_threshold
        if overlays:
            (out / "overlays").mkdir()
            for k, image in zip(kept, batch, strict=True):
                viz = explain.VizGradCAM(model, image, plot_results=True)
                viz.figure.savefig(out / "overlays" / f"{k:05d}.png", dpi=80, bbox_inches="tight")
                import matplotlib.pyplot as plt

                plt.close(viz.figure)
    table["model_sha256"] = info.model_sha256
    seconds = time.perf_counter() - started
    write_csv(out / "predictions.csv", table)
    write_json(
        out / "predictions.json",
        {
            "model": str(info.model_path),
            "model_sha256": info.model_sha256,
            "temperature": info.temperature,
            "ood_threshold": info.ood_threshold,
            "crop_to_brain": info.crop_to_brain,
            "warnings": list(info.warnings),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "predictions": json.loads(table.to_json(orient="records")),
        },
    )
    atomic_write(out / "index.html", _page(table, out, info))
    echo(
        f"{len(kept)} of {len(files)} files predicted in {seconds:.1f} s "
        f"({len(files) / max(seconds, 1e-9):.1f} files/s); results in {out}"
    )
    return table


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _page(table: pd.DataFrame, out: Path, info: RunInfo) -> str:
    """A self-contained page: one row per file, grouped by predicted class, images embedded
    (brainmri/reports/templates/predict_page.html.j2)."""
    from brainmri.reports.render import render_template

    sections = []
    for name in [*CLASS_NAMES, ""]:
        part = table[table["predicted"] == name]
        if part.empty:
            continue
        rows = []
        for index, row in part.iterrows():
            overlay = out / "overlays" / f"{index:05d}.png"
            probs = ", ".join(
                f"{c} {row[f'p_{c}_calibrated']:.3f}" for c in CLASS_NAMES if row["status"] == "ok"
            )
            rows.append(
                {
                    "file": row.file,
                    "name": Path(row.file).name,
                    "overlay": _data_uri(overlay) if overlay.is_file() else None,
                    "probabilities": probs,
                    "out_of_distribution": bool(row["ood_flag"]),
                    "reason": row["reason"],
                }
            )
        sections.append({"title": f"predicted {name}" if name else "skipped", "rows": rows})
    threshold = info.ood_threshold
    return render_template(
        "predict_page.html.j2",
        model_path=str(info.model_path),
        model_sha256=info.model_sha256[:16],
        temperature=f"{info.temperature:.3f}",
        ood_threshold="none" if threshold is None else f"{threshold:.3f}",
        warnings=info.warnings,
        sections=sections,
    )


# --- export for serving ---------------------------------------------------------------------


def export_savedmodel(model: Any, target: str | Path) -> Path:
    """Write a TensorFlow SavedModel whose "serve" signature takes uint8 images.

    TF Serving, or any TensorFlow runtime, can then run the model without this package: the
    endpoint takes a (N, H, W, 3) uint8 batch at the model's input size and returns the four
    class probabilities. The images must be prepared as the training run prepared them: resized
    and, where its ``model.crop_to_brain`` was on, cut to the head first
    (:func:`brainmri.data.brain_box`; ``read_scan(..., crop=True)`` does both).

    Args:
        model: a trained classifier.
        target: the SavedModel folder to create; it must not exist.

    Returns:
        The folder written.

    Raises:
        FileExistsError: target exists.
    """
    import keras
    import tensorflow as tf

    target = Path(target)
    if target.exists():
        raise FileExistsError(f"{target}: exists; choose a new folder for the export")
    size = int(model.input_shape[1])

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")])
    def serve(images):
        return {"probabilities": model(tf.cast(images, tf.float32), training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve)
    archive.write_out(str(target), verbose=False)
    return target
