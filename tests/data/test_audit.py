"""Duplicate audit: exact and near clusters, label conflicts, the summary and its figures."""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from brainmri import data
from brainmri.config import CLASS_NAMES, SPLITS
from brainmri.plotting import data as dplot

TRAIN, TEST = SPLITS


@pytest.fixture
def planted(tmp_path, dataset_tree, write_file, jpeg) -> Path:
    """A dataset with an exact cross-split copy, a near cross-split copy and a label conflict."""
    root = dataset_tree(tmp_path / "ds", per_class=3, seed=7)
    original = root / TRAIN / "meningioma" / "img0.jpg"
    write_file(root / TEST / "meningioma" / "copy.jpg", original.read_bytes())
    pixels = cv2.imread(str(root / TRAIN / "glioma" / "img0.jpg"), cv2.IMREAD_UNCHANGED)
    brighter = np.clip(pixels.astype(np.int16) + 2, 0, 255).astype(np.uint8)
    write_file(root / TEST / "glioma" / "brighter.jpg", jpeg(brighter, quality=80))
    write_file(
        root / TRAIN / "notumor" / "mislabelled.jpg",
        (root / TRAIN / "pituitary" / "img1.jpg").read_bytes(),
    )
    write_file(root / TRAIN / "glioma" / "broken.jpg", b"")
    return root


def test_audit_finds_exact_and_near_duplicates(planted):
    audited = data.audit_duplicates(data.scan_dataset(planted), near_distance=4)
    rows = audited.set_index("path")
    exact_pair = [f"{TRAIN}/meningioma/img0.jpg", f"{TEST}/meningioma/copy.jpg"]
    near_pair = [f"{TRAIN}/glioma/img0.jpg", f"{TEST}/glioma/brighter.jpg"]
    conflict_pair = [f"{TRAIN}/notumor/mislabelled.jpg", f"{TRAIN}/pituitary/img1.jpg"]

    for pair in (exact_pair, conflict_pair):
        groups = rows.loc[pair, "exact_group"]
        assert groups.nunique() == 1 and groups.iloc[0] >= 0
    assert (rows.loc[near_pair, "exact_group"] == -1).all()  # different bytes...
    near = rows.loc[near_pair, "near_group"]
    assert near.nunique() == 1 and near.iloc[0] >= 0  # ...but the same picture
    for pair in (exact_pair, near_pair, conflict_pair):
        assert rows.loc[pair, "near_group"].nunique() == 1
    planted_rows = set(exact_pair + near_pair + conflict_pair)
    others = audited[~audited["path"].isin(planted_rows)]
    assert (others[["exact_group", "near_group"]] == -1).all().all()  # nothing else clusters
    assert rows.loc[conflict_pair, "label_conflict"].all()
    assert audited["label_conflict"].sum() == 2
    assert rows.loc[f"{TRAIN}/glioma/broken.jpg", ["exact_group", "near_group"]].tolist() == [
        -1,
        -1,
    ]

    strict = data.audit_duplicates(data.scan_dataset(planted), near_distance=0)
    hashes = rows.loc[near_pair, "phash"].map(lambda h: int(h, 16)).tolist()
    distance = bin(hashes[0] ^ hashes[1]).count("1")
    assert distance <= 4
    near_strict = strict.set_index("path").loc[near_pair, "near_group"]
    assert (near_strict.nunique() == 1 and near_strict.iloc[0] >= 0) == (distance == 0)


def test_audit_summary_counts_per_scope_and_class(planted):
    audited = data.audit_duplicates(data.scan_dataset(planted), near_distance=4)
    summary = data.audit_summary(audited)
    zero = dict.fromkeys(CLASS_NAMES, 0)
    assert summary["images"] == {"total": 28, "ok": 27, "excluded": 1}
    assert summary["test_in_training"]["exact"] == {
        "total": 1,
        "per_class": {**zero, "meningioma": 1},
    }
    assert summary["test_in_training"]["near"] == {
        "total": 2,
        "per_class": {**zero, "glioma": 1, "meningioma": 1},
    }
    # within Training the later copy (pituitary sorts after notumor) is the duplicate
    expected_within = {"total": 1, "per_class": {**zero, "pituitary": 1}}
    assert summary["within_training"]["exact"] == expected_within
    assert summary["within_training"]["near"] == expected_within
    assert summary["within_testing"]["near"]["total"] == 0
    assert summary["label_conflict_clusters"] == {"exact": 1, "near": 1}
    pairs = {(a, b): d for a, b, d in summary["example_pairs"]}
    assert len(pairs) == 3
    assert pairs[(f"{TRAIN}/meningioma/img0.jpg", f"{TEST}/meningioma/copy.jpg")] == 0
    assert (f"{TRAIN}/glioma/img0.jpg", f"{TEST}/glioma/brighter.jpg") in pairs
    conflict = summary["example_pairs"][0]  # label conflicts come first
    assert {conflict[0], conflict[1]} == {
        f"{TRAIN}/notumor/mislabelled.jpg",
        f"{TRAIN}/pituitary/img1.jpg",
    }


def test_figures_are_built(planted):
    audited = data.audit_duplicates(data.scan_dataset(planted), near_distance=4)
    pairs = data.audit_summary(audited)["example_pairs"]
    figures = [
        dplot.plot_class_counts(audited),
        dplot.plot_sample_grid(audited, str(planted), 3, seed=0),
        dplot.plot_size_mode(audited),
        dplot.plot_intensity_histograms(audited, planted, 5, seed=0),
        dplot.plot_duplicate_pairs(audited, planted, pairs),
        dplot.plot_duplicate_pairs(audited, planted, []),
    ]
    try:
        for fig in figures:
            assert isinstance(fig, Figure) and fig.axes
            fig.canvas.draw()
        counts = figures[0].axes[0]
        heights = sorted(int(p.get_height()) for p in counts.patches)
        assert heights == sorted([3, 3, 4, 3] + [4, 4, 3, 3])  # Training, Testing; status ok
        assert len(figures[4].axes) == 2 * len(pairs)
        with pytest.raises(ValueError, match="nowhere.jpg"):
            dplot.plot_duplicate_pairs(audited, planted, [("nowhere.jpg", pairs[0][1], 0)])
    finally:
        for fig in figures:
            plt.close(fig)
        plt.close("all")


@pytest.mark.realdata
def test_real_dataset_audit(real_manifest):
    audited = data.audit_duplicates(real_manifest, near_distance=4)
    summary = data.audit_summary(audited)
    exact, near = summary["test_in_training"]["exact"], summary["test_in_training"]["near"]
    # measured on the shared copy (224x224 re-encode of the Kaggle release)
    assert exact["total"] == 216
    assert exact["per_class"] == {"glioma": 0, "meningioma": 106, "notumor": 105, "pituitary": 5}
    assert near["total"] == 718 >= exact["total"]
    assert summary["within_training"]["exact"]["total"] == 207
    assert summary["within_testing"]["exact"]["total"] == 30
    assert summary["label_conflict_clusters"]["exact"] == 0
    assert len(summary["example_pairs"]) == 12
