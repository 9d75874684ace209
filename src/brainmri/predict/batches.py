"""Scans read, predicted, scored and explained batch by batch: :func:`predict_scans` into an
output folder (:mod:`brainmri.predict.outputs`), :class:`Predictor` in memory (``brainmri
serve``, the explorer's uploads), and :func:`score_logits`, the one scoring of all three."""

from __future__ import annotations

import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmri.config import CLASS_NAMES
from brainmri.data.images import fit_image
from brainmri.data.scans import ScanError, read_pixels
from brainmri.ood import energy_score
from brainmri.predict.outputs import (
    COLUMNS,
    Interrupted,
    _claim,
    _finish,
    _RowWriter,
    _write_view,
)
from brainmri.runs import RunInfo


class _Model:
    """The classifier run on fixed-shape batches: one traced function for the logits (and one
    for the Grad-CAM maps), so TensorFlow never retraces, however many batches there are."""

    def __init__(self, model: Any, batch_size: int, views: bool) -> None:
        import tensorflow as tf

        from brainmri.ood.features import feature_model

        self.model = model
        self.batch_size = batch_size
        self.views = views
        size = tuple(int(d) for d in model.input_shape[1:])
        both = feature_model(model)  # the OOD guard's features and the logits
        spec = tf.TensorSpec((batch_size, *size), tf.float32)
        self.forward = tf.function(
            lambda x: [tf.cast(t, tf.float32) for t in both(x, training=False)],
            input_signature=[spec],
        )

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Logits (N, K), the OOD guard's features (N, D) and, with views, the Grad-CAM maps
        (N, H, W) of up to batch_size images; a short batch is padded with black images, whose
        results are dropped."""
        from brainmri import explain

        n = len(images)
        padded = np.zeros((self.batch_size, *images.shape[1:]), np.float32)
        padded[:n] = images
        features, logits = (t.numpy()[:n] for t in self.forward(padded))
        maps = None
        if self.views:  # the same padded shape: explain's compiled step traces once too
            maps = explain.gradcam(self.model, padded, batch_size=self.batch_size)[:n]
        return logits, features, maps


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, unit="file", file=sys.stderr, disable=not enabled, mininterval=0.5
    )


def predict_scans(
    files: Sequence[str | Path],
    model: Any,
    info: RunInfo,
    out_dir: str | Path,
    *,
    overlays: bool = True,
    batch_size: int = 32,
    echo=print,
    progress: bool = True,
) -> pd.DataFrame:
    """Predict every file and write predictions.csv/.json, views/ and index.html.

    The files are read, predicted and (with ``overlays``) explained one batch at a time; each
    batch's rows are appended to predictions.csv as it finishes, so Ctrl-C keeps them. The
    folder stays marked ``.incomplete`` until the end, so a rerun into it may replace it.

    Args:
        files: the scans (see :func:`find_scans`).
        model: a trained classifier (``model.load_model``).
        info: its hash, temperature and OOD guard (:func:`brainmri.runs.run_info`).
        out_dir: a new or empty folder (e.g. :func:`new_output_folder`), or one an interrupted
            run left; a finished run or other files are never overwritten.
        overlays: also write each image's Grad-CAM view (the scan beside its Grad-CAM overlay)
            as ``views/<row>.png``, linked from index.html.
        batch_size: images per forward pass.
        echo: where the closing line goes.
        progress: show a progress bar (tqdm, on stderr).

    Returns:
        One row per file: file, status ("ok" or "skipped"), reason, predicted, the four raw
        and the four temperature-scaled probabilities, the OOD columns (:data:`COLUMNS`),
        model_sha256.

    Raises:
        FileExistsError: out_dir holds a finished run or other files, or another run uses it.
        Interrupted: Ctrl-C; the rows finished so far are in predictions.csv.
    """
    out = Path(out_dir)
    files = list(files)
    size = int(model.input_shape[1])
    batch = max(1, min(batch_size, len(files)))
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with _claim(out):
        runner = _Model(model, batch, overlays)
        if overlays:
            (out / "views").mkdir()

        def view(row: dict[str, Any], image: np.ndarray, cam: np.ndarray) -> None:
            _write_view(out / "views" / f"{row['_index']:05d}.png", image, cam)

        writer = _RowWriter(out / "predictions.csv")
        bar = _progress(len(files), "predicting" + (" + Grad-CAM" if overlays else ""), progress)
        try:
            for first in range(0, len(files), batch):
                chunk = _predict_batch(files, first, batch, size, runner, info, view)
                writer.write(chunk)
                rows += chunk
                bar.update(len(chunk))
        except KeyboardInterrupt:
            bar.close()
            writer.close()
            _finish(rows, out, info, complete=False)
            raise Interrupted(
                f"interrupted (Ctrl-C) after {len(rows)} of {len(files)} files: their rows are "
                f"in {out / 'predictions.csv'}; the same --out {out} may be used again (its "
                "partial results are then replaced)"
            ) from None
        finally:
            bar.close()
            writer.close()
        table = _finish(rows, out, info, complete=True)
    seconds = time.perf_counter() - started
    ok = int((table["status"] == "ok").sum()) if len(table) else 0
    echo(
        f"{ok} of {len(files)} files predicted in {seconds:.1f} s "
        f"({len(files) / max(seconds, 1e-9):.1f} files/s); results in {out}"
    )
    return table


def _predict_batch(
    files: Sequence[str | Path],
    first: int,
    batch: int,
    size: int,
    runner: _Model,
    info: RunInfo,
    view: Callable[[dict[str, Any], np.ndarray, np.ndarray], None],
) -> list[dict[str, Any]]:
    """Read, predict and explain files[first : first + batch]: their rows (see COLUMNS); with
    the runner's maps, ``view(row, model input, Grad-CAM map)`` for each predicted row."""
    chunk, images, kept, refused = [], [], [], []
    for k, path in enumerate(files[first : first + batch], first):
        row: dict[str, Any] = dict.fromkeys(COLUMNS, np.nan)
        row.update(file=str(path), status="ok", reason="", predicted="", _index=k)
        row.update(ood_flag=False, ood_layer="", ood_reason="", model_sha256=info.model_sha256)
        try:
            pixels = read_pixels(Path(path))
            # the gate looks at the scan as it is; the model at the prepared square
            refused.append(info.gate.reason(pixels) if info.gate is not None else None)
            images.append(fit_image(pixels, size, crop=info.crop_to_brain))
            kept.append(row)
        except ScanError as exc:
            row.update(status="skipped", reason=str(exc))
        chunk.append(row)
    if not images:
        return chunk
    x = np.stack(images).astype(np.float32)
    logits, features, maps = runner(x)
    distances = info.guard.scorer.score(features) if info.guard is not None else None
    scored_rows = score_logits(logits, info, distances=distances, gate_reasons=refused)
    for j, (row, scored) in enumerate(zip(kept, scored_rows, strict=True)):
        row.update(scored)
        if maps is not None:
            view(row, x[j], maps[j])
    return chunk


