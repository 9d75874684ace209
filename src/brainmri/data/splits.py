"""Subsets: train, val and test by whole copy groups, under one of two evaluation protocols.

The Kaggle set holds many scans several times (as they are, mirrored, re-cut: see
``brainmri.data.audit``), so a split that assigns images one by one puts copies of training
images into validation and test. Here every copy group goes whole to one subset, and the
``data.protocol`` parameter says which images the headline is computed on (``headline_test``):

- ``grouped``: Training and Testing are pooled; whole groups go to test, then validation, then
  training, stratified by class and seeded. The headline test is the whole test subset: no
  image there has a copy of any kind in train or val.
- ``official``: train and validation come from the official Training folder (validation by
  whole groups), test is the official Testing folder, as the reference recipe did. Its
  accuracy is reported for comparison with the published figures, but the headline is the
  Testing images whose copy group holds no Training image.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainmri.config import CLASS_NAMES, SCHEMA, SPLITS
from brainmri.data.manifest import SCAN_COLUMNS, require_columns

SUBSET_COLUMNS: tuple[str, ...] = ("subset", "headline_test")
"""Columns added by assign_subsets."""
SUBSETS: tuple[str, ...] = ("train", "val", "test", "excluded", "dropped")
"""The values of the subset column."""
DEDUP_CHOICES: tuple[str, ...] = SCHEMA["data"]["dedup"].choices
"""The dedup values assign_subsets accepts (those of the data.dedup parameter)."""
PROTOCOLS: tuple[str, ...] = SCHEMA["data"]["protocol"].choices
"""The evaluation protocols (the data.protocol parameter)."""

_TRAIN, _TEST = SPLITS


def assign_subsets(
    manifest: pd.DataFrame,
    *,
    protocol: str,
    dedup: str,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> pd.DataFrame:
    """Add subset (train/val/test/excluded/dropped) and headline_test.

    Args:
        manifest: a manifest from audit_duplicates; subset columns it already has are
            replaced.
        protocol: one of PROTOCOLS (see the module docstring).
        dedup: one of DEDUP_CHOICES, for the train subset only: "none" keeps every image,
            "exact" keeps one file of each set of byte copies, "near" one file of each copy
            group; the others are marked "dropped".
        val_fraction: the share of the training pool (official: Training; grouped: what the
            test subset leaves) held out for validation, in (0, 0.5].
        test_fraction: with ``grouped``, the share of all images held out for test, in
            (0, 0.5]; ignored by ``official``.
        seed: the seed of the group assignment.

    Returns:
        The manifest, index reset, with SUBSET_COLUMNS. Each copy group lies in one subset
        (train and dropped count as one side); ``headline_test`` is True for the test images
        the headline accuracy is computed on.

    Raises:
        ValueError: a required column is missing, protocol, dedup or a fraction is out of
            range, or a class has too few copy groups to give every subset an image.
    """
    require_columns(
        manifest,
        (*SCAN_COLUMNS, "exact_group", "copy_group", "training_copy"),
        "assign_subsets(manifest)",
    )
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}: expected one of {list(PROTOCOLS)}")
    if dedup not in DEDUP_CHOICES:
        raise ValueError(f"dedup={dedup!r}: expected one of {list(DEDUP_CHOICES)}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not 0.0 < float(value) <= 0.5:
            raise ValueError(f"{name}={value!r}: expected a number in (0, 0.5]")
    df = manifest.drop(columns=[c for c in SUBSET_COLUMNS if c in manifest]).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    ok = (df["status"] == "ok").to_numpy()
    subset = np.where(ok, "", "excluded").astype(object)
    if protocol == "official":
        test = ok & (df["split"] == _TEST).to_numpy()
        pool = ok & (df["split"] == _TRAIN).to_numpy()
        headline = test & ~df["training_copy"].to_numpy(dtype=bool)
    else:
        test = _take_groups(df, ok, float(test_fraction), rng, "test")
        pool = ok & ~test
        headline = test
    subset[test] = "test"
    val = _take_groups(df, pool, float(val_fraction), rng, "validation")
    subset[val] = "val"
    train = pool & ~val
    column = {"none": None, "exact": "exact_group", "near": "copy_group"}[dedup]
    dropped = np.zeros(len(df), dtype=bool)
    if column is not None:
        grouped = train & (df[column] >= 0).to_numpy()
        dropped[grouped] = df.loc[grouped, column].duplicated().to_numpy()
    subset[train & ~dropped] = "train"
    subset[dropped] = "dropped"
    df["subset"] = subset.astype(str)
    df["headline_test"] = headline
    return df


def _group_labels(df: pd.DataFrame, rows: np.ndarray) -> pd.Series:
    """Each copy group's class: its most common label (ties: the first in CLASS_NAMES)."""
    counts = pd.crosstab(df["copy_group"].to_numpy()[rows], df["label"].to_numpy()[rows])
    counts = counts.reindex(columns=[c for c in CLASS_NAMES if c in counts.columns])
    return counts.idxmax(axis=1)


