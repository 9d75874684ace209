"""Subsets: train, val and test from the official split, with de-duplication.

assign_subsets turns an audited manifest into the subsets a run trains, validates and tests
on, and flags the Testing images that form the leakage-free test set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainmri.config import SCHEMA, SPLITS
from brainmri.data.manifest import SCAN_COLUMNS, _require_columns

SUBSET_COLUMNS: tuple[str, ...] = ("subset", "test_clean")
"""Columns added by assign_subsets."""
SUBSETS: tuple[str, ...] = ("train", "val", "test", "excluded", "dropped")
"""The values of the subset column."""
DEDUP_CHOICES: tuple[str, ...] = SCHEMA["data"]["dedup"].choices
"""The dedup values assign_subsets accepts (those of the data.dedup parameter)."""

_TRAIN, _TEST = SPLITS


def assign_subsets(
    manifest: pd.DataFrame, *, dedup: str, val_fraction: float, seed: int
) -> pd.DataFrame:
    """Add subset (train/val/test/excluded/dropped) and test_clean (the leakage-free Testing).

    Args:
        manifest: a manifest from audit_duplicates; subset columns it already has are
            replaced.
        dedup: one of DEDUP_CHOICES, a choice for Training only: "none" keeps every
            Training image, "exact" or "near" keeps the first of each exact or near cluster
            and marks the others "dropped".
        val_fraction: the share of kept Training images held out for validation, in (0, 0.5];
            met within one cluster per class, stratified by class, near clusters never split.
        seed: the seed of the validation split.

    Returns:
        The manifest, index reset, with SUBSET_COLUMNS: the subset of every row ("excluded"
        for files that are not "ok", "test" for every Testing image) and test_clean, True for
        Testing images without an exact or confirmed near copy in Training (whatever dedup).

    Raises:
        ValueError: a required column is missing, dedup or val_fraction is out of range, or
            a class has too few kept Training clusters to give both subsets an image.
    """
    _require_columns(
        manifest,
        (*SCAN_COLUMNS, "exact_group", "near_group", "training_copy"),
        "assign_subsets(manifest)",
    )
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
    kept = train & ~dropped
    subset[kept] = "train"
    subset[_validation_rows(df, kept, float(val_fraction), seed)] = "val"
    df["subset"] = subset.astype(str)
    df["test_clean"] = test & ~df["training_copy"].to_numpy(dtype=bool)
    return df


def _validation_rows(df: pd.DataFrame, kept: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Row indices of the validation subset: whole near clusters, per class, in seeded order.

    Near clusters hold one label (audit_duplicates never merges labels). Each class gets an
    integer target, the classes' shares of round(fraction * kept) by largest remainder, and
    takes clusters in seeded random order while they fit; a cluster too big to fit is
    skipped. With single images available the target is met exactly, so the fraction asked is
    the fraction given (a K-fold split would round 0.3 to 1/3).
    """
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(kept)
    near = df["near_group"].to_numpy()[rows]
    group = np.where(near >= 0, near, -1 - np.arange(len(rows)))  # singletons: own cluster
    labels = df["label"].to_numpy()[rows]
    classes = sorted(set(labels))
    counts = np.array([(labels == c).sum() for c in classes])
    exact_share = fraction * counts
    targets = np.floor(exact_share).astype(int)
    short = int(round(fraction * len(rows))) - targets.sum()
    targets[np.argsort(-(exact_share - targets), kind="stable")[:short]] += 1
    chosen = []
    for label, target in zip(classes, targets, strict=True):
        mine = labels == label
        groups, sizes = np.unique(group[mine], return_counts=True)
        if len(groups) < 2:
            raise ValueError(
                f"assign_subsets: class {label!r} has {mine.sum()} kept Training image(s) in "
                f"{len(groups)} cluster(s): too few for both a training and a validation part"
            )
        taken, total = [], 0
        for k in rng.permutation(len(groups)):
            if total >= target:
                break
            if total + sizes[k] <= target:
                taken.append(groups[k])
                total += sizes[k]
        if not taken:  # every cluster is bigger than the target: the smallest one
            taken = [groups[np.argmin(sizes)]]
        taken = taken[: len(groups) - 1]  # at least one cluster stays for training
        chosen.append(rows[mine & np.isin(group, taken)])
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