def score_logits(
    logits: np.ndarray,
    info: RunInfo,
    *,
    distances: np.ndarray | None = None,
    gate_reasons: Sequence[str | None] | None = None,
) -> list[dict[str, Any]]:
    """What a prediction reports of each image, from its logits (and feature distances and
    the input gate's verdicts): the raw and the calibrated (temperature-scaled) class
    probabilities, the predicted class, the energy score, the feature distance and the
    out-of-distribution flag. `predict_scans`, `brainmri serve` and the explorer
    (:mod:`brainmri.explore`) all score with it, so a scan gets the same numbers in each.

    Args:
        logits: pre-softmax outputs (N, K), K = len(CLASS_NAMES).
        info: the run's temperature and OOD guard (:func:`brainmri.runs.run_info`).
        distances: the OOD guard's feature distances (N,) (``info.guard.scorer.score`` of
            :func:`brainmri.ood.extract`'s features), needed when the run has a feature guard
            (``ood.npz``); without them rows are flagged by the energy score, and
            ``ood_layer`` says so.
        gate_reasons: the input gate's reason for refusing each image (None: it passed),
            from the scan's own pixels (``info.gate.reason``); a refusal flags the row first,
            whatever its scores (the gate saw the scan before the model did). None: not gated.

    Returns:
        One dict per image: ``p_<class>`` and ``p_<class>_calibrated`` for each class,
        ``predicted`` (the calibrated arg-max), ``ood_score``, ``ood_distance`` (NaN without
        distances), ``ood_flag``, ``ood_layer`` and ``ood_reason``.
    """
    from brainmri.evaluation import softmax

    logits = np.asarray(logits)
    raw, calibrated = softmax(logits), softmax(logits, info.temperature)
    scores = energy_score(logits)
    guarded = info.guard is not None and distances is not None
    out = []
    for j in range(len(logits)):
        row: dict[str, Any] = {}
        for c, name in enumerate(CLASS_NAMES):
            row[f"p_{name}"] = float(raw[j, c])
            row[f"p_{name}_calibrated"] = float(calibrated[j, c])
        row["predicted"] = CLASS_NAMES[int(calibrated[j].argmax())]
        row["ood_score"] = float(scores[j])
        row.update(ood_distance=float(distances[j]) if guarded else np.nan)
        row.update(ood_flag=False, ood_layer="", ood_reason="")
        if gate_reasons is not None and gate_reasons[j]:
            row.update(ood_flag=True, ood_layer="gate", ood_reason=gate_reasons[j])
        else:
            _flag_by_score(row, info, guarded=guarded)
        out.append(row)
    return out


