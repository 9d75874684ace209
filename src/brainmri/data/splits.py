"""Subsets: train, val and test from the official split, with de-duplication.

assign_subsets turns an audited manifest into the subsets a run trains, validates and tests
on, and flags the Testing images that form the leakage-free test set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainmri.config import SCHEMA, SPLITS
from brainmri.data.manifest import SCAN_COLUMNS, _require_columns

SUBSET_COLUMNS: tuple[str, ...] = ("subset", "test_dedup")
"""Columns added by assign_subsets."""
SUBSETS: tuple[str, ...] = ("train", "val", "test", "excluded", "dropped")
"""The values of the subset column."""
DEDUP_CHOICES: tuple[str, ...] = SCHEMA["data"]["dedup"].choices
"""The dedup values assign_subsets accepts (those of the data.dedup parameter)."""

_TRAIN, _TEST = SPLITS


def assign_subsets(
    manifest: pd.DataFrame, *, dedup: str, val_fraction: float, seed: int
) -> pd.DataFrame:
    """Add subset (train/val/test/excluded/dropped) and test_dedup (kept in leakage-free test).

    Args:
        manifest: a manifest from audit_duplicates; subset columns it already has are
            replaced.
        dedup: one of DEDUP_CHOICES: "none" keeps every Training image, "exact" or "near"
            keeps the first of each exact or near cluster and marks the others "dropped"; it
            also chooses which clusters take a Testing image out of the leakage-free test set
            ("none" uses exact copies).
        val_fraction: the share of kept Training images held out for validation, in (0, 0.5];
            the split is stratified by class and keeps near clusters on one side.
        seed: the seed of the validation split.

    Returns:
        The manifest, index reset, with SUBSET_COLUMNS: the subset of every row ("excluded"
        for files that are not "ok", "test" for every Testing image) and test_dedup, True for
        Testing images that share no cluster with a Training image.

    Raises:
        ValueError: a required column is missing, dedup or val_fraction is out of range, or
            there are too few clusters for the number of folds.
    """
    _require_columns(
        manifest, (*SCAN_COLUMNS, "exact_group", "near_group"), "assign_subsets(manifest)"
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
    # imported here: the input pipeline imports brainmri.data for load_image only
    from sklearn.model_selection import StratifiedGroupKFold

    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, val = next(folds.split(np.zeros(len(kept)), df["label"].to_numpy()[kept], groups=near))
    subset[kept] = "train"
    subset[kept[val]] = "val"
    df["subset"] = subset.astype(str)
    df["test_dedup"] = test_dedup
    return df
