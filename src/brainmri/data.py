"""The image dataset: Kaggle download, layout checks, manifest scan, duplicate audit, splits."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, NamedTuple

import cv2
import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold

from brainmri.config import CLASS_NAMES, IMAGE_EXTENSIONS, SCHEMA, SPLITS, TUMOUR_CLASSES
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
AUDIT_COLUMNS: tuple[str, ...] = ("exact_group", "near_group", "label_conflict")
"""Columns added by audit_duplicates."""
SUBSET_COLUMNS: tuple[str, ...] = ("subset", "test_dedup")
"""Columns added by assign_subsets."""
SUBSETS: tuple[str, ...] = ("train", "val", "test", "excluded", "dropped")
DEDUP_CHOICES: tuple[str, ...] = SCHEMA["data"]["dedup"].choices

_INT_COLUMNS = ("bytes", "width", "height", "exact_group", "near_group")
_BOOL_COLUMNS = ("label_conflict", "test_dedup")
_TRAIN, _TEST = SPLITS
_NO_TUMOUR = next(c for c in CLASS_NAMES if c not in TUMOUR_CLASSES)
_INSTEAD = (
    "set DATA_DIR (or data_dir in the profile) to a local copy of the dataset, "
    "or run `make all PROFILE=demo` to use synthetic phantom data instead"
)
_EXAMPLE_PAIRS = 12
_HASH_CHUNK = 256  # rows per block of the pairwise Hamming computation (bounds memory)


class DataSourceError(RuntimeError):
    """The dataset could not be obtained; the message says why and what to do instead."""


class DatasetLayoutError(ValueError):
    """A folder that does not hold the expected split/class tree; the message shows both."""


# --- credentials and download ---------------------------------------------------------------


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
    """Return Kaggle (username, key) from the environment or a kaggle.json, or None if absent."""
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
    """Extract a zip or tar archive into dest, refusing it whole if any entry would escape."""
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
            zf.extractall(dest)
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


def download_kaggle(dataset: str, target: Path, project_root: Path) -> Path:
    """Return the dataset root at target, downloading it from Kaggle first if absent."""
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


# --- layout ---------------------------------------------------------------------------------


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_SPLIT_KEYS = {s.lower(): s for s in SPLITS}
_CLASS_KEYS = {
    **{c: c for c in CLASS_NAMES},
    **{f"{c}{t}": c for c in TUMOUR_CLASSES for t in ("tumor", "tumour")},
    _NO_TUMOUR.replace("tumor", "tumour"): _NO_TUMOUR,
}
"""Folder-name keys (lower case, letters and digits only) accepted for each class."""


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _found_tree(folder: Path, depth: int = 2, limit: int = 40) -> str:
    lines: list[str] = []

    def walk(current: Path, level: int) -> None:
        for sub in _subdirs(current):
            if len(lines) >= limit:
                return
            lines.append("    " + "  " * level + sub.name + "/")
            if level + 1 < depth:
                walk(sub, level + 1)

    walk(folder, 0)
    if len(lines) >= limit:
        lines.append("    ...")
    return "\n".join(lines) if lines else "    (no folders)"


def _layout_error(folder: Path, problem: str) -> DatasetLayoutError:
    classes = "{" + ",".join(CLASS_NAMES) + "}"
    expected = "\n".join(f"    {s}/{classes}/<images>" for s in SPLITS)
    return DatasetLayoutError(
        f"{folder}: {problem}.\n  Expected (names case-insensitive):\n    {folder.name}/\n"
        f"{expected}\n  Found:\n    {folder.name}/\n{_found_tree(folder)}"
    )


def _match(folders: Sequence[Path], keys: Mapping[str, str], normalise: bool) -> dict:
    found: dict[str, list[Path]] = {}
    for folder in folders:
        name = _key(folder.name) if normalise else folder.name.lower()
        if name in keys:
            found.setdefault(keys[name], []).append(folder)
    return found


def _layout(root: Path) -> dict[tuple[str, str], Path]:
    """Map (split, class) to its folder under root, or raise DatasetLayoutError."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: no such folder (expected the dataset root)")
    splits = _match(_subdirs(root), _SPLIT_KEYS, normalise=False)
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise _layout_error(root, f"missing split folder(s) {missing}")
    layout: dict[tuple[str, str], Path] = {}
    for split in SPLITS:
        if len(splits[split]) > 1:
            names = [p.name for p in splits[split]]
            raise _layout_error(root, f"several folders {names} match split {split!r}")
        split_dir = splits[split][0]
        subdirs = _subdirs(split_dir)
        classes = _match(subdirs, _CLASS_KEYS, normalise=True)
        missing = [c for c in CLASS_NAMES if c not in classes]
        if missing:
            raise _layout_error(root, f"{split_dir.name}/ lacks class folder(s) {missing}")
        for label, folders in classes.items():
            if len(folders) > 1:
                names = [p.name for p in folders]
                raise _layout_error(
                    root, f"{split_dir.name}/ has several folders {names} for class {label!r}"
                )
            layout[(split, label)] = folders[0]
        unknown = [p.name for p in subdirs if _key(p.name) not in _CLASS_KEYS]
        if unknown:
            raise _layout_error(root, f"{split_dir.name}/ has unknown class folder(s) {unknown}")
    return layout