def _flag_by_score(row: dict[str, Any], info: RunInfo, *, guarded: bool) -> None:
    """Flag a row by the feature distance (with ood.npz and features) or else by the energy
    score: one layer, so the share of validation kept is the one measured."""
    guard = info.guard
    if guarded:
        if row["ood_distance"] > guard.threshold:
            row.update(
                ood_flag=True,
                ood_layer="features",
                ood_reason=f"feature distance {row['ood_distance']:.3f} above {guard.threshold:.3f}",
            )
    elif info.ood_threshold is not None and row["ood_score"] < info.ood_threshold:
        row.update(
            ood_flag=True,
            ood_layer="energy",
            ood_reason=f"energy score {row['ood_score']:.2f} below {info.ood_threshold:.2f}",
        )


# --- scans predicted in memory, a few at a time (brainmri serve) ----------------------------


@dataclass
class Predicted:
    """What :meth:`Predictor.predict` returns for a list of scans."""

    rows: list[dict[str, Any]]
    """One row per scan, in order: every name of COLUMNS (and whatever else predict's rows
    hold); ``file`` is the name given for the scan."""
    images: dict[int, np.ndarray]
    """Row position -> the model input of each predicted scan, (size, size, 3) uint8."""
    maps: dict[int, np.ndarray]
    """Row position -> its Grad-CAM map, (size, size) in [0, 1]."""


_SUFFIX = re.compile(r"\.[a-z0-9]{1,10}")
"""A suffix an upload's temporary file keeps (lower case, as predict matches them)."""


def clean_name(name: str) -> str:
    """An uploaded file's name as shown: its last path part, control characters dropped."""
    base = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable())
    return base[:255] or "(unnamed)"


