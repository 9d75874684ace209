"""The manifest: one row per dataset file with hashes, geometry and status; its CSV and hash.

scan_dataset builds it; audit_duplicates and assign_subsets (brainmri.data.audit, .splits) add
columns; write_manifest and read_manifest store it with its column types.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from brainmri.config import CLASS_NAMES, IMAGE_EXTENSIONS, SPLITS
from brainmri.data.headers import MAX_PIXELS, DecodeError
from brainmri.data.images import decode_image_bytes, to_rgb8
from brainmri.data.layout import class_folders
from brainmri.io import csv_bytes, write_csv

SCAN_COLUMNS: tuple[str, ...] = (
    "path",
    "split",
    "label",
    "bytes",
    "sha256",
    "width",
    "height",
    "mode",
    "phash",
    "status",
    "reason",
)
"""Columns written by scan_dataset, in order."""

_INT_COLUMNS = ("bytes", "width", "height", "exact_group", "copy_group", "copy_group_size")
_BOOL_COLUMNS = ("label_conflict", "training_copy", "headline_test")
_FLOAT_COLUMNS = ("closest_correlation",)


def require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Refuse a table without the columns a function needs.

    Args:
        df: the table.
        columns: the columns needed.
        what: the call, for the message (e.g. ``"audit_summary(manifest)"``).

    Raises:
        ValueError: a column is missing; the message names them and the call.
    """
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; expected {list(columns)}")


# --- scan -----------------------------------------------------------------------------------


def _phash(rgb: np.ndarray) -> str:
    # imported on first use: the input pipeline imports brainmri.data for load_image only
    import imagehash

    return str(imagehash.phash(Image.fromarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))))


def _scan_file(
    root: Path, split: str, label: str, file: Path, max_pixels: int = MAX_PIXELS
) -> dict[str, Any]:
    """One manifest row: hashes, geometry and status of one file."""
    row: dict[str, Any] = {
        "path": file.relative_to(root).as_posix(),
        "split": split,
        "label": label,
        "bytes": 0,
        "sha256": "",
        "width": 0,
        "height": 0,
        "mode": "",
        "phash": "",
        "status": "excluded",
        "reason": "",
    }
    try:
        data = file.read_bytes()
    except OSError as exc:
        row["reason"] = f"unreadable: {exc.strerror or exc}"
        return row
    row["bytes"], row["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    if file.suffix.lower() not in IMAGE_EXTENSIONS:
        row["reason"] = f"unsupported extension {file.suffix!r} (expected {IMAGE_EXTENSIONS})"
        return row
    try:
        array, mode = decode_image_bytes(data, max_pixels, file.suffix)
    except DecodeError as exc:
        row["reason"] = str(exc)
        return row
    rgb = to_rgb8(array)
    row.update(
        width=int(rgb.shape[1]),
        height=int(rgb.shape[0]),
        mode=mode,
        phash=_phash(rgb),
        status="ok",
    )
    return row


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in SPLITS order, then CLASS_NAMES order, then path."""
    rank = {
        "split": {name: i for i, name in enumerate(SPLITS)},
        "label": {name: i for i, name in enumerate(CLASS_NAMES)},
    }
    return df.sort_values(
        ["split", "label", "path"],
        key=lambda col: col.map(rank[col.name]) if col.name in rank else col,
    ).reset_index(drop=True)


def scan_dataset(root: Path, *, max_pixels: int = MAX_PIXELS) -> pd.DataFrame:
    """Return the manifest: one row per file under <split>/<class>/ with hashes and status.

    Args:
        root: the dataset root (see find_dataset_root); hidden files and folders are skipped.
        max_pixels: the most pixels a file's header may declare; a larger image is excluded
            without being decoded.

    Returns:
        One row per file, columns SCAN_COLUMNS, sorted by split, class, then path. A file
        that is not a readable image of a supported extension has status "excluded" and the
        reason; split and label are the canonical names whatever the folder spelling.

    Raises:
        DatasetLayoutError: root does not hold the expected split/class tree.
    """
    root = Path(root)
    jobs: list[tuple[str, str, Path]] = []
    for (split, label), folder in class_folders(root).items():
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            jobs.extend(
                (split, label, Path(dirpath) / name)
                for name in sorted(filenames)
                if not name.startswith(".")
            )
    with ThreadPoolExecutor(max_workers=2) as pool:  # OpenCV and PIL release the GIL
        rows = list(pool.map(lambda job: _scan_file(root, *job, max_pixels), jobs))
    df = pd.DataFrame(rows, columns=list(SCAN_COLUMNS))
    return _sorted(df.astype({c: "int64" for c in ("bytes", "width", "height")}))


# --- manifest files -------------------------------------------------------------------------


def manifest_hash(manifest: pd.DataFrame | Path) -> str:
    """Return the sha256 of a manifest's CSV bytes (as write_manifest writes them, or a file).

    Args:
        manifest: a manifest table, or the path of a manifest CSV.

    Returns:
        The hex digest; a table and the file write_manifest makes of it give the same one.

    Raises:
        FileNotFoundError: manifest is a path and no such file exists.
    """
    if isinstance(manifest, pd.DataFrame):
        return hashlib.sha256(csv_bytes(manifest)).hexdigest()
    path = Path(manifest)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest file")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(df: pd.DataFrame, path: Path) -> None:
    """Write the manifest CSV atomically (a reader never sees a partial file).

    Args:
        df: the manifest table, with any extra columns.
        path: the CSV file to (re)write; its folder is created if needed.
    """
    write_csv(path, df)


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest CSV written by write_manifest, with its column types restored.

    Extra columns (e.g. a label index) come back as integers or booleans when every value
    is one, else as strings.

    Args:
        path: the manifest CSV.

    Returns:
        The manifest table; empty strings stay empty strings.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a CSV, a SCAN_COLUMNS column is missing, or a known integer or
            boolean column holds something else (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest file")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a manifest CSV ({exc})") from None
    missing = [c for c in SCAN_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: not a manifest: missing column(s) {missing} (expected {list(SCAN_COLUMNS)})"
        )
    for column in df.columns:
        values = df[column]
        if column in _FLOAT_COLUMNS:
            try:
                df[column] = pd.to_numeric(values.replace("", np.nan), errors="raise")
            except (ValueError, TypeError):
                raise ValueError(f"{path}: column {column!r} must hold numbers") from None
        elif column in _INT_COLUMNS or (
            column not in SCAN_COLUMNS and len(values) and values.str.fullmatch(r"-?\d+").all()
        ):
            try:
                df[column] = values.astype("int64")
            except ValueError:
                raise ValueError(f"{path}: column {column!r} must hold integers") from None
        elif column in _BOOL_COLUMNS or (
            column not in SCAN_COLUMNS and len(values) and values.isin(["True", "False"]).all()
        ):
            if not values.isin(["True", "False"]).all():
                raise ValueError(f"{path}: column {column!r} must hold True/False")
            df[column] = values.eq("True")
    return df