def find_dataset_root(path: Path) -> Path:
    """Return the folder (path or a descendant up to 3 levels) holding Training/ and Testing/."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetLayoutError(f"{path}: no such folder (expected a folder holding {SPLITS})")
    level, partial = [path], None
    for _ in range(4):
        for folder in level:
            splits = _match(_subdirs(folder), _SPLIT_KEYS, normalise=False)
            if len(splits) == len(SPLITS):
                _layout(folder)
                return folder
            if splits and partial is None:
                partial = folder
        level = [sub for folder in level for sub in _subdirs(folder)]
    if partial is not None:
        _layout(partial)  # raises, naming the missing split
    raise _layout_error(path, f"no folder holding {list(SPLITS)} within 3 levels")


# --- decoding -------------------------------------------------------------------------------


class _DecodeError(ValueError):
    """A file that is not a readable image; the message is the manifest's reason."""


_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"BM": "BMP",
}
"""Leading bytes of the formats in IMAGE_EXTENSIONS: a file with one is a damaged image."""


def _pil_array(im: Image.Image) -> np.ndarray:
    """Pixels of a loaded PIL image as an array in RGB(A) channel order."""
    if im.mode.startswith("I;16"):
        return np.array(im).astype(np.uint16)  # also turns big-endian I;16B native
    if im.mode in ("L", "LA", "RGB", "RGBA", "I", "F"):
        return np.array(im)
    alpha = im.mode in ("PA", "RGBa", "La") or "transparency" in im.info
    return np.array(im.convert("RGBA" if alpha else "RGB"))


def _mode_of(array: np.ndarray) -> str:
    channels = 1 if array.ndim == 2 else array.shape[2]
    base = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}.get(channels, f"{channels}ch")
    return base if array.dtype == np.uint8 else f"{base};{array.dtype.itemsize * 8}"


def _decode(data: bytes) -> tuple[np.ndarray, str]:
    """Decode image bytes to (pixels in RGB(A) order, native dtype; PIL-style mode)."""
    if not data:
        raise _DecodeError("empty file")
    mode = fmt = None
    # header only (mode and format); a format PIL does not know may still suit OpenCV
    with contextlib.suppress(Exception), Image.open(io.BytesIO(data)) as im:
        mode, fmt = im.mode, im.format
    if fmt == "JPEG" and not data.rstrip(b"\0\r\n ").endswith(b"\xff\xd9"):
        # decoders fill in a cut or garbled scan with a warning only; the end marker tells
        raise _DecodeError("truncated or corrupt: no JPEG end-of-image marker")
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        array = None
    if array is None:
        if mode is None:
            kind = next((f for sig, f in _SIGNATURES.items() if data.startswith(sig)), None)
            if kind is None:
                raise _DecodeError("not an image")
            raise _DecodeError(f"truncated or corrupt: {kind} data that no decoder can read")
        try:  # PIL reads what OpenCV cannot, or says why not (LOAD_TRUNCATED_IMAGES is off)
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return _pil_array(im), mode
        except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, ...
            raise _DecodeError(f"truncated or corrupt: {exc}") from None
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA)
    if mode is None:
        mode = _mode_of(array)
    elif array.dtype == np.uint16 and "16" not in mode:
        mode = f"{mode};16"  # PIL reports 16-bit colour PNGs as plain RGB(A)
    return array, mode


