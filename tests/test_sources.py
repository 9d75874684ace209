"""brainmri.sources: the tumour masks of a subset, from the phantom set or an expert masks tree."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from brainmri import sources
from brainmri.config import CLASS_NAMES, TUMOUR_CLASSES

SHARED_MASKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain-tumor-masks"


def _rows(root: Path, split: str = "Training") -> pd.DataFrame:
    paths = sorted(p.relative_to(root).as_posix() for p in (root / split).glob("*/*.jpg"))
    return pd.DataFrame({"path": paths, "label": [p.split("/")[1] for p in paths]})


def test_the_phantom_sets_own_masks_are_found(phantom_set, project_root):
    rows = _rows(phantom_set)
    kept, masks = sources.images_with_masks(rows, phantom_set, 32, mask_root=None, per_class=3)
    assert kept["label"].value_counts().to_dict() == dict.fromkeys(TUMOUR_CLASSES, 3)
    assert masks.shape == (9, 32, 32) and masks.dtype == bool
    assert masks.any(axis=(1, 2)).all()  # every tumour has a lesion


def test_an_expert_masks_tree_is_used_and_images_without_a_mask_are_left_out(
    phantom_set, project_root, tmp_path
):
    tree = tmp_path / "expert"
    rows = _rows(phantom_set)
    glioma = rows[rows["label"] == "glioma"]["path"].tolist()[:2]
    for path in glioma:  # masks for two glioma images only, a filled square each
        target = tree / Path(path).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        square = np.zeros((64, 64), np.uint8)
        square[8:24, 8:24] = 255
        cv2.imwrite(str(target), square)
    root = sources.resolve_mask_root(tree, project_root)
    kept, masks = sources.images_with_masks(rows, phantom_set, 32, mask_root=root, per_class=5)
    assert kept["path"].tolist() == glioma
    assert masks[:, 4:12, 4:12].all() and masks.sum() == 2 * 8 * 8
    # training reads the same two files, "" for every other image (notumor never has one)
    files = sources.mask_files(rows, phantom_set, root)
    assert [f for f in files if f] == [str(tree / Path(p).with_suffix(".png")) for p in glioma]
    assert len(files) == len(rows)
    manifest = rows.assign(status="ok", subset="train")
    assert sources.mask_counts(manifest, phantom_set, root) == {
        "train": {"glioma": 2, "meningioma": 0, "pituitary": 0}
    }
    record = {"root": str(phantom_set), "mask_root": str(root)}
    assert sources.guidance_masks(rows, record, 1.0) == files
    assert sources.guidance_masks(rows, record, 0.0) is None  # off: nothing read
    # a relative mask_dir is the project's; a missing one is named with its key
    assert sources.resolve_mask_root(None, project_root) is None
    with pytest.raises(FileNotFoundError, match="data.mask_dir = .*nope: no such folder"):
        sources.resolve_mask_root(tmp_path / "nope", project_root)
    # no mask at all: unguided, and the warning says so and how to give them
    said = []
    assert (
        sources.guidance_masks(rows[rows["label"] == "notumor"], record, 1.0, said.append) is None
    )
    assert "training WITHOUT lesion guidance" in said[0] and "MASK_DIR" in said[0]
    shutil.rmtree(tree)


@pytest.mark.realdata
def test_brisc_masks_cover_the_real_training_tumours(real_data, project_root):
    if not SHARED_MASKS.is_dir():
        pytest.skip(f"no masks at {SHARED_MASKS}")
    rows = _rows(real_data)
    kept, masks = sources.images_with_masks(
        rows, real_data, 64, mask_root=SHARED_MASKS, per_class=100000
    )
    # 3,853 masks (glioma 1,147, meningioma 1,262, pituitary 1,444), none for notumor
    assert kept["label"].value_counts().to_dict() == {
        "glioma": 1147,
        "meningioma": 1262,
        "pituitary": 1444,
    }
    assert set(kept["label"]) < set(CLASS_NAMES) and masks.any(axis=(1, 2)).all()
