"""Duplicate audit: exact copies, pixel-confirmed near copies, clusters that neither chain nor mix
labels, the leakage flags of Testing, the summary and its figures."""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from brainmri import config, data
from brainmri.config import CLASS_NAMES, SPLITS
from brainmri.plotting import data as dplot

TRAIN, TEST = SPLITS
EXACT = [f"{TRAIN}/meningioma/img0.jpg", f"{TEST}/meningioma/copy.jpg"]
NEAR = [f"{TRAIN}/glioma/img0.jpg", f"{TEST}/glioma/brighter.jpg"]
CONFLICT = [f"{TRAIN}/notumor/mislabelled.jpg", f"{TRAIN}/pituitary/img1.jpg"]


@pytest.fixture
def planted(tmp_path, dataset_tree, write_file, jpeg) -> Path:
    """A dataset with an exact cross-split copy, a near cross-split copy and a label conflict."""
    root = dataset_tree(tmp_path / "ds", per_class=3, seed=7)
    write_file(root / EXACT[1], (root / EXACT[0]).read_bytes())
    pixels = cv2.imread(str(root / NEAR[0]), cv2.IMREAD_UNCHANGED)
    # another contrast and another JPEG encoding: other bytes, another hash, the same picture
    brighter = np.clip(pixels.astype(np.float32) * 0.8 + 30, 0, 255).astype(np.uint8)
    write_file(root / NEAR[1], jpeg(brighter, quality=80))
    write_file(root / CONFLICT[0], (root / CONFLICT[1]).read_bytes())
    write_file(root / TRAIN / "glioma" / "broken.jpg", b"")
    return root


def audit(root: Path, **kwargs) -> object:
    settings = {"near_distance": 4, "min_correlation": 0.97, **kwargs}
    return data.audit_duplicates(data.scan_dataset(root), root, **settings)


