"""Predict new scans: JPEG, PNG, BMP, TIFF and DICOM slices, with calibrated probabilities, an
out-of-distribution flag, Grad-CAM overlays and a self-contained HTML page.

`predict_scans` is the API (JupyterLab); `brainmri predict` / `make predict` call it. Every input
goes through the pipeline's one image normalisation (`data.load_image`); DICOM first through
pydicom's modality and VOI (window) LUTs. A file that cannot be read is listed with its reason and
the run goes on. Results go into a new folder, never over an earlier one.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from brainmri.config import CLASS_NAMES, IMAGE_EXTENSIONS
from brainmri.data.images import (
    _decode_image_bytes,
    _DecodeError,
    _to_rgb8,
    fit_image,
)
from brainmri.io import atomic_write, write_csv, write_json

DICOM_EXTENSIONS = (".dcm", ".dicom")
"""Suffixes read as DICOM (a file without a suffix is tried as DICOM when it says so)."""


class ScanError(ValueError):
    """A file that cannot be predicted; the message is the reason listed for it."""


# --- reading scans --------------------------------------------------------------------------


def _is_dicom(path: Path, head: bytes) -> bool:
    return path.suffix.lower() in DICOM_EXTENSIONS or head[128:132] == b"DICM"


def read_dicom(path: Path) -> np.ndarray:
    """One DICOM slice as uint8 RGB: modality LUT, VOI LUT (window), MONOCHROME1 inverted.

    Args:
        path: a single-frame DICOM file with pixel data (8, 12 or 16 bits).

    Returns:
        The slice, (H, W, 3) uint8, scaled from its windowed range to 0..255.

    Raises:
        ScanError: not DICOM, no pixel data, more than one frame, or colour data.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises InvalidDicomError, OSError, ...
        raise ScanError(f"not a readable DICOM file ({exc})") from None
    if "PixelData" not in ds:
        raise ScanError("DICOM without pixel data (not an image)")
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise ScanError(f"multi-frame DICOM ({ds.NumberOfFrames} frames): give one slice per file")
    if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
        raise ScanError("colour DICOM: expected a grey-level MRI slice")
    try:
        pixels = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float64)
    except Exception as exc:
        raise ScanError(f"DICOM pixel data cannot be decoded ({exc})") from None
    low, high = float(pixels.min()), float(pixels.max())
    scaled = (pixels - low) / (high - low) * 255.0 if high > low else np.zeros_like(pixels)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        scaled = 255.0 - scaled  # MONOCHROME1: high values are dark
    grey = np.round(scaled).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def read_scan(path: Path, size: int, *, crop: bool = False) -> np.ndarray:
    """Any supported scan as the model's input: uint8 RGB (size, size, 3), cut to the square
    around the head first with ``crop`` (as the model's training run did: ``crop_to_brain``).

    Raises:
        ScanError: the file is not a supported, readable image (the message says why).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ScanError(f"cannot read the file ({exc.strerror or exc})") from None
    if _is_dicom(path, data[:132]):
        rgb = read_dicom(path)
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        try:
            rgb = _to_rgb8(_decode_image_bytes(data)[0])
        except _DecodeError as exc:
            raise ScanError(str(exc)) from None
    else:
        raise ScanError(
            f"unsupported file type {path.suffix or '(none)'!r}: expected an image "
            f"({', '.join(IMAGE_EXTENSIONS)}) or DICOM ({', '.join(DICOM_EXTENSIONS)})"
        )
    return fit_image(rgb, size, crop=crop)


def find_scans(target: str | Path) -> list[Path]:
    """The files to predict: one file, every file under a folder (recursively), or a glob.

    Hidden files and folders are skipped; the order is sorted, so reruns list the same rows.

    Raises:
        FileNotFoundError: nothing matches target.
    """
    path = Path(target).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = path.rglob("*")
        base = path
    else:
        anchor = Path(path.anchor or ".")
        pattern = str(path.relative_to(anchor)) if path.is_absolute() else str(path)
        found, base = anchor.glob(pattern), anchor
    files = sorted(
        p
        for p in found
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(base).parts)
    )
    if not files:
        raise FileNotFoundError(f"{target}: no such file, folder or matching files")
    return files


# --- scores ---------------------------------------------------------------------------------


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


# --- the prediction run ---------------------------------------------------------------------


@dataclass
class RunInfo:
    """What a prediction run knows about its model, from the training run's records."""

    model_path: Path
    model_sha256: str
    temperature: float = 1.0
    ood_threshold: float | None = None
    crop_to_brain: bool = False
    warnings: tuple[str, ...] = ()