class Predictor:
    """:func:`predict_scans`' reading, prediction, OOD check and Grad-CAM, without its output
    folder: for a process that predicts a few scans at a time for as long as it runs
    (``brainmri serve``). The model's traced functions are kept between calls, at one batch
    size, so a call never retraces.

    Args:
        model: a trained classifier (``model.load_model``).
        info: its hash, temperature, OOD threshold and crop (:func:`brainmri.runs.run_info`).
        batch_size: images per forward pass.
    """

    def __init__(self, model: Any, info: RunInfo, *, batch_size: int = 8) -> None:
        self.model = model
        self.info = info
        self.size = int(model.input_shape[1])
        self.batch_size = batch_size
        self._runner = _Model(model, batch_size, views=True)

    def predict(self, files: Sequence[str | Path], *, names: Sequence[str] | None = None):
        """Read, predict and explain (Grad-CAM) files, exactly as :func:`predict_scans` does.

        Args:
            files: the scans (a file that cannot be read gets status "skipped" and its reason).
            names: what each row's ``file`` says instead of its path (an upload's file name).

        Returns:
            A :class:`Predicted`.
        """
        files = list(files)
        images: dict[int, np.ndarray] = {}
        maps: dict[int, np.ndarray] = {}

        def keep(row: dict[str, Any], image: np.ndarray, cam: np.ndarray) -> None:
            images[row["_index"]] = np.clip(np.round(image), 0, 255).astype(np.uint8)
            maps[row["_index"]] = cam

        rows: list[dict[str, Any]] = []
        for first in range(0, len(files), self.batch_size):
            rows += _predict_batch(
                files, first, self.batch_size, self.size, self._runner, self.info, keep
            )
        for row in rows:
            if names is not None:
                row["file"] = names[row["_index"]]
            del row["_index"]
        return Predicted(rows, images, maps)

    def predict_uploads(self, uploads: Sequence[tuple[str, bytes]]):
        """:meth:`predict` of uploaded files (``brainmri serve``, the explorer).

        predict reads files (pydicom needs one), so each upload is written to a private
        temporary folder, deleted on return, under a neutral name that keeps only a plain
        suffix (which, with the content, decides how the file is read): the uploaded name is
        never used as a path.

        Args:
            uploads: (file name as uploaded, bytes) pairs.

        Returns:
            A :class:`Predicted` whose rows' ``file`` is each upload's :func:`clean_name`.
        """
        with tempfile.TemporaryDirectory(prefix="brainmri-upload-") as folder:
            paths = []
            for k, (name, data) in enumerate(uploads):
                suffix = Path(str(name).replace("\\", "/")).suffix.lower()
                path = Path(folder) / f"{k:05d}{suffix if _SUFFIX.fullmatch(suffix) else ''}"
                path.write_bytes(bytes(data))
                paths.append(path)
            return self.predict(paths, names=[clean_name(name) for name, _ in uploads])

    def warm_up(self, methods: Sequence[str] = ("gradcam",)) -> None:
        """Trace the model and the explanations once (on a black image), so that the first
        real call is as quick as the later ones.

        Args:
            methods: the explanations to trace besides the model's own Grad-CAM.
        """
        black = np.zeros((1, self.size, self.size, 3), np.float32)
        self._runner(black)
        for method in methods:
            self.explain(black, method)

    def explain(self, images: np.ndarray, method: str) -> np.ndarray:
        """Maps of images by one of ``brainmri.explain.METHODS``, at the kept batch size.

        Args:
            images: model inputs (N, size, size, 3), 0..255.
            method: e.g. "gradcam" (what :meth:`predict` gives) or "gradcampp".

        Returns:
            float32 maps (N, size, size) in [0, 1].
        """
        from brainmri import explain

        out = []
        for first in range(0, len(images), self.batch_size):
            part = images[first : first + self.batch_size]
            padded = np.zeros((self.batch_size, *part.shape[1:]), np.float32)
            padded[: len(part)] = part  # one shape: the compiled step traces once
            maps = explain.explain(method, self.model, padded, batch_size=self.batch_size)
            out.append(maps[: len(part)])
        return np.concatenate(out) if out else np.zeros((0, self.size, self.size), np.float32)