def test_pixel_signatures_correlate_copies_and_ignore_contrast(tmp_path, picture, jpeg, write_file):
    image = picture(1, size=96)
    files = [
        write_file(tmp_path / "a.jpg", jpeg(image)),
        write_file(tmp_path / "b.png", cv2.imencode(".png", 255 - (255 - image) // 2)[1].tobytes()),
        write_file(tmp_path / "c.jpg", jpeg(picture(2, size=96))),
    ]
    sig = data.pixel_signatures(files)
    assert sig.shape == (3, 64 * 64) and np.allclose(np.linalg.norm(sig, axis=1), 1, atol=1e-5)
    corr = sig @ sig.T
    assert corr[0, 1] > 0.98  # a monotone contrast change keeps the ranks
    assert corr[0, 2] < 0.5  # another picture


def test_audit_finds_exact_and_near_copies_and_never_merges_labels(planted):
    rows = audit(planted).set_index("path")
    assert rows.loc[EXACT, "exact_group"].nunique() == 1 and rows.loc[EXACT[0], "exact_group"] >= 0
    assert (rows.loc[NEAR, "exact_group"] == -1).all()  # different bytes...
    assert rows.loc[NEAR, "near_group"].nunique() == 1 and rows.loc[NEAR[0], "near_group"] >= 0
    # The same bytes under two labels: an exact group, a label conflict, never one near cluster.
    assert rows.loc[CONFLICT, "exact_group"].nunique() == 1
    assert (rows.loc[CONFLICT, "near_group"] == -1).all()
    assert rows.loc[CONFLICT, "label_conflict"].all() and rows["label_conflict"].sum() == 2
    # Testing rows know their closest Training image and whether it is a copy.
    testing = rows[rows["split"] == TEST]
    assert set(testing.index[testing["training_copy"]]) == {EXACT[1], NEAR[1]}
    assert testing.loc[EXACT[1], "closest_training"] == EXACT[0]
    assert testing.loc[NEAR[1], "closest_training"] == NEAR[0]
    assert testing.loc[EXACT[1], "closest_correlation"] == pytest.approx(1.0)
    assert testing["closest_correlation"].notna().all()
    assert rows.loc[rows["split"] == TRAIN, "closest_correlation"].isna().all()
    others = rows.drop(index=EXACT + NEAR + CONFLICT)
    assert (others[["exact_group", "near_group"]] == -1).all().all()  # nothing else clusters


def test_pixels_decide_not_the_hash(planted):
    # Every pair is a hash candidate: still only the planted copies are near copies.
    loose = audit(planted, near_distance=64).set_index("path")
    assert set(loose.index[loose["near_group"] >= 0]) == set(EXACT + NEAR)
    # A threshold nothing reaches but identical pixels: only byte copies remain.
    strict = audit(planted, min_correlation=1.0).set_index("path")
    assert set(strict.index[strict["near_group"] >= 0]) == set(EXACT)
    with pytest.raises(ValueError, match="min_correlation"):
        audit(planted, min_correlation=0.0)


def test_clusters_do_not_chain(tmp_path, picture, jpeg, write_file):
    """A ~ B and B ~ C but not A ~ C: complete linkage keeps A and C apart."""
    a, c = picture(11, size=64), picture(12, size=64)
    b = ((a.astype(np.float32) + c) / 2).astype(np.uint8)
    for name, image in (("a", a), ("b", b), ("c", c)):
        write_file(tmp_path / TRAIN / "glioma" / f"{name}.png", cv2.imencode(".png", image)[1])
    for k, label in enumerate(CLASS_NAMES):
        write_file(tmp_path / TEST / label / "t.jpg", jpeg(picture(20 + k, size=64)))
        if label != "glioma":
            write_file(tmp_path / TRAIN / label / "u.jpg", jpeg(picture(30 + k, size=64)))
    sig = data.pixel_signatures([tmp_path / TRAIN / "glioma" / f"{n}.png" for n in "abc"])
    corr = sig @ sig.T
    threshold = (min(corr[0, 1], corr[1, 2]) + corr[0, 2]) / 2
    assert corr[0, 2] < threshold <= min(corr[0, 1], corr[1, 2])  # the chain exists
    rows = audit(tmp_path, near_distance=64, min_correlation=threshold).set_index("path")
    groups = rows.loc[[f"{TRAIN}/glioma/{n}.png" for n in "abc"], "near_group"]
    assert (groups >= 0).sum() == 2 and groups[groups >= 0].nunique() == 1  # a pair, not three


def test_audit_summary_counts_per_scope_and_class(planted):
    summary = data.audit_summary(audit(planted), min_correlation=0.97)
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
    assert summary["clean_testing"]["total"] == 12 - 2 + 2 - 2 + 2  # 12 originals + 2 copies - 2
    assert summary["within_training"]["exact"] == {
        "total": 1,
        "per_class": {**zero, "pituitary": 1},
    }
    assert summary["within_training"]["near"]["total"] == 0  # the conflict is not a cluster
    assert summary["label_conflicts"] == {"exact": 1, "near": 2}
    assert summary["min_correlation"] == 0.97
    above = summary["threshold_pairs"]["above"]
    assert {(a, b) for a, b, _ in above} == {(EXACT[1], EXACT[0]), (NEAR[1], NEAR[0])}
    below = summary["threshold_pairs"]["below"]
    assert len(below) == 4 and all(c < 0.97 for _, _, c in below)


def test_figures_are_built(planted):
    audited = audit(planted)
    pairs = data.audit_summary(audited, min_correlation=0.97)["threshold_pairs"]["above"]
    figures = [
        dplot.plot_class_counts(audited),
        dplot.plot_sample_grid(audited, str(planted), 3, seed=0),
        dplot.plot_size_mode(audited),
        dplot.plot_intensity_histograms(audited, planted, 5, seed=0),
        dplot.plot_duplicate_pairs(audited, planted, pairs),
        dplot.plot_duplicate_pairs(audited, planted, []),
        dplot.plot_head_fill(audited, planted, 5, seed=0),
    ]
    try:
        for fig in figures:
            assert isinstance(fig, Figure) and fig.axes
            fig.canvas.draw()
        counts = figures[0].axes[0]
        heights = sorted(int(p.get_height()) for p in counts.patches)
        assert heights == sorted([3, 3, 4, 3] + [4, 4, 3, 3])  # Training, Testing; status ok
        assert len(figures[4].axes) == 2 * len(pairs)
        # the head-fill box plots (one box per class with images) and an example pair per class
        classes = audited[audited["status"] == "ok"]["label"].nunique()
        assert len(figures[6].axes) == 1 + 2 * classes
        shares = [line.get_ydata() for line in figures[6].axes[0].get_lines()]
        assert all(0 < y <= 1 for ys in shares for y in ys)
        with pytest.raises(ValueError, match="nowhere.jpg"):
            dplot.plot_duplicate_pairs(audited, planted, [("nowhere.jpg", pairs[0][1], 0.5)])
    finally:
        for fig in figures:
            plt.close(fig)
        plt.close("all")


@pytest.mark.slow
@pytest.mark.realdata
def test_real_dataset_audit_and_the_clean_split_has_no_copy_in_training(real_manifest, real_data):
    params = config.load_profile("default")["data"]
    root = data.find_dataset_root(real_data)
    audited = data.audit_duplicates(
        real_manifest,
        root,
        near_distance=params["near_dup_distance"],
        min_correlation=params["near_dup_correlation"],
    )
    summary = data.audit_summary(audited, min_correlation=params["near_dup_correlation"])
    exact, near = summary["test_in_training"]["exact"], summary["test_in_training"]["near"]
    # measured on the shared copy (224x224 re-encode of the Kaggle release)
    assert exact["total"] == 216
    assert exact["per_class"] == {"glioma": 0, "meningioma": 106, "notumor": 105, "pituitary": 5}
    assert exact["total"] < near["total"] < 600
    assert summary["within_training"]["exact"]["total"] == 207
    assert summary["label_conflicts"]["exact"] == 0
    sizes = audited[audited["near_group"] >= 0].groupby("near_group").size()
    assert sizes.max() < 50  # no giant cluster (connected components made one of 2,537)

    # The clean split, checked by brute force against every Training image's pixels and bytes.
    subsets = data.assign_subsets(audited, dedup="exact", val_fraction=0.1, seed=42)
    clean = subsets[subsets["test_clean"]]
    training = subsets[(subsets["split"] == TRAIN) & (subsets["status"] == "ok")]
    assert len(clean) == summary["clean_testing"]["total"] == 1311 - near["total"]
    assert not set(clean["sha256"]) & set(training["sha256"])
    sig_clean = data.pixel_signatures([root / p for p in clean["path"]])
    sig_train = data.pixel_signatures([root / p for p in training["path"]])
    assert (sig_clean @ sig_train.T).max() < params["near_dup_correlation"]
