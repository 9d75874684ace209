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
    kept, masks = sources.images_with_masks(
        rows, phantom_set, 32, mask_dir=None, project_root=project_root, per_class=3
    )
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
    kept, masks = sources.images_with_masks(
        rows, phantom_set, 32, mask_dir=tree, project_root=project_root, per_class=5
    )
    assert kept["path"].tolist() == glioma
    assert masks[:, 4:12, 4:12].all() and masks.sum() == 2 * 8 * 8
    with pytest.raises(FileNotFoundError, match="gradcam.mask_dir = .*no such folder"):
        sources.images_with_masks(
            rows,
            phantom_set,
            32,
            mask_dir=tmp_path / "nope",
            project_root=project_root,
            per_class=1,
        )
    shutil.rmtree(tree)


@pytest.mark.realdata
def test_brisc_masks_cover_the_real_training_tumours(real_data, project_root):
    if not SHARED_MASKS.is_dir():
        pytest.skip(f"no masks at {SHARED_MASKS}")
    rows = _rows(real_data)
    kept, masks = sources.images_with_masks(
        rows, real_data, 64, mask_dir=SHARED_MASKS, project_root=project_root, per_class=100000
    )
    # 3,853 masks (glioma 1,147, meningioma 1,262, pituitary 1,444), none for notumor
    assert kept["label"].value_counts().to_dict() == {
        "glioma": 1147,
        "meningioma": 1262,
        "pituitary": 1444,
    }
    assert set(kept["label"]) < set(CLASS_NAMES) and masks.any(axis=(1, 2)).all()
