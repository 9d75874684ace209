"""Subsets: de-duplication, the leakage-free test flags, a grouped stratified seeded split."""

from __future__ import annotations

import pytest

from brainmri import data
from brainmri.config import SPLITS

TRAIN, TEST = SPLITS


def test_assign_subsets_dedup_and_test_flags(clustered):
    exact = data.assign_subsets(clustered, dedup="exact", val_fraction=0.25, seed=1)
    assert set(exact["subset"]) == {"train", "val", "test", "excluded", "dropped"}
    assert list(exact.columns[-2:]) == ["subset", "test_dedup"]
    assert (exact["subset"] == "dropped").sum() == 4 * 5 * 2
    kept = exact[exact["subset"].isin(["train", "val"])]
    assert not kept[kept["exact_group"] >= 0].duplicated("exact_group").any()
    assert (exact.loc[exact["split"] == TEST, "subset"] == "test").all()
    assert exact.loc[exact["status"] != "ok", "subset"].tolist() == ["excluded"]
    test = exact[exact["split"] == TEST].set_index("path")
    leaks = [p for p in test.index if p.endswith(("leak.jpg", "near.jpg"))]
    assert not test.loc[[p for p in leaks if p.endswith("leak.jpg")], "test_dedup"].any()
    assert test.loc[[p for p in leaks if p.endswith("near.jpg")], "test_dedup"].all()
    assert test.drop(index=leaks)["test_dedup"].all()
    assert not exact.loc[exact["split"] == TRAIN, "test_dedup"].any()

    near = data.assign_subsets(clustered, dedup="near", val_fraction=0.25, seed=1).set_index("path")
    assert not near.loc[leaks, "test_dedup"].any()  # near copies leave the clean test set too

    none = data.assign_subsets(clustered, dedup="none", val_fraction=0.25, seed=1)
    assert "dropped" not in set(none["subset"])
    assert none["test_dedup"].tolist() == exact["test_dedup"].tolist()  # exact view

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
    assert share.between(0.15, 0.35).all(), share  # stratified around 1/4 in every class

    again = data.assign_subsets(clustered, dedup="none", val_fraction=0.25, seed=3)
    assert again["subset"].tolist() == none["subset"].tolist()
    other = data.assign_subsets(clustered, dedup="none", val_fraction=0.25, seed=4)
    assert other["subset"].tolist() != none["subset"].tolist()
    tenth = data.assign_subsets(clustered, dedup="none", val_fraction=0.1, seed=3)
    assert (tenth["subset"] == "val").sum() < (none["subset"] == "val").sum()
