"""One run (or clean) of a profile at a time: an advisory lock on reports/<profile>/.lock.

Standard library only: `make clean` runs with the system Python, before the environment exists.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from brainmri.config import Paths


class ProfileUnavailable(RuntimeError):
    """The profile's folder cannot be written or deleted now; the message says why, in one line."""


class ProfileBusy(ProfileUnavailable):
    """Another process runs (or cleans) this profile; the message names its PID."""


class LinkedRunDir(ProfileUnavailable):
    """reports/<profile> is a symbolic link: writing or deleting there would reach its target."""


def writable_run_dir(paths: Paths) -> Path:
    """Return reports/<profile>, the folder a command may write in or delete, or refuse a link.

    Everything a run writes, and everything `make clean` deletes, is meant to stay inside the
    project's own outputs. Through a symbolic link it would land in (or remove) the link's
    target, wherever that is: a run wrote its .lock there, and clean ended in a traceback.
    reports/ itself may be a link (the whole outputs folder moved to another disk).

    Args:
        paths: the profile's paths.

    Returns:
        paths.run_dir, which is not a symbolic link (it may not exist yet).

    Raises:
        LinkedRunDir: reports/<profile> is a symbolic link (dangling or not).
    """
    run_dir = paths.run_dir
    if run_dir.is_symlink():
        raise LinkedRunDir(
            f"{run_dir} is a symbolic link (to {os.readlink(run_dir)}): refusing to write or "
            "delete through it; replace the link with a folder, or remove it"
        )
    return run_dir


def try_lock(handle: Any) -> str | None:
    """Take an exclusive advisory lock on an open file without waiting.

    Args:
        handle: the lock file, opened ``"a+"`` (it holds the holder's PID).

    Returns:
        None when the lock is taken; else what the file says of the process holding it (its
        PID, or "unknown").
    """
    import fcntl

    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        return handle.read().strip() or "unknown"
    return None


@contextlib.contextmanager
def profile_lock(paths: Paths) -> Iterator[None]:
    """Hold reports/<profile>/.lock for the duration: one run (or clean) of a profile at a time.

    Two runs of one profile would write the same history, model and notebooks at once (seen:
    one crashed on the HDF5 file, the other left a 1-row history for 40 epochs). The lock is an
    advisory fcntl lock, so a killed holder releases it; the file holds the holder's PID.

    Raises:
        ProfileBusy: another process holds the lock.
        LinkedRunDir: reports/<profile> is a symbolic link (:func:`writable_run_dir`).
    """
    import fcntl

    run_dir = writable_run_dir(paths)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_file = run_dir / ".lock"
    with open(lock_file, "a+") as handle:
        holder = try_lock(handle)
        if holder is not None:
            raise ProfileBusy(
                f"profile '{paths.profile}' is in use by process {holder} "
                f"({lock_file.relative_to(paths.root)}): wait for it to finish, or stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