def _to_rgb8(array: np.ndarray) -> np.ndarray:
    """Normalise decoded pixels to uint8 RGB (16-bit scaled by its maximum, alpha on black)."""
    if array.dtype == np.uint16:
        # Scaled by the image's own maximum, not 65535: MRI is often 12-bit data in 16-bit files,
        # which a fixed scale would turn near-black. Zero stays black.
        peak = int(array.max())
        array = cv2.convertScaleAbs(array, alpha=255.0 / peak if peak > 0 else 0.0)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:  # 32-bit integer or float images: stretch min..max
        array = cv2.normalize(array.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX)
        array = array.astype(np.uint8)
    if array.ndim == 3 and array.shape[2] in (2, 4):
        # OpenCV's RGBA->RGB conversion drops alpha instead of compositing it on black
        colour, alpha = array[..., :-1].astype(np.uint16), array[..., -1:].astype(np.uint16)
        array = ((colour * alpha + 127) // 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(array)


def _phash(rgb: np.ndarray) -> str:
    return str(imagehash.phash(Image.fromarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))))


def load_image(path: Path, size: int) -> np.ndarray:
    """Return an image file as uint8 RGB of shape (size, size, 3): the one normalisation."""
    path, size = Path(path), int(size)
    if size < 1:
        raise ValueError(f"{path}: image size must be a positive integer, got {size}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    try:
        rgb = _to_rgb8(_decode(data)[0])
    except _DecodeError as exc:
        raise ValueError(f"{path}: unreadable image: {exc}") from None
    if rgb.shape[:2] != (size, size):
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return rgb


# --- scan -----------------------------------------------------------------------------------


def _describe(root: Path, split: str, label: str, file: Path) -> dict[str, Any]:
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
        array, mode = _decode(data)
    except _DecodeError as exc:
        row["reason"] = str(exc)
        return row
    rgb = _to_rgb8(array)
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


def scan_dataset(root: Path) -> pd.DataFrame:
    """Return the manifest: one row per file under <split>/<class>/ with hashes and status."""
    root = Path(root)
    jobs: list[tuple[str, str, Path]] = []
    for (split, label), folder in _layout(root).items():
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            jobs.extend(
                (split, label, Path(dirpath) / name)
                for name in sorted(filenames)
                if not name.startswith(".")
            )
    with ThreadPoolExecutor(max_workers=2) as pool:  # OpenCV and PIL release the GIL
        rows = list(pool.map(lambda job: _describe(root, *job), jobs))
    df = pd.DataFrame(rows, columns=list(SCAN_COLUMNS))
    return _sorted(df.astype({c: "int64" for c in ("bytes", "width", "height")}))


# --- duplicate audit ------------------------------------------------------------------------


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; expected {list(columns)}")


def _cluster_ids(components: np.ndarray) -> np.ndarray:
    """Renumber component labels: multi-member ones 0.. in order of appearance, singletons -1."""
    _, first, inverse, counts = np.unique(
        components, return_index=True, return_inverse=True, return_counts=True
    )
    multi = np.flatnonzero(counts > 1)
    new = np.full(len(counts), -1, dtype=np.int64)
    new[multi[np.argsort(first[multi])]] = np.arange(len(multi))
    return new[inverse]


def _hash_ints(phashes: Sequence[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in phashes], dtype=np.uint64)


def _near_components(hashes: np.ndarray, start_labels: np.ndarray, distance: int) -> np.ndarray:
    """Connected components of hashes within a Hamming distance, merged with start_labels."""
    n = len(hashes)
    rep = start_labels.astype(np.int64)  # every node points at a representative node
    for start in range(0, n, _HASH_CHUNK):
        block = hashes[start : start + _HASH_CHUNK]
        dist = np.bitwise_count(block[:, None] ^ hashes[None, start:])
        rows, cols = np.nonzero(dist <= distance)
        keep = rows < cols  # each pair once; the diagonal is not an edge
        if not keep.any():
            continue
        src = np.concatenate([np.arange(n), rows[keep] + start])
        dst = np.concatenate([rep, cols[keep] + start])
        graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
        _, comp = connected_components(graph, directed=False)
        _, first = np.unique(comp, return_index=True)
        rep = first[comp]
    return rep


def audit_duplicates(manifest: pd.DataFrame, near_distance: int) -> pd.DataFrame:
    """Add exact_group, near_group (perceptual-hash clusters) and label_conflict columns."""
    _require(manifest, SCAN_COLUMNS, "audit_duplicates(manifest)")
    if isinstance(near_distance, bool) or not isinstance(near_distance, int | np.integer):
        raise ValueError(f"near_distance must be an integer in [0, 64], got {near_distance!r}")
    if not 0 <= near_distance <= 64:
        raise ValueError(f"near_distance must be an integer in [0, 64], got {near_distance}")
    df = manifest.drop(columns=[c for c in (*AUDIT_COLUMNS, *SUBSET_COLUMNS) if c in manifest])
    ok = np.flatnonzero((df["status"] == "ok").to_numpy())
    exact = np.full(len(df), -1, dtype=np.int64)
    near = np.full(len(df), -1, dtype=np.int64)
    if len(ok):
        codes, _ = pd.factorize(df["sha256"].to_numpy()[ok])
        _, first = np.unique(codes, return_index=True)
        by_sha = first[codes]  # representative: first row with the same bytes
        exact[ok] = _cluster_ids(by_sha)
        hashes = _hash_ints(df["phash"].to_numpy()[ok])
        near[ok] = _cluster_ids(_near_components(hashes, by_sha, int(near_distance)))
    df["exact_group"], df["near_group"] = exact, near
    labels_per_group = df[near >= 0].groupby("near_group")["label"].nunique()
    conflicted = labels_per_group.index[labels_per_group > 1]
    df["label_conflict"] = (near >= 0) & df["near_group"].isin(conflicted).to_numpy()
    return df


def _per_class(rows: pd.DataFrame) -> dict[str, Any]:
    counts = rows["label"].value_counts()
    return {"total": len(rows), "per_class": {c: int(counts.get(c, 0)) for c in CLASS_NAMES}}


def _example_pairs(ok: pd.DataFrame) -> list[tuple[str, str, int]]:
    """Up to 12 (path_a, path_b, distance) pairs: label conflicts, near and exact, in turn."""
    kinds: dict[str, list[tuple[tuple[int, ...], tuple[str, str, int]]]] = {
        "conflict": [],
        "near": [],
        "exact": [],
    }
    for group, members in ok[ok["near_group"] >= 0].groupby("near_group", sort=True):
        members = members.iloc[:50]  # bounds the pairwise table for a giant cluster
        hashes = _hash_ints(members["phash"].tolist())
        dist = np.bitwise_count(hashes[:, None] ^ hashes[None, :]).astype(np.int64)
        split, label = members["split"].to_numpy(), members["label"].to_numpy()
        cross = (split[:, None] == _TRAIN) & (split[None, :] == _TEST)
        allowed = cross if cross.any() else np.triu(np.ones(dist.shape, dtype=bool), 1)
        exact = members["exact_group"].to_numpy()
        same_bytes = (exact[:, None] == exact[None, :]) & (exact[:, None] >= 0)
        conflict = allowed & (label[:, None] != label[None, :])
        near = allowed & ~same_bytes
        # the closest pair of the wanted kind: a cluster's loosest pair may only be chained
        chosen = conflict if conflict.any() else near if near.any() else allowed
        i, j = np.unravel_index(np.argmin(np.where(chosen, dist, 65)), dist.shape)
        pair = (str(members["path"].iloc[i]), str(members["path"].iloc[j]), int(dist[i, j]))
        if conflict.any():
            kinds["conflict"].append(((pair[2], int(group)), pair))
        elif near.any():
            kinds["near"].append(((-pair[2], int(group)), pair))
        else:
            kinds["exact"].append(((int(group),), pair))
    queues = [[pair for _, pair in sorted(found)] for found in kinds.values()]
    pairs: list[tuple[str, str, int]] = []
    while len(pairs) < _EXAMPLE_PAIRS and any(queues):
        for queue in queues:
            if queue and len(pairs) < _EXAMPLE_PAIRS:
                pairs.append(queue.pop(0))
    return pairs


def audit_summary(manifest: pd.DataFrame) -> dict[str, Any]:
    """Counts of duplicates within and across splits per class, conflicts and example pairs.

    "Duplicates within a split" are the copies beyond the first of each cluster (what dedup
    drops); "test_in_training" counts Testing images sharing a cluster with a Training image.
    """
    _require(manifest, (*SCAN_COLUMNS, *AUDIT_COLUMNS), "audit_summary(manifest)")
    ok = manifest[manifest["status"] == "ok"]
    summary: dict[str, Any] = {
        "images": {
            "total": len(manifest),
            "ok": len(ok),
            "excluded": int((manifest["status"] != "ok").sum()),
        },
        "per_split": {s: _per_class(ok[ok["split"] == s]) for s in SPLITS},
    }
    scopes: dict[str, dict[str, Any]] = {"within_training": {}, "within_testing": {}}
    scopes["test_in_training"] = {}
    for kind, column in (("exact", "exact_group"), ("near", "near_group")):
        grouped = ok[ok[column] >= 0]
        for scope, split in (("within_training", _TRAIN), ("within_testing", _TEST)):
            rows = grouped[grouped["split"] == split]
            scopes[scope][kind] = _per_class(rows[rows.duplicated(column)])
        train_groups = grouped.loc[grouped["split"] == _TRAIN, column].unique()
        test = grouped[grouped["split"] == _TEST]
        scopes["test_in_training"][kind] = _per_class(test[test[column].isin(train_groups)])
    summary.update(scopes)
    summary["label_conflict_clusters"] = {
        kind: int((ok[ok[col] >= 0].groupby(col)["label"].nunique() > 1).sum())
        for kind, col in (("exact", "exact_group"), ("near", "near_group"))
    }
    summary["example_pairs"] = _example_pairs(ok)
    return summary


# --- subsets --------------------------------------------------------------------------------


def assign_subsets(
    manifest: pd.DataFrame, dedup: str, val_fraction: float, seed: int
) -> pd.DataFrame:
    """Add subset (train/val/test/excluded/dropped) and test_dedup (kept in leakage-free test)."""
    _require(manifest, (*SCAN_COLUMNS, "exact_group", "near_group"), "assign_subsets(manifest)")
    if dedup not in DEDUP_CHOICES:
        raise ValueError(f"dedup={dedup!r}: expected one of {list(DEDUP_CHOICES)}")
    if not 0.0 < float(val_fraction) <= 0.5:
        raise ValueError(f"val_fraction={val_fraction!r}: expected a number in (0, 0.5]")
    df = manifest.drop(columns=[c for c in SUBSET_COLUMNS if c in manifest]).reset_index(drop=True)
    ok = (df["status"] == "ok").to_numpy()
    train = ok & (df["split"] == _TRAIN).to_numpy()
    test = ok & (df["split"] == _TEST).to_numpy()
    subset = np.where(ok, "", "excluded").astype(object)
    subset[test] = "test"

    cluster = {"none": None, "exact": "exact_group", "near": "near_group"}[dedup]
    dropped = np.zeros(len(df), dtype=bool)
    if cluster is not None:
        grouped = train & (df[cluster] >= 0).to_numpy()
        dropped[grouped] = df.loc[grouped, cluster].duplicated().to_numpy()
    subset[dropped] = "dropped"

    flag = cluster or "exact_group"  # with dedup "none" the leakage-free view uses exact copies
    groups = df[flag].to_numpy()
    train_groups = np.unique(groups[train & (groups >= 0)])
    test_dedup = test & ~((groups >= 0) & np.isin(groups, train_groups))

    kept = np.flatnonzero(train & ~dropped)
    n_splits = round(1.0 / float(val_fraction))
    near = df["near_group"].to_numpy()[kept]
    singles = near < 0
    near = near.copy()
    near[singles] = near.max(initial=-1) + 1 + np.arange(singles.sum())
    if len(np.unique(near)) < n_splits:
        raise ValueError(
            f"assign_subsets: {len(kept)} kept Training images in {len(np.unique(near))} "
            f"clusters cannot give a val_fraction of {val_fraction} ({n_splits} folds)"
        )
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, val = next(folds.split(np.zeros(len(kept)), df["label"].to_numpy()[kept], groups=near))
    subset[kept] = "train"
    subset[kept[val]] = "val"
    df["subset"] = subset.astype(str)
    df["test_dedup"] = test_dedup
    return df


# --- manifest files -------------------------------------------------------------------------


def manifest_hash(manifest: pd.DataFrame | Path) -> str:
    """Return the sha256 of a manifest's CSV bytes (as write_manifest writes them, or a file)."""
    if isinstance(manifest, pd.DataFrame):
        return hashlib.sha256(csv_bytes(manifest)).hexdigest()
    path = Path(manifest)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest file")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(df: pd.DataFrame, path: Path) -> None:
    """Write the manifest CSV atomically (a reader never sees a partial file)."""
    write_csv(path, df)


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest CSV written by write_manifest, with its column types restored.

    Extra columns (e.g. a label index) come back as integers or booleans when every value
    is one, else as strings.
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
        if column in _INT_COLUMNS or (
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
