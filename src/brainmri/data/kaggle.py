"""Kaggle download: credentials, the one network call, safe archive extraction.

The only module that talks to Kaggle; the Kaggle API is imported when a download starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import NamedTuple

from brainmri.data.layout import DatasetLayoutError, find_dataset_root

_INSTEAD = (
    "set DATA_DIR (or data_dir in the profile) to a local copy of the dataset, "
    "or run `make all PROFILE=demo` to use synthetic phantom data instead"
)


class DataSourceError(RuntimeError):
    """The dataset could not be obtained; the message says why and what to do instead."""


class KaggleCredentials(NamedTuple):
    """A Kaggle user name and API key whose repr never shows the key."""

    username: str
    key: str

    def __repr__(self) -> str:
        return f"KaggleCredentials(username={self.username!r}, key='***')"


def _kaggle_json_files(project_root: Path) -> list[Path]:
    config_dir = os.environ.get("KAGGLE_CONFIG_DIR")
    user_dir = Path(config_dir) if config_dir else Path.home() / ".kaggle"
    return [user_dir / "kaggle.json", Path(project_root) / "kaggle.json"]


def kaggle_credentials(project_root: Path) -> tuple[str, str] | None:
    """Return Kaggle (username, key) from the environment or a kaggle.json, or None if absent.

    Args:
        project_root: the repository root, whose kaggle.json is the last place looked in
            (after KAGGLE_USERNAME/KAGGLE_KEY and $KAGGLE_CONFIG_DIR or ~/.kaggle/kaggle.json).

    Returns:
        KaggleCredentials (a (username, key) tuple whose repr hides the key), or None when
        no source has any.

    Raises:
        DataSourceError: the first kaggle.json found is not valid (its content is not shown).
    """
    user, key = os.environ.get("KAGGLE_USERNAME", ""), os.environ.get("KAGGLE_KEY", "")
    if user and key:
        return KaggleCredentials(user, key)
    for file in _kaggle_json_files(project_root):
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError):
            data = None  # the parser's message may quote the file, i.e. the key: not shown
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("username"), str)
            or not isinstance(data.get("key"), str)
            or not data["username"]
            or not data["key"]
        ):
            raise DataSourceError(
                f"{file}: not a valid kaggle.json: expected a JSON object with non-empty "
                '"username" and "key" strings (download a fresh one from '
                "https://www.kaggle.com/settings, 'Create New Token')"
            )
        return KaggleCredentials(data["username"], data["key"])
    return None


def _missing_credentials_message(project_root: Path) -> str:
    files = " or ".join(str(f) for f in _kaggle_json_files(project_root))
    return (
        "Kaggle credentials not found: set KAGGLE_USERNAME and KAGGLE_KEY, or put the "
        f"kaggle.json from https://www.kaggle.com/settings in {files}; or {_INSTEAD}."
    )


def _fetch(dataset: str, into: Path) -> None:
    """Download the Kaggle dataset's zip archive into a folder (the only network call)."""
    # opendatasets.download() (which wraps this same kaggle call) reads credentials only from
    # ./kaggle.json, else prompts on stdin, which fails or hangs in a papermill kernel; and it
    # unzips without checking the entries. So the kaggle API it wraps is called directly,
    # credentials come from the environment, and the zip is left for safe_extract.
    from kaggle.api.kaggle_api_extended import KaggleApi

    api = KaggleApi()
    try:
        api.authenticate()
    except SystemExit:  # kaggle exits when it finds no credentials at all
        raise PermissionError("Kaggle found no usable credentials") from None
    api.dataset_download_files(dataset, path=str(into), force=True, quiet=True, unzip=False)


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _http_status(exc: BaseException) -> int | None:
    for err in _causes(exc):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status is None:
            status = getattr(err, "code", None)  # urllib.error.HTTPError
        if isinstance(status, int):
            return status
    return None


def _download_error(
    exc: BaseException, dataset: str, creds: KaggleCredentials, project_root: Path
) -> DataSourceError:
    """Turn a failed download into one clear DataSourceError that never quotes the key."""
    detail = f"{type(exc).__name__}: {exc}".replace(creds.key, "***")
    status = _http_status(exc)
    if status in (401, 403):
        files = " or ".join(str(f) for f in _kaggle_json_files(project_root))
        return DataSourceError(
            f"Kaggle rejected the credentials of user {creds.username!r} (HTTP {status}) when "
            f"downloading {dataset!r}: create a new API token at https://www.kaggle.com/settings "
            f"and put its kaggle.json in {files} (or set KAGGLE_USERNAME and KAGGLE_KEY); "
            f"or {_INSTEAD}."
        )
    if status is not None:
        return DataSourceError(
            f"Kaggle download of {dataset!r} failed with HTTP {status} ({detail}): check the "
            f"dataset name, or {_INSTEAD}."
        )
    if any(isinstance(err, OSError | TimeoutError) for err in _causes(exc)):
        return DataSourceError(
            f"cannot reach Kaggle to download {dataset!r} ({detail}): check the network "
            f"connection, or {_INSTEAD}."
        )
    return DataSourceError(f"Kaggle download of {dataset!r} failed ({detail}); {_INSTEAD}.")


