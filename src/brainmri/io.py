"""Atomic file writes and the JSON/CSV helpers every stage uses.

A reader (a later stage, JupyterLab, a crashed run resumed) must never see half a file: each
write goes to a temporary file in the same folder, is flushed, and then renamed over the
target, which POSIX makes atomic. A failed write removes its temporary file and leaves the
earlier version of the target untouched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd


def atomic_write(path: Path | str, data: bytes | str, *, encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``path`` atomically, creating the parent folder.

    Args:
        path: the file to (re)write.
        data: its whole content; text is encoded with ``encoding``.
        encoding: the text encoding used when ``data`` is a string.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode(encoding) if isinstance(data, str) else data
    # A unique name per writer: two processes writing the same file never share a temporary.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file private (0600); a report is as readable as any file the
        # user creates, so the mode follows the umask like open() would make it.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: Path | str, payload: Mapping[str, Any] | list[Any]) -> Path:
    """Write ``payload`` as indented JSON, atomically.

    Values JSON does not know (paths, timestamps) are written as their ``str()``.

    Args:
        path: the JSON file to (re)write.
        payload: a mapping or list of JSON-serialisable values.

    Returns:
        The path written.
    """
    return atomic_write(path, json.dumps(payload, indent=2, default=str) + "\n")


def dig(obj: Any, *keys: str) -> Any:
    """obj[k1][k2]... of nested JSON-like mappings, or None when any level is missing."""
    for key in keys:
        if not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


def file_sha256(path: Path | str) -> str:
    """The SHA-256 of a file's bytes, as hex (how the project names an artefact's content)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_json(path: Path | str) -> Any:
    """Read a JSON file, naming the file in the error when it is missing or not JSON.

    Args:
        path: the JSON file.

    Returns:
        The decoded value.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """A data frame as the CSV bytes this project writes (no index, ``\\n`` line ends, UTF-8)."""
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


def write_csv(path: Path | str, frame: pd.DataFrame) -> Path:
    """Write a data frame as CSV (see :func:`csv_bytes`), atomically.

    Args:
        path: the CSV file to (re)write.
        frame: the table; its index is not written.

    Returns:
        The path written.
    """
    return atomic_write(path, csv_bytes(frame))


# --- spreadsheet-safe cells ----------------------------------------------------------------------

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""A text cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets
(OWASP "CSV Injection"): a scan named ``=HYPERLINK(...).png`` would run when the CSV is opened."""


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text: a string starting with ``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return gets a leading single quote (OWASP's advice); anything
    else, numbers included, is returned unchanged.

    Args:
        value: one cell.

    Returns:
        The cell as it is safe to write.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


# --- disk errors in one line ---------------------------------------------------------------------


class DiskFull(RuntimeError):
    """A write ran out of space; the one-line message names the file and what was kept."""


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc``, or an exception it was raised from, is "no space left on device"
    (ENOSPC, or EDQUOT: over the user's quota)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(current):  # TensorFlow's own file errors
            return True
        current = current.__cause__ or current.__context__
    return False


def fsync_path(path: Path | str) -> None:
    """Flush a file's (or a folder's) data to the disk: after it, a rename that publishes it
    cannot leave an empty or half-written file behind a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
