"""Subsets: de-duplication, the leakage-free test flags, a grouped stratified seeded split."""

from __future__ import annotations

import pytest

from brainmri import data
from brainmri.config import SPLITS

TRAIN, TEST = SPLITS


def test_assign_subsets_dedup_and_test_flags(clustered):
    exact = data.assign_subsets(clustered, dedup="exact", val_fraction=0.25, seed=1)
    assert set(exact["subset"]) == {"train", "val", "test", "excluded", "dropped"}
    assert list(exact.columns[-2:]) == ["subset", "test_clean"]
    assert (exact["subset"] == "dropped").sum() == 4 * 5 * 2
    kept = exact[exact["subset"].isin(["train", "val"])]
    assert not kept[kept["exact_group"] >= 0].duplicated("exact_group").any()
    assert (exact.loc[exact["split"] == TEST, "subset"] == "test").all()
    assert exact.loc[exact["status"] != "ok", "subset"].tolist() == ["excluded"]
    test = exact[exact["split"] == TEST].set_index("path")
    leaks = [p for p in test.index if p.endswith(("leak.jpg", "near.jpg"))]
    # Byte copies and pixel-confirmed near copies of Training images both leave the clean split.
    assert not test.loc[leaks, "test_clean"].any()
    assert test.drop(index=leaks)["test_clean"].all()
    assert not exact.loc[exact["split"] == TRAIN, "test_clean"].any()

    # Training-side de-duplication is a separate choice: the clean split does not depend on it.
    near = data.assign_subsets(clustered, dedup="near", val_fraction=0.25, seed=1)
    none = data.assign_subsets(clustered, dedup="none", val_fraction=0.25, seed=1)
    assert "dropped" not in set(none["subset"])
    assert (
        none["test_clean"].tolist() == exact["test_clean"].tolist() == near["test_clean"].tolist()
    )

    with pytest.raises(ValueError, match="dedup='fuzzy'"):
        data.assign_subsets(clustered, dedup="fuzzy", val_fraction=0.25, seed=1)
    with pytest.raises(ValueError, match="missing column"):
        data.assign_subsets(
            clustered.drop(columns="near_group"), dedup="none", val_fraction=0.25, seed=1
        )


def test_validation_split_is_grouped_stratified_and_seeded(clustered):
    none = data.assign_subsets(clustered, dedup="none", val_fraction=0.25, seed=3)
    train_side = none[none["subset"].isin(["train", "val"])]
    for _, members in train_side[train_side["near_group"] >= 0].groupby("near_group"):
        assert members["subset"].nunique() == 1  # copies never straddle train and val
    share = train_side.groupby("label")["subset"].apply(lambda s: (s == "val").mean())
    assert (share * 45 - 11.25).abs().le(1).all(), share  # 11.25 of 45 per class, to an image

    again = data.assign_subsets(clustered, dedup="none", val_fraction=0.25, seed=3)
    assert again["subset"].tolist() == none["subset"].tolist()
    other = data.assign_subsets(clustered, dedup="none", val_fraction=0.25, seed=4)
    assert other["subset"].tolist() != none["subset"].tolist()
    # The fraction asked is the fraction given (a K-fold split would round 0.3 to 1/3).
    for fraction in (0.1, 0.3, 0.45):
        split = data.assign_subsets(clustered, dedup="none", val_fraction=fraction, seed=3)
        side = split[split["subset"].isin(["train", "val"])]
        assert abs((side["subset"] == "val").mean() - fraction) <= 0.01, fraction