def _is_archive(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


def _entry_target(dest: Path, name: str) -> Path | None:
    """The resolved path an archive entry would be written to, or None if it escapes dest."""
    if not name or PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute():
        return None
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts or (parts and PureWindowsPath(parts[0]).drive):
        return None
    target = (dest / Path(*parts)).resolve() if parts else dest.resolve()
    return target if target.is_relative_to(dest.resolve()) else None


def _link_escapes(dest: Path, entry: str, link: str) -> bool:
    """Whether a symlink entry's target would resolve outside dest."""
    if PurePosixPath(link).is_absolute() or PureWindowsPath(link).is_absolute():
        return True
    relative = os.path.normpath(str(PurePosixPath(entry).parent / link))
    return _entry_target(dest, relative) is None


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a zip or tar archive into dest, refusing it whole if any entry would escape.

    Args:
        archive: a zip or tar (optionally compressed) file.
        dest: the folder to extract into; created only once every entry has been checked.

    Raises:
        DataSourceError: not a zip or tar archive, or an entry or link would be written or
            point outside dest, or a tar entry is a device (nothing is extracted then), or an
            entry cannot be written where the archive puts it.
    """
    archive, dest = Path(archive), Path(dest)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                bad = _entry_target(dest, info.filename) is None
                if not bad and stat.S_ISLNK(info.external_attr >> 16):
                    link = zf.read(info).decode("utf-8", "replace")
                    bad = _link_escapes(dest, info.filename, link)
                if bad:
                    raise DataSourceError(
                        f"{archive}: refusing to extract: entry {info.filename!r} would be "
                        f"written or point outside {dest}"
                    )
            dest.mkdir(parents=True, exist_ok=True)
            try:
                zf.extractall(dest)
            except OSError as exc:  # e.g. an entry below a symlink entry (written as a file)
                raise DataSourceError(
                    f"{archive}: cannot extract entry {exc.filename or '?'}: {exc.strerror}; "
                    "the archive's layout is broken (nothing outside "
                    f"{dest} was written)"
                ) from None
        return
    if not tarfile.is_tarfile(archive):
        raise DataSourceError(f"{archive}: not a zip or tar archive")
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for member in members:
            bad = _entry_target(dest, member.name) is None or member.isdev()
            if not bad and member.issym():
                bad = _link_escapes(dest, member.name, member.linkname)
            if not bad and member.islnk():  # hard links name a path inside the archive
                bad = _entry_target(dest, member.linkname) is None
            if bad:
                raise DataSourceError(
                    f"{archive}: refusing to extract: entry {member.name!r} would be "
                    f"written or point outside {dest}"
                )
        dest.mkdir(parents=True, exist_ok=True)
        tf.extractall(dest, members=members, filter="data")


def download_kaggle(dataset: str, target: Path, *, project_root: Path) -> Path:
    """Return the dataset root at target, downloading it from Kaggle first if absent.

    The archive is fetched and unpacked in a temporary folder next to target, then moved
    into place in one rename, so target never holds half a dataset.

    Args:
        dataset: the Kaggle dataset, "owner/slug".
        target: the folder the dataset root ends up as; reused when it already holds one.
        project_root: the repository root, where a kaggle.json may be (see
            kaggle_credentials).

    Returns:
        target, or the dataset root found inside an existing target.

    Raises:
        DataSourceError: no credentials, the download failed, the archive is unsafe or
            lacks the layout, or target holds something else; the message never quotes the
            key and says what to do instead.
    """
    target = Path(target)
    if target.exists():
        try:
            return find_dataset_root(target)
        except DatasetLayoutError as exc:
            if not target.is_dir() or any(target.iterdir()):
                raise DataSourceError(
                    f"{target} exists but does not hold the dataset; move it away or delete "
                    f"it and retry, or {_INSTEAD}. Details: {exc}"
                ) from None
    creds = kaggle_credentials(project_root)
    if creds is None:
        raise DataSourceError(_missing_credentials_message(project_root))
    creds = KaggleCredentials(*creds)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-tmp-", dir=target.parent))
    try:
        error = None
        try:
            with _environment({"KAGGLE_USERNAME": creds.username, "KAGGLE_KEY": creds.key}):
                _fetch(dataset, tmp)
        except Exception as exc:
            error = _download_error(exc, dataset, creds, project_root)
        if error is not None:  # raised outside the handler: no chained cause quoting the key
            raise error
        for archive in sorted(p for p in tmp.iterdir() if p.is_file() and _is_archive(p)):
            safe_extract(archive, tmp / "extracted" / archive.name.split(".")[0])
            archive.unlink()
        try:
            root = find_dataset_root(tmp)
        except DatasetLayoutError as exc:
            raise DataSourceError(
                f"the download of {dataset!r} does not hold the expected layout: {exc}"
            ) from None
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        try:
            os.rename(root, target)  # same file system: atomic, no half dataset is ever visible
        except OSError:
            with contextlib.suppress(DatasetLayoutError):
                return find_dataset_root(target)  # another process finished first
            raise DataSourceError(
                f"cannot move the downloaded dataset into {target}: it appeared meanwhile "
                "and does not hold the dataset; delete it and retry"
            ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
