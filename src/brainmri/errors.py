"""One line for a failed file operation: the path, what went wrong, what to do.

Standard library only: the command line uses it before the project's environment exists
(``make clean`` runs on the machine's own Python).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

# What to do about the OSErrors a command can meet on its way (a full or read-only disk, a
# file where a folder should be); the others get their meaning alone.
_OS_REMEDIES = {
    errno.EROFS: "the file system is read-only: work in a writable copy, or remount it read-write",
    errno.EACCES: "check the owner and permissions of that path",
    errno.EPERM: "check the owner and permissions of that path",
    errno.ENOSPC: "the disk is full: free some space",
    errno.EDQUOT: "the disk quota is used up: free some space",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
    errno.EISDIR: "that path is a folder where a file is expected",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.ELOOP: "too many symbolic links on that path",
}


def os_error_line(exc: OSError, path: Path | str | None = None) -> str:
    """One line for an OSError: the path, what the errno means (and its name), what to do.

    Args:
        exc: the error, e.g. ``OSError(30, "Read-only file system", "reports/demo/.lock")``.
        path: the path the user named (an output folder), shown instead of the error's own
            file names; default: those names.

    Returns:
        e.g. ``reports/demo/.lock: read-only file system (EROFS); the file system is read-only:
        work in a writable copy, or remount it read-write``. An error without an errno (a
        message of this project's) comes back as it is, on one line.
    """
    if exc.errno is None:
        return " ".join(str(exc).split()) or type(exc).__name__
    code = exc.errno
    named = Path(exc.filename) if isinstance(exc.filename, str) else None
    # mkdir(parents=True) below a file says "File exists" about that file: the real problem is
    # a file where a folder should be
    below_a_file = named is not None and named.exists() and not named.is_dir()
    if code == errno.EEXIST and path is not None and below_a_file and named != Path(path):
        code = errno.ENOTDIR
    meaning = (exc.strerror if code == exc.errno and exc.strerror else os.strerror(code)).lower()
    name = errno.errorcode.get(code, f"errno {code}")
    names = (exc.filename, exc.filename2) if path is None else (path,)
    where = " -> ".join(str(f) for f in names if f is not None)
    line = f"{where}: {meaning} ({name})" if where else f"{meaning} ({name})"
    remedy = _OS_REMEDIES.get(code)
    return f"{line}; {remedy}" if remedy else line
