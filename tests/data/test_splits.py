"""Subsets: whole copy groups per subset under both protocols, stratified, seeded; the leak count."""

from __future__ import annotations

import pytest

from brainmri import data
from brainmri.config import CLASS_NAMES, SPLITS

TRAIN, TEST = SPLITS


def split(manifest, **kwargs):
    settings = {
        "protocol": "grouped",
        "dedup": "none",
        "val_fraction": 0.25,
        "test_fraction": 0.25,
        "seed": 1,
        **kwargs,
    }
    return data.assign_subsets(manifest, **settings)


@pytest.fixture(scope="module")
def audited_copies(copies):
    manifest, _ = data.audit_duplicates(
        data.scan_dataset(copies[0]), copies[0], min_correlation=0.97
    )
    return manifest


@pytest.mark.parametrize("protocol", ["grouped", "official"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_planted_copy_straddles_the_subsets(audited_copies, copies, protocol, seed):
    """Checked against the copies planted by construction, not against the audit's own pairs."""
    _, truth, _ = copies
    rows = split(audited_copies, protocol=protocol, seed=seed).set_index("path")
    side = rows["subset"].replace({"dropped": "train"})
    for group in truth:
        members = side[sorted(group)]
        if protocol == "grouped":
            assert members.nunique() == 1, members  # one subset per picture
        else:  # official keeps the folders: a Testing copy of a Training image is no headline
            assert not rows.loc[sorted(group), "headline_test"].any()
            assert members[members != "test"].nunique() <= 1  # never in train and val at once
    assert data.subset_leaks(rows.reset_index()) == dict.fromkeys(
        ("val_in_train", "headline_in_train", "headline_in_val"), 0
    )


def test_grouped_protocol_pools_the_folders_and_stratifies(clustered):
    none = split(clustered, seed=3)
    assert set(none["subset"]) == {"train", "val", "test", "excluded"}
    assert list(none.columns[-2:]) == ["subset", "headline_test"]
    assert (none["headline_test"] == (none["subset"] == "test")).all()
    assert none.loc[none["status"] != "ok", "subset"].tolist() == ["excluded"]
    ok = none[none["status"] == "ok"]
    for _, members in ok.groupby("copy_group"):
        assert members["subset"].nunique() == 1  # copies never straddle subsets
    # Test takes 1/4 of each class (of 51 images), validation 1/4 of the rest: to a group (3).
    per_class = ok.groupby("label")["subset"].value_counts().unstack(fill_value=0)
    assert ((per_class["test"] - 51 / 4).abs() <= 3).all(), per_class
    assert ((per_class["val"] - (51 - per_class["test"]) / 4).abs() <= 3).all(), per_class
    assert set(ok.loc[ok["subset"] == "test", "split"]) == {TRAIN, TEST}  # the folders pooled

    assert split(clustered, seed=3)["subset"].tolist() == none["subset"].tolist()
    assert split(clustered, seed=4)["subset"].tolist() != none["subset"].tolist()


def test_official_protocol_keeps_the_folders_and_heads_with_testing_without_copies(clustered):
    official = split(clustered, protocol="official", dedup="exact")
    assert (official.loc[official["split"] == TEST, "subset"] == "test").all()
    assert set(official.loc[official["split"] == TRAIN, "subset"]) == {
        "train",
        "val",
        "dropped",
        "excluded",
    }
    test = official[official["split"] == TEST].set_index("path")
    leaks = [p for p in test.index if p.endswith(("leak.jpg", "near.jpg"))]
    assert len(leaks) == 2 * len(CLASS_NAMES)
    assert not test.loc[leaks, "headline_test"].any()
    assert test.drop(index=leaks)["headline_test"].all()
    assert not official.loc[official["split"] == TRAIN, "headline_test"].any()
    # dedup is a choice for the train subset only: the headline does not depend on it
    near = split(clustered, protocol="official", dedup="near")
    assert near["headline_test"].tolist() == official["headline_test"].tolist()
    kept = near[near["subset"] == "train"]
    assert not kept.duplicated("copy_group").any()
    assert (official["subset"] == "dropped").sum() > 0  # the byte copies the train subset had


def test_fractions_are_met_and_bad_settings_refused(clustered):
    for fraction in (0.1, 0.3, 0.45):
        side = split(clustered, protocol="official", val_fraction=fraction, seed=3)
        side = side[side["subset"].isin(["train", "val"])]
        assert abs((side["subset"] == "val").mean() - fraction) <= 0.05, fraction
    with pytest.raises(ValueError, match="dedup='fuzzy'"):
        split(clustered, dedup="fuzzy")
    with pytest.raises(ValueError, match="protocol='random'"):
        split(clustered, protocol="random")
    with pytest.raises(ValueError, match="test_fraction=0.9"):
        split(clustered, test_fraction=0.9)
    with pytest.raises(ValueError, match="missing column"):
        split(clustered.drop(columns="copy_group"))


def test_subset_leaks_counts_a_broken_split(clustered):
    """The check reads the right way: a copy moved across subsets is counted, per direction."""
    rows = split(clustered, seed=5)
    assert data.subset_leaks(rows) == dict.fromkeys(
        ("val_in_train", "headline_in_train", "headline_in_val"), 0
    )
    group = rows.loc[(rows["subset"] == "test") & (rows["copy_group_size"] == 3), "copy_group"]
    members = rows.index[rows["copy_group"] == group.iloc[0]]
    broken = rows.copy()
    broken.loc[members[0], "subset"] = "train"  # one copy of a test picture now trains
    broken.loc[members[1], "subset"] = "val"
    assert data.subset_leaks(broken) == {
        "val_in_train": 1,
        "headline_in_train": 1,
        "headline_in_val": 1,
    }
