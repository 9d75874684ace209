"""Predict new scans (read by `brainmri.data.scans`): calibrated probabilities, the
out-of-distribution flag (`brainmri.ood`: the input gate, then the feature distance or the energy
score), Grad-CAM views and a light HTML page linking them; and
the SavedModel export.

`predict_scans` is the API (JupyterLab); `brainmri predict` / `make predict` call it. Every input
goes through the pipeline's one image normalisation (`data.load_image`); DICOM first through
pydicom's modality and VOI (window) LUTs. A file that cannot be read is listed with its reason and
the run goes on. Results go into a new folder, never over a finished run; the rows are written
batch by batch, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmri.config import CLASS_NAMES
from brainmri.data.images import fit_image
from brainmri.data.scans import ScanError, read_pixels
from brainmri.io import atomic_write, spreadsheet_safe, write_json
from brainmri.ood import energy_score
from brainmri.runs import RunInfo

COLUMNS = [
    "file",
    "status",
    "reason",
    *[f"p_{c}{suffix}" for c in CLASS_NAMES for suffix in ("", "_calibrated")],
    "predicted",
    "ood_score",
    "ood_distance",
    "ood_flag",
    "ood_layer",
    "ood_reason",
    "model_sha256",
]
"""The columns of predictions.csv, in order. ``ood_score`` is the energy score (higher = more
like the training data), ``ood_distance`` the feature distance (higher = less like it; empty
without ood.npz), ``ood_flag`` whether the guard flags the scan, ``ood_layer`` which layer did
(``gate``, ``features`` or ``energy``; empty when not flagged) and ``ood_reason`` why, in one
short phrase."""

OOD_NOTE = (
    "The out-of-distribution flag catches inputs plainly unlike the training slices (colour "
    "pictures, blank or noise images, no head on a dark background, features far from every "
    "training slice); it cannot vouch that an unflagged scan is a brain MRI of the kind the "
    "model knows, nor catch an MRI that differs only subtly (another scanner, contrast or "
    "orientation)."
)
"""What the flag can and cannot catch: one sentence on the page and in predictions.json."""

INCOMPLETE = ".incomplete"
"""In an output folder while its run has not finished: a rerun into the folder may replace it."""
LOCK = ".predict.lock"
"""The advisory lock of the run writing into an output folder (the file holds its PID)."""
OUTPUTS = ("predictions.csv", "predictions.json", "index.html", "views")
"""What a run writes into its folder (an interrupted run's are replaced by a rerun)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a prediction run; the message says what was kept and how to go on."""


def new_output_folder(parent: str | Path, prefix: str, attempts: int = 50) -> Path:
    """Create a new, empty, uniquely named folder ``<parent>/<prefix>-<time>-<random>``.

    Two runs started in the same second get different folders: the name ends in a random
    suffix, and ``mkdir`` (which fails on an existing name) is what claims it, so a collision is
    retried rather than shared.

    Args:
        parent: the folder holding the runs' folders (created when missing).
        prefix: the start of the name, e.g. the profile.
        attempts: how many names to try.

    Returns:
        The created folder.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for _ in range(attempts):
        folder = parent / f"{prefix}-{stamp}-{secrets.token_hex(3)}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"{parent}: no free folder name {prefix}-{stamp}-* in {attempts} tries")


@contextlib.contextmanager
def _claim(out: Path) -> Iterator[None]:
    """Hold ``out`` for one run: a new or empty folder, or one an interrupted run left.

    The folder is locked (an fcntl lock on ``.predict.lock``, released when the process dies),
    so two runs never write into one folder; ``.incomplete`` marks it until the run finishes, so
    a rerun after Ctrl-C or a crash may take the folder again instead of being refused.
    """
    import fcntl

    def refuse() -> None:
        raise FileExistsError(
            f"{out}: exists and is not an empty folder; predictions never overwrite a finished "
            "run or other files: choose a new --out"
        )

    try:
        out.mkdir(parents=True)
    except FileExistsError:
        if not out.is_dir():
            refuse()
        names = {p.name for p in out.iterdir()}
        if names and INCOMPLETE not in names:
            refuse()  # before the lock file: nothing is added to a folder that is not ours
    handle = open(out / LOCK, "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise FileExistsError(
                f"{out}: in use by another predict run (process {holder}); wait for it or "
                "choose another --out"
            ) from None
        names = {p.name for p in out.iterdir()} - {LOCK}
        if names and INCOMPLETE not in names:  # another run finished it while we waited
            refuse()
        for name in OUTPUTS:  # an interrupted run's partial results: this run redoes them
            path = out / name
            if path.is_dir():
                import shutil

                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        (out / INCOMPLETE).write_text("a predict run started here and has not finished\n")
        yield
        (out / INCOMPLETE).unlink()
        (out / LOCK).unlink(missing_ok=True)
    finally:
        handle.close()  # releases the lock; .incomplete stays when the run did not finish


class _RowWriter:
    """predictions.csv, written row by row and flushed after each batch, so that an
    interrupted run keeps the rows it finished; every text cell is made spreadsheet-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self.writer = _csv_writer(self.handle)

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.writer.writerow(_csv_cells(row))
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def _csv_writer(handle: Any) -> Any:
    """A csv writer of predictions.csv into a text handle, its header written."""
    # RFC 4180's CRLF line ends: Python's csv quotes a cell holding a bare CR only when CR
    # is part of the line end, and a file name may hold one
    writer = csv.writer(handle, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    return writer


def _csv_cells(row: dict[str, Any]) -> list[Any]:
    return [_cell(row[c]) for c in COLUMNS]


def predictions_csv(rows: Iterable[dict[str, Any]]) -> str:
    """The text of predictions.csv for rows, exactly as :func:`predict_scans` writes the file
    (the COLUMNS, RFC 4180 with CRLF line ends, every text cell spreadsheet-safe).

    Args:
        rows: prediction rows holding every name of COLUMNS (:class:`Predictor`).

    Returns:
        The CSV text, header first.
    """
    buffer = io.StringIO(newline="")
    writer = _csv_writer(buffer)
    for row in rows:
        writer.writerow(_csv_cells(row))
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    """One CSV cell as pandas would write it (NaN empty), safe to open in a spreadsheet."""
    if isinstance(value, float) and np.isnan(value):
        return ""
    return spreadsheet_safe(value)


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
    chunk, images, kept = [], [], []
    for k, path in enumerate(files[first : first + batch], first):
        row: dict[str, Any] = dict.fromkeys(COLUMNS, np.nan)
        row.update(file=str(path), status="ok", reason="", predicted="", _index=k)
        row.update(ood_flag=False, ood_layer="", ood_reason="", model_sha256=info.model_sha256)
        try:
            pixels = read_pixels(Path(path))
            # the gate looks at the scan as it is; the model at the prepared square
            refused = info.gate.reason(pixels) if info.gate is not None else None
            if refused:
                row.update(ood_flag=True, ood_layer="gate", ood_reason=refused)
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
    scored_rows = score_logits(logits, info, distances=distances)
    for j, (row, scored) in enumerate(zip(kept, scored_rows, strict=True)):
        gate = ("ood_flag", "ood_layer", "ood_reason")
        gated = {k: row[k] for k in gate} if row["ood_flag"] else {}
        row.update(scored)
        row.update(gated)  # the gate's verdict stands: it saw the scan before the model did
        if maps is not None:
            view(row, x[j], maps[j])
    return chunk


def score_logits(
    logits: np.ndarray, info: RunInfo, *, distances: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """What a prediction reports of each image, from its logits (and feature distances):
    the raw and the calibrated (temperature-scaled) class probabilities, the predicted class,
    the energy score, the feature distance and the out-of-distribution flag by score.
    `predict_scans`, `brainmri serve` and the explorer (:mod:`brainmri.explore`) all score with
    it, so a scan gets the same numbers in each. The input gate, which looks at the scan's own
    pixels, is applied by the reader (:func:`_predict_batch`), not here.

    Args:
        logits: pre-softmax outputs (N, K), K = len(CLASS_NAMES).
        info: the run's temperature and OOD guard (:func:`brainmri.runs.run_info`).
        distances: the OOD guard's feature distances (N,) (``info.guard.scorer.score`` of
            :func:`brainmri.ood.extract`'s features), needed when the run has a feature guard
            (``ood.npz``); without them rows are flagged by the energy score, and
            ``ood_layer`` says so.

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


def _write_view(path: Path, image: np.ndarray, cam: np.ndarray) -> None:
    """Write :func:`view_png` of the scan and its map to path."""
    path.write_bytes(view_png(image, cam))


def view_png(image: np.ndarray, cam: np.ndarray) -> bytes:
    """The scan beside its Grad-CAM overlay, one PNG at the model's input size (a few KB to
    tens of KB; the 1x4 matplotlib figure it replaces took a third of a second per image).

    Args:
        image: the model input, (size, size, 3) 0..255.
        cam: its map, (size, size) in [0, 1].

    Returns:
        The PNG's bytes.
    """
    import cv2

    from brainmri import explain

    original = np.clip(np.round(image), 0, 255).astype(np.uint8)
    both = np.hstack([original, explain.overlay(original, cam)])
    ok, png = cv2.imencode(".png", cv2.cvtColor(both, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("OpenCV could not encode the Grad-CAM view as PNG")
    return png.tobytes()


def _finish(rows: list[dict[str, Any]], out: Path, info: RunInfo, *, complete: bool):
    """Write predictions.json and index.html of the rows done; return them as a table."""
    table = pd.DataFrame([{c: row[c] for c in COLUMNS} for row in rows], columns=COLUMNS)
    views = [out / "views" / f"{row['_index']:05d}.png" for row in rows]
    write_json(
        out / "predictions.json",
        {
            "model": str(info.model_path),
            "model_sha256": info.model_sha256,
            "temperature": info.temperature,
            "ood_threshold": info.ood_threshold,
            "ood_guard": _guard_summary(info),
            "ood_note": OOD_NOTE,
            "crop_to_brain": info.crop_to_brain,
            "warnings": list(info.warnings),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "complete": complete,
            "predictions": json.loads(table.to_json(orient="records")),
        },
    )
    atomic_write(out / "index.html", _page(table, views, out, info, complete=complete))
    return table


def _page(
    table: pd.DataFrame, views: list[Path], out: Path, info: RunInfo, *, complete: bool = True
) -> str:
    """A light page: one row per file, grouped by predicted class, each Grad-CAM view linked
    from views/ (brainmri/reports/templates/predict_page.html.j2). Embedding every view made
    the page of 2,000 scans 112 MB."""
    from brainmri.reports.render import render_template

    sections = []
    for name in [*CLASS_NAMES, ""]:
        part = table[table["predicted"] == name]
        if part.empty:
            continue
        rows = []
        for index, row in part.iterrows():
            view = views[index]
            probs = ", ".join(
                f"{c} {row[f'p_{c}_calibrated']:.3f}" for c in CLASS_NAMES if row["status"] == "ok"
            )
            rows.append(
                {
                    "file": row.file,
                    "name": Path(row.file).name,
                    "view": view.relative_to(out).as_posix() if view.is_file() else None,
                    "probabilities": probs,
                    "out_of_distribution": bool(row["ood_flag"]),
                    "ood_layer": row["ood_layer"],
                    "ood_reason": row["ood_reason"],
                    "reason": row["reason"],
                }
            )
        sections.append({"title": f"predicted {name}" if name else "skipped", "rows": rows})
    return render_template(
        "predict_page.html.j2",
        model_path=str(info.model_path),
        model_sha256=info.model_sha256[:16],
        temperature=f"{info.temperature:.3f}",
        ood_guard=_guard_summary(info),
        ood_note=OOD_NOTE,
        warnings=info.warnings,
        complete=complete,
        sections=sections,
    )


def _guard_summary(info: RunInfo) -> str:
    """The OOD layers in force, in one line (the page and predictions.json)."""
    layers = ["input gate"] if info.gate is not None else []
    if info.guard is not None:
        method = info.guard.scorer.method
        layers.append(f"feature distance ({method}) above {info.guard.threshold:.3f}")
    elif info.ood_threshold is not None:
        layers.append(f"energy score below {info.ood_threshold:.3f}")
    return ", then ".join(layers) if layers else "none (no OOD record for this model)"


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


# --- export for serving ---------------------------------------------------------------------


def export_savedmodel(model: Any, target: str | Path, *, crop_to_brain: bool = False) -> Path:
    """Write a TensorFlow SavedModel that prepares whole scans and classifies them.

    TF Serving, or any TensorFlow runtime, can then run the model without this package. The
    ``serve`` signature takes ``scans``, a uint8 (N, H, W, 3) RGB batch of whole scans of any
    one size (H, W >= 3; scans of different sizes go in separate calls) and prepares each in
    TensorFlow ops as ``brainmri predict`` does (:mod:`brainmri.serving`): cut to the square
    around the head where the training run did (``crop_to_brain``), resized to the model's
    input size with area averaging; it returns ``probabilities`` (N, 4), the model's raw
    (uncalibrated) class probabilities, and ``boxes`` (N, 3), each scan's head square
    ``(x0, y0, side)`` in its pixels (the whole image's square where nothing was cut). The
    ``serve_prepared`` signature takes ``images``, a uint8 (N, size, size, 3) batch already
    prepared (``read_scan(path, size, crop=...)``), and returns ``probabilities``.

    Args:
        model: a trained classifier.
        target: the SavedModel folder to create; it must not exist.
        crop_to_brain: whether the model was trained on images cut to the head
            (``model.crop_to_brain``; :func:`brainmri.runs.crop_to_brain_of`).

    Returns:
        The folder written.

    Raises:
        FileExistsError: target exists.
        OSError: the folder cannot be written (read-only, under a file, disk full, TensorFlow's
            own file errors); the message names the target and the problem in one line.
    """
    import shutil
    import tempfile

    import keras
    import tensorflow as tf

    from brainmri import serving

    target = Path(target)
    if target.exists():
        raise FileExistsError(f"{target}: exists; choose a new folder for the export")
    size = int(model.input_shape[1])

    def classify(images):
        return model(tf.cast(images, tf.float32), training=False)

    def scan_box(scan):
        if crop_to_brain:
            return tf.stack(serving.brain_box(scan))
        height, width = tf.shape(scan)[0], tf.shape(scan)[1]
        side = tf.maximum(height, width)
        return tf.stack([(width - side) // 2, (height - side) // 2, side])

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="scans")])
    def serve(scans):
        boxes = tf.map_fn(scan_box, scans, fn_output_signature=tf.TensorSpec([3], tf.int32))

        def prepare(args):
            scan, box = args
            if crop_to_brain:
                scan = serving.crop_square(scan, box[0], box[1], box[2])
            return serving.resize(scan, size)

        images = tf.map_fn(
            prepare, (scans, boxes), fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8)
        )
        return {"probabilities": classify(images), "boxes": boxes}

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")])
    def serve_prepared(images):
        return {"probabilities": classify(images)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve)
    archive.add_endpoint("serve_prepared", serve_prepared)
    # Written beside the target and renamed into place: a failed export (a full disk) leaves no
    # half SavedModel under the name a server would load. Python creates the folders, so a
    # read-only file system or a file in the path is an OSError with its errno.
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        archive.write_out(str(partial), verbose=False)
        os.rename(partial, target)
    except tf.errors.OpError as exc:
        problem = (exc.message or type(exc).__name__).strip().splitlines()[0]
        if "No space left on device" in problem:
            problem = "no space left on device"
        raise OSError(f"{target}: TensorFlow could not write the SavedModel ({problem})") from None
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return target
