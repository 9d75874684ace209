"""Where a prediction run writes: its own folder (unique by default, locked, marked
``.incomplete`` until it ends), ``predictions.csv`` written row batch by row batch (spreadsheet
formula cells neutralised), the Grad-CAM views, ``predictions.json`` and the light HTML page."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmri.config import CLASS_NAMES
from brainmri.data.images import encode_png
from brainmri.io import atomic_write, spreadsheet_safe, write_json
from brainmri.lock import try_lock
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
        holder = try_lock(handle)
        if holder is not None:
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
    from brainmri import explain

    original = np.clip(np.round(image), 0, 255).astype(np.uint8)
    both = np.hstack([original, explain.overlay(original, cam)])
    return encode_png(both)


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
            "ood_guard": guard_summary(info),
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
        ood_guard=guard_summary(info),
        ood_note=OOD_NOTE,
        warnings=info.warnings,
        complete=complete,
        sections=sections,
    )


def guard_summary(info: RunInfo) -> str:
    """The OOD layers in force for a model, in one line (predict's page and predictions.json,
    the served page, the explorer).

    Args:
        info: the run's OOD record (:func:`brainmri.runs.run_info`).

    Returns:
        E.g. "input gate, then feature distance (knn) above 0.750", or "none (...)".
    """
    layers = ["input gate"] if info.gate is not None else []
    if info.guard is not None:
        method = info.guard.scorer.method
        layers.append(f"feature distance ({method}) above {info.guard.threshold:.3f}")
    elif info.ood_threshold is not None:
        layers.append(f"energy score below {info.ood_threshold:.3f}")
    return ", then ".join(layers) if layers else "none (no OOD record for this model)"