def _take_groups(
    df: pd.DataFrame, pool: np.ndarray, fraction: float, rng: np.random.Generator, what: str
) -> np.ndarray:
    """A boolean row mask of whole copy groups holding about ``fraction`` of the pool's images,
    stratified by class.

    Each group counts for its most common label. Each class gets an integer target of images,
    the classes' shares of round(fraction * pool) by largest remainder, and takes its groups in
    seeded random order while they fit; a group too big to fit is skipped, so a giant chain of
    copies stays on the training side. At least one group of each class stays behind.
    """
    rows = np.flatnonzero(pool)
    taken = np.zeros(len(df), dtype=bool)
    if not len(rows):
        return taken
    group = df["copy_group"].to_numpy()[rows]
    sizes = pd.Series(group).value_counts()
    label_of = _group_labels(df, rows)
    classes = [c for c in CLASS_NAMES if (label_of == c).any()]
    per_class = np.array([sizes[label_of.index[label_of == c]].sum() for c in classes])
    exact_share = fraction * per_class
    targets = np.floor(exact_share).astype(int)
    short = int(round(fraction * len(rows))) - targets.sum()
    targets[np.argsort(-(exact_share - targets), kind="stable")[: max(short, 0)]] += 1
    chosen: list[int] = []
    for label, target in zip(classes, targets, strict=True):
        mine = label_of.index[label_of == label].to_numpy()
        if len(mine) < 2:
            raise ValueError(
                f"assign_subsets: class {label!r} has {len(mine)} copy group(s) in the pool "
                f"that {what} is taken from: too few to give both sides an image"
            )
        picked, total = [], 0
        for g in mine[rng.permutation(len(mine))]:
            if total >= target:
                break
            if total + sizes[g] <= target:
                picked.append(g)
                total += sizes[g]
        if not picked:  # every group is bigger than the target: the smallest one
            picked = [mine[np.argmin(sizes[mine].to_numpy())]]
        chosen.extend(picked[: len(mine) - 1])  # at least one group stays behind
    taken[rows[np.isin(group, chosen)]] = True
    return taken


def subset_leaks(manifest: pd.DataFrame) -> dict[str, int]:
    """How many evaluation images share a copy group with an image of another role.

    The measure of the splits' promise, read from the manifest alone: under either protocol
    every count is 0 (the train side is train and dropped, which training never reads but
    whose copies would still be no fresh evidence).

    Args:
        manifest: a manifest from assign_subsets.

    Returns:
        ``{"val_in_train", "headline_in_train", "headline_in_val"}``: validation images with a
        copy on the train side, headline test images with a copy on the train side, and
        headline test images with a copy in validation.
    """
    require_columns(manifest, ("copy_group", *SUBSET_COLUMNS), "subset_leaks(manifest)")
    group, subset = manifest["copy_group"], manifest["subset"]
    train = set(group[subset.isin(["train", "dropped"])])
    val = set(group[subset == "val"])
    headline = group[(subset == "test") & manifest["headline_test"].astype(bool)]
    return {
        "val_in_train": int(group[subset == "val"].isin(train).sum()),
        "headline_in_train": int(headline.isin(train).sum()),
        "headline_in_val": int(headline.isin(val).sum()),
    }
