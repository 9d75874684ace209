"""One run (or clean) of a profile at a time: an advisory lock on reports/<profile>/.lock.

Standard library only: `make clean` runs with the system Python, before the environment exists.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from brainmri.config import Paths


class ProfileBusy(RuntimeError):
    """Another process runs (or cleans) this profile; the message names its PID."""


@contextlib.contextmanager
def profile_lock(paths: Paths) -> Iterator[None]:
    """Hold reports/<profile>/.lock for the duration: one run (or clean) of a profile at a time.

    Two runs of one profile would write the same history, model and notebooks at once (seen:
    one crashed on the HDF5 file, the other left a 1-row history for 40 epochs). The lock is an
    advisory fcntl lock, so a killed holder releases it; the file holds the holder's PID.

    Raises:
        ProfileBusy: another process holds the lock.
    """
    import fcntl

    paths.run_dir.mkdir(parents=True, exist_ok=True)
    lock_file = paths.run_dir / ".lock"
    with open(lock_file, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
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