def run_info(
    model_path: Path, run_dir: Path | None, *, crop_to_brain: bool | None = None
) -> RunInfo:
    """The model's hash, and the temperature, OOD threshold and preprocessing (whether images
    are cropped to the head) of the run that trained it.

    A model whose hash differs from the one its run recorded gets a warning: the calibration
    and threshold then belong to another model.

    Args:
        model_path: the model file.
        run_dir: the run's report folder (run.json, metrics.json), or None for a model without.
        crop_to_brain: crop scans to the head; None = as the run recorded (``model.crop_to_brain``
            in run.json), False without a run record.
    """
    digest = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
    info = RunInfo(Path(model_path), digest, crop_to_brain=bool(crop_to_brain))
    if run_dir is None:
        return info
    warnings = []
    run_json, metrics = Path(run_dir) / "run.json", Path(run_dir) / "metrics.json"
    run = json.loads(run_json.read_text()) if run_json.is_file() else {}
    if not run and crop_to_brain is None:
        warnings.append(
            f"{run_json}: no training record; the scans are prepared without the crop to the "
            "head (pass --crop-to-brain if the model was trained with it)"
        )
    recorded = run.get("model_sha256")
    if crop_to_brain is None:
        info.crop_to_brain = bool(run.get("params", {}).get("crop_to_brain", False))
    if recorded and recorded != digest:
        warnings.append(
            f"{model_path}: SHA-256 {digest[:12]}... differs from the {recorded[:12]}... that "
            f"{run_json} recorded: the calibration and OOD threshold may not fit this model"
        )
    if metrics.is_file():
        evaluate = json.loads(metrics.read_text()).get("evaluate", {})
        info.temperature = float(evaluate.get("temperature") or 1.0)
        info.ood_threshold = (evaluate.get("ood") or {}).get("threshold")
    info.warnings = tuple(warnings)
    return info


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
    """A self-contained page: one row per file, grouped by predicted class, images embedded."""
    sections = []
    order = [*CLASS_NAMES, ""]
    for name in order:
        part = table[table["predicted"] == name]
        if part.empty:
            continue
        rows = []
        for index, row in part.iterrows():
            overlay = out / "overlays" / f"{index:05d}.png"
            picture = (
                f'<img src="{_data_uri(overlay)}" alt="Grad-CAM of {html.escape(Path(row.file).name)}">'
                if overlay.is_file()
                else ""
            )
            probs = ", ".join(
                f"{c} {row[f'p_{c}_calibrated']:.3f}" for c in CLASS_NAMES if row["status"] == "ok"
            )
            flag = (
                '<b class="flag">out of distribution</b>' if row["ood_flag"] else ""
            ) + html.escape(row["reason"])
            rows.append(
                f"<tr><td>{html.escape(row.file)}</td><td>{picture}</td>"
                f"<td>{html.escape(probs)}</td><td>{flag}</td></tr>"
            )
        title = f"predicted {name}" if name else "skipped"
        sections.append(
            f"<h2>{html.escape(title)} ({len(part)})</h2><table><tr><th>file</th>"
            f"<th>Grad-CAM view</th><th>calibrated probabilities</th><th>notes</th></tr>"
            + "".join(rows)
            + "</table>"
        )
    warnings = "".join(f'<p class="flag">{html.escape(w)}</p>' for w in info.warnings)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>brainmri predictions</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #ddd; padding: 4px 8px;
text-align: left; vertical-align: top; }} img {{ width: 560px; }} .flag {{ color: #a00; }}</style>
</head><body><h1>Predictions</h1>
<p class="flag">Research software; not a medical device. Not for diagnosis.</p>
<p>Model {html.escape(str(info.model_path))} (SHA-256 {info.model_sha256[:16]}...),
temperature {info.temperature:.3f}, OOD threshold (energy score)
{"none" if info.ood_threshold is None else f"{info.ood_threshold:.3f}"}.</p>{warnings}
{"".join(sections)}</body></html>
"""


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
