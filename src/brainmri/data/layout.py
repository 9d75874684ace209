"""Dataset layout: find the <split>/<class>/ folder tree, whatever the folder spelling.

A folder that does not hold the expected tree raises DatasetLayoutError, whose message
shows the expected tree next to the one found.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from brainmri.config import CLASS_NAMES, SPLITS, TUMOUR_CLASSES

_NO_TUMOUR = next(c for c in CLASS_NAMES if c not in TUMOUR_CLASSES)


class DatasetLayoutError(ValueError):
    """A folder that does not hold the expected split/class tree; the message shows both."""


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


def class_folders(root: Path) -> dict[tuple[str, str], Path]:
    """The folder of each (split, class) under a data set root.

    Args:
        root: the folder holding Training/ and Testing/.

    Returns:
        (split, class) -> folder, for every split and class.

    Raises:
        DatasetLayoutError: a split or class folder is missing; the message names it.
    """
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
    """Return the folder (path or a descendant up to 3 levels) holding Training/ and Testing/.

    Args:
        path: a folder holding the dataset, possibly a few wrapper folders down (as an
            unpacked download is).

    Returns:
        The dataset root: the folder whose split and class folders all match.

    Raises:
        DatasetLayoutError: no such folder, or its tree lacks or repeats a split or class
            folder; the message shows the expected tree and the one found.
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetLayoutError(f"{path}: no such folder (expected a folder holding {SPLITS})")
    level, partial = [path], None
    for _ in range(4):
        for folder in level:
            splits = _match(_subdirs(folder), _SPLIT_KEYS, normalise=False)
            if len(splits) == len(SPLITS):
                class_folders(folder)
                return folder
            if splits and partial is None:
                partial = folder
        level = [sub for folder in level for sub in _subdirs(folder)]
    if partial is not None:
        class_folders(partial)  # raises, naming the missing split
    raise _layout_error(path, f"no folder holding {list(SPLITS)} within 3 levels")
