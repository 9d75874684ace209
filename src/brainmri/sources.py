"""Where the images come from (a local copy, a Kaggle download, or phantoms) and the run's manifest."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmri import data, phantom
from brainmri.config import CLASS_NAMES, TUMOUR_CLASSES, Paths
from brainmri.io import read_json


def phantom_root(paths: Paths, cfg: Mapping[str, Any]) -> Path:
    """The folder of the phantom set for these parameters (one per distinct set)."""
    name = (
        f"size{cfg['phantom_size']}-train{cfg['phantom_train_per_class']}"
        f"-test{cfg['phantom_test_per_class']}-seed{cfg['seed']}"
    )
    return paths.data_root / "phantom" / name


def resolve_source(cfg: Mapping[str, Any], paths: Paths, echo=print) -> dict[str, Any]:
    """Find the dataset: data_dir with the Kaggle layout, else a Kaggle download, else phantoms.

    Args:
        cfg: the run and data parameters ("data_source", "data_dir", "kaggle_dataset", the
            phantom sizes and "seed").
        paths: the run's paths (a relative data_dir is resolved against the project root).
        echo: where the reason for falling back to phantoms is printed.

    Returns:
        ``{"source", "detail", "root"}``: which source was used ('data_dir', 'kaggle' or
        'phantom'), a human-readable detail, and the folder holding Training/ and Testing/.

    Raises:
        DataSourceError: the source asked for ('data_dir' or 'kaggle') cannot be used.
        DatasetLayoutError: data_dir does not hold the Kaggle layout.
    """
    mode = cfg["data_source"]
    if mode in ("auto", "data_dir") and cfg["data_dir"]:
        folder = Path(cfg["data_dir"]).expanduser()
        if not folder.is_absolute():
            folder = (paths.root / folder).resolve()
        root = data.find_dataset_root(folder)  # a wrong layout stops here with the expected tree
        return {"source": "data_dir", "detail": str(folder), "root": str(root)}
    if mode == "data_dir":
        raise data.DataSourceError(
            "data.data_source is 'data_dir' but data.data_dir is not set: "
            "pass DATA_DIR=/path/to/brain-tumor-mri-dataset"
        )
    if mode in ("auto", "kaggle"):
        target = paths.kaggle_dir
        try:
            root = data.download_kaggle(cfg["kaggle_dataset"], target, project_root=paths.root)
            return {"source": "kaggle", "detail": cfg["kaggle_dataset"], "root": str(root)}
        except data.DataSourceError as exc:
            if mode == "kaggle":
                raise
            echo(f"Kaggle download not possible, using the phantom set instead: {exc}")
    root = phantom.generate_phantom_dataset(
        phantom_root(paths, cfg),
        cfg["phantom_train_per_class"],
        cfg["phantom_test_per_class"],
        cfg["phantom_size"],
        cfg["seed"],
    )
    return {
        "source": "phantom",
        "detail": f"synthetic phantom set ({root.relative_to(paths.root)})",
        "root": str(root),
    }


def build_manifest(root: Path, cfg: Mapping[str, Any]) -> pd.DataFrame:
    """Scan and validate every file, audit duplicates, then assign train/val/test subsets.

    Args:
        root: the folder holding Training/ and Testing/.
        cfg: the run and data parameters ("max_image_pixels", "near_dup_correlation",
            "protocol", "dedup", "val_fraction", "test_fraction", "seed").

    Returns:
        ``(manifest, pairs)``: the manifest, one row per file (``data.SCAN_COLUMNS``, the
        audit's and the subsets' columns) plus "label_index", the class's position in
        ``CLASS_NAMES``; and the audit's copy pairs (``data.audit_duplicates``).

    Raises:
        DataSourceError: a class has no usable Training image.
    """
    manifest = data.scan_dataset(Path(root), max_pixels=cfg["max_image_pixels"])
    manifest, pairs = data.audit_duplicates(
        manifest, root, min_correlation=cfg["near_dup_correlation"]
    )
    usable = manifest[(manifest["status"] == "ok") & (manifest["split"] == "Training")]
    missing = [c for c in CLASS_NAMES if not (usable["label"] == c).any()]
    if missing:
        raise data.DataSourceError(
            f"{root}: no usable Training image of class(es) {missing} (every file of the "
            "class folder is excluded or the folder is empty): a model cannot learn a class it "
            "never sees; see the manifest's 'reason' column"
        )
    manifest = data.assign_subsets(
        manifest,
        protocol=cfg["protocol"],
        dedup=cfg["dedup"],
        val_fraction=cfg["val_fraction"],
        test_fraction=cfg["test_fraction"],
        seed=cfg["seed"],
    )
    manifest["label_index"] = manifest["label"].map(CLASS_NAMES.index).astype(int)
    return manifest, pairs


def data_warnings(manifest: pd.DataFrame, *, protocol: str) -> list[str]:
    """What a reader must know before trusting the per-class results: empty test classes.

    Args:
        manifest: the run's manifest.
        protocol: the evaluation protocol (``data.protocol``).

    Returns:
        One sentence per test split (the headline one, and under ``official`` the Testing
        folder) and class without any image.
    """
    splits = [("headline test", "headline")]
    if protocol == "official":
        splits.append(("official Testing", "test"))
    warnings = []
    for name, split in splits:
        rows = subset(manifest, name=split)
        for label in CLASS_NAMES:
            if not (rows["label"] == label).any():
                warnings.append(
                    f"the {name} split has no {label} image: its sensitivity is "
                    "undefined there and the accuracy says nothing about it"
                )
    return warnings


def subset(manifest: pd.DataFrame, name: str) -> pd.DataFrame:
    """Rows of one subset: 'train', 'val', 'test' or 'headline' (the test images the headline
    is computed on: the manifest's headline_test column)."""
    if name == "headline":
        return manifest[(manifest["subset"] == "test") & manifest["headline_test"]]
    return manifest[manifest["subset"] == name]


def copy_clusters(rows: pd.DataFrame) -> np.ndarray:
    """The copy group of each row, for a cluster bootstrap (copies are one piece of evidence).

    Args:
        rows: manifest rows (with the audit's "copy_group" column).

    Returns:
        One integer per row: its copy group.
    """
    return rows["copy_group"].to_numpy(dtype=np.int64)


def subset_files(
    manifest: pd.DataFrame, root: str | Path, name: str
) -> tuple[pd.DataFrame, list[str], list[int]]:
    """A subset's rows, absolute file paths and class indices.

    Args:
        manifest: the run's manifest.
        root: the data root the manifest's relative paths start from.
        name: 'train', 'val', 'test' or 'headline' (see :func:`subset`).

    Returns:
        ``(rows, files, labels)``: the manifest rows, their absolute paths as strings, and
        their class indices, in the same order.
    """
    rows = subset(manifest, name)
    files = [str(Path(root) / p) for p in rows["path"]]
    return rows, files, rows["label_index"].astype(int).tolist()


def load_run_data(paths: Paths) -> tuple[dict[str, Any], pd.DataFrame]:
    """The data record (data.json) and the manifest that 01_download wrote for this run.

    Args:
        paths: the run's paths.

    Returns:
        ``(record, manifest)``: the data record (see :func:`data_record`) and the manifest.

    Raises:
        FileNotFoundError: 01_download has not run for this profile.
    """
    if not paths.data_json.is_file():
        raise FileNotFoundError(
            f"{paths.data_json}: no data record; run the 01_download stage first"
        )
    return read_json(paths.data_json), data.read_manifest(paths.manifest)


def data_record(
    source: Mapping[str, Any],
    manifest: pd.DataFrame,
    manifest_file: Path,
    pairs: pd.DataFrame,
    *,
    protocol: str,
    min_correlation: float,
) -> dict:
    """The data section of metrics.json: source, counts per subset and class, manifest hash.

    Args:
        source: what :func:`resolve_source` returned.
        manifest: the run's manifest.
        manifest_file: the manifest as written, whose bytes are hashed.
        pairs: the audit's copy pairs.
        protocol: the evaluation protocol (``data.protocol``).
        min_correlation: the copy threshold of the audit (for its evidence pairs).

    Returns:
        The record: the source's keys, "protocol", "manifest_sha256", "files", "excluded",
        "counts" (per subset and class), "headline_test" (the headline test images per class
        and their copy groups), "leaks" (copies of train images in val and headline test:
        zero by construction, counted from the manifest), "warnings" (:func:`data_warnings`)
        and "audit".
    """
    counts = (
        manifest.groupby(["subset", "label"]).size().unstack(fill_value=0).to_dict(orient="index")
    )
    headline = subset(manifest, "headline")
    return {
        **{k: v for k, v in source.items()},
        "protocol": protocol,
        "manifest_sha256": data.manifest_hash(manifest_file),
        "files": int(len(manifest)),
        "excluded": int((manifest["status"] != "ok").sum()),
        "counts": {s: {c: int(n) for c, n in row.items()} for s, row in counts.items()},
        "headline_test": {
            "images": _class_counts(headline),
            "copy_groups": {
                c: int(headline.loc[headline["label"] == c, "copy_group"].nunique())
                for c in CLASS_NAMES
            },
        },
        "leaks": data.subset_leaks(manifest),
        "warnings": data_warnings(manifest, protocol=protocol),
        "audit": data.audit_summary(manifest, pairs, min_correlation=min_correlation),
    }


def _class_counts(rows: pd.DataFrame) -> dict[str, int]:
    counts = rows["label"].value_counts()
    return {c: int(counts.get(c, 0)) for c in CLASS_NAMES}


def resolve_mask_root(mask_dir: str | Path | None, project_root: Path) -> Path | None:
    """The folder of the tumour masks that ``data.mask_dir`` names, checked.

    Args:
        mask_dir: the masks tree (``<split>/<class>/<image stem>.png``; a relative path is
            resolved against the project root), or None for the data set's own ``masks/``
            (the phantom set's).
        project_root: the project root.

    Returns:
        The absolute folder, or None for the data set's own masks.

    Raises:
        FileNotFoundError: mask_dir is given but is not a folder.
    """
    if not mask_dir:
        return None
    root = Path(mask_dir).expanduser()
    if not root.is_absolute():
        root = (project_root / root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(
            f"data.mask_dir = {mask_dir}: no such folder (expected masks laid out as "
            "<split>/<class>/<image stem>.png; MASK_DIR=... sets it)"
        )
    return root


def mask_files(
    rows: pd.DataFrame, data_root: str | Path, mask_root: str | Path | None
) -> list[str]:
    """The mask file of each manifest row, "" where it has none (no tumour, or no mask made).

    Args:
        rows: manifest rows.
        data_root: the data root their paths are relative to.
        mask_root: the masks tree (:func:`resolve_mask_root`; None: ``<data_root>/masks``).

    Returns:
        One path (or "") per row, in order.
    """
    root = None if mask_root is None else Path(mask_root)
    found = []
    for path, label in zip(rows["path"], rows["label"], strict=True):
        mask = phantom.mask_path(Path(data_root) / path, Path(data_root), root)
        found.append(str(mask) if label in TUMOUR_CLASSES and mask.is_file() else "")
    return found


def guidance_masks(
    rows: pd.DataFrame, record: Mapping[str, Any], weight: float, echo=print
) -> list[str] | None:
    """The mask files that lesion-guided training reads (training images only), or None.

    Args:
        rows: the training subset's manifest rows.
        record: the run's data record (data.json), holding "root" and "mask_root".
        weight: ``train.lesion_guidance``; 0 reads no masks.
        echo: where a warning is printed.

    Returns:
        One mask file per row ("" where it has none, see :func:`mask_files`), or None when
        guidance is off or no training image has a mask: then training runs unguided, after a
        warning that says how to give the masks.
    """
    if weight <= 0:
        return None
    found = mask_files(rows, record["root"], record.get("mask_root"))
    if not any(found):
        where = record.get("mask_root") or f"{record['root']}/{phantom.MASKS_DIR}"
        echo(
            f"WARNING: train.lesion_guidance = {weight} but no training image has a tumour mask "
            f"under {where} (<split>/<class>/<image stem>.png): training WITHOUT lesion "
            "guidance. Give the masks with MASK_DIR=... (data.mask_dir) to train the recipe."
        )
        return None
    return found


def mask_counts(
    manifest: pd.DataFrame, data_root: str | Path, mask_root: str | Path | None
) -> dict[str, dict[str, int]]:
    """How many tumour images of each subset and class have a mask (for data.json).

    Args:
        manifest: the run's manifest.
        data_root: the data root its paths are relative to.
        mask_root: the masks tree (None: ``<data_root>/masks``).

    Returns:
        ``{subset: {class: count}}`` over the usable rows, tumour classes only.
    """
    rows = manifest[(manifest["status"] == "ok") & manifest["label"].isin(TUMOUR_CLASSES)]
    has = pd.Series([bool(f) for f in mask_files(rows, data_root, mask_root)], index=rows.index)
    table = has.groupby([rows["subset"], rows["label"]]).sum()
    return {
        str(s): {str(c): int(n) for c, n in group.droplevel(0).items()}
        for s, group in table.groupby(level=0)
    }


def images_with_masks(
    rows: pd.DataFrame,
    data_root: str | Path,
    size: int,
    *,
    mask_root: str | Path | None,
    per_class: int,
    crop: bool = False,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The tumour images of some manifest rows that have a mask, up to per_class per class.

    Args:
        rows: manifest rows (e.g. the validation subset).
        data_root: the data root their paths are relative to.
        size: the side the masks are resized to.
        mask_root: the masks tree (the data record's "mask_root", see
            :func:`resolve_mask_root`), or None for the data set's own ``masks/`` (phantoms).
        per_class: the most images kept per class, in manifest order.
        crop: cut the masks as ``load_image(..., crop=True)`` cuts their images.

    Returns:
        ``(rows, masks)``: the kept rows and their bool masks (N, size, size); no rows when
        no image has a mask.
    """
    root = None if mask_root is None else Path(mask_root)
    tumours = rows[rows["label"].isin(TUMOUR_CLASSES)]
    found = {
        path: phantom.load_mask(Path(data_root) / path, data_root, size, mask_root=root, crop=crop)
        for path in tumours["path"]
    }
    kept = tumours[[found[p] is not None for p in tumours["path"]]]
    kept = kept.groupby("label", sort=False).head(per_class)
    masks = np.stack([found[p] for p in kept["path"]]) if len(kept) else np.zeros((0, size, size))
    return kept, masks.astype(bool)
