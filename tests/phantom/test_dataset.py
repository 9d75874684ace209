"""The phantom data set on disk: layout, deterministic bytes, reuse and regeneration, refusal."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from brainmri.config import CLASS_NAMES, SPLITS, TUMOUR_CLASSES
from brainmri.phantom import generate_phantom_dataset, mask_path

GLIOMA, MENINGIOMA, PITUITARY = TUMOUR_CLASSES


def _files(root: Path) -> dict[str, bytes]:
    """Return every file under root (relative path -> bytes)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_layout_counts_and_masks(small_set: Path) -> None:
    assert {p.name for p in small_set.iterdir()} == {*SPLITS, "masks", "phantom.json"}
    for split, count in zip(SPLITS, (3, 2), strict=True):
        assert sorted(p.name for p in (small_set / split).iterdir()) == sorted(CLASS_NAMES)
        for label in CLASS_NAMES:
            images = sorted((small_set / split / label).iterdir())
            assert [p.name for p in images] == [
                f"phantom_{label}_{i:05d}.jpg" for i in range(count)
            ]
            for image_path in images:
                image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
                assert image.shape == (64, 64) and image.dtype == np.uint8
                mask_file = small_set / "masks" / split / label / f"{image_path.stem}.png"
                assert mask_path(image_path, small_set) == mask_file
                raw = cv2.imread(str(mask_file), cv2.IMREAD_UNCHANGED)
                assert raw.shape == (64, 64) and set(np.unique(raw)) <= {0, 255}
                assert raw.any() == (label in TUMOUR_CLASSES)
    manifest = json.loads((small_set / "phantom.json").read_text())
    assert manifest["train_per_class"] == 3 and manifest["test_per_class"] == 2
    assert manifest["size"] == 64 and manifest["seed"] == 5


def test_deterministic_bytes(tmp_path: Path) -> None:
    first = _files(generate_phantom_dataset(tmp_path / "a", 2, 2, 48, seed=11))
    again = _files(generate_phantom_dataset(tmp_path / "b", 2, 2, 48, seed=11))
    other = _files(generate_phantom_dataset(tmp_path / "c", 2, 2, 48, seed=12))
    assert first == again
    images = [k for k in first if k.endswith(".jpg")]
    assert all(first[k] != other[k] for k in images), "another seed should change every image"
    # an image depends on (seed, split, class, index) only, not on how many images there are
    more = _files(generate_phantom_dataset(tmp_path / "d", 3, 1, 48, seed=11))
    shared = [k for k in first if k in more and k != "phantom.json"]
    assert len(shared) == 2 * 4 * 2 + 1 * 4 * 2  # 2 Training + 1 Testing per class, with masks
    assert all(first[k] == more[k] for k in shared)


def test_idempotent_and_regenerates(tmp_path: Path) -> None:
    out = tmp_path / "phantom"
    assert generate_phantom_dataset(out, 2, 1, 40, seed=1) == out
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    generate_phantom_dataset(out, 2, 1, 40, seed=1)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps

    # a missing file makes the same call rebuild the set
    victim = out / SPLITS[0] / PITUITARY / "phantom_pituitary_00001.jpg"
    victim.unlink()
    generate_phantom_dataset(out, 2, 1, 40, seed=1)
    assert victim.is_file()

    # new arguments: the set is swapped for a new one, with no temporary folders left behind
    generate_phantom_dataset(out, 1, 2, 48, seed=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom"]
    assert len(list((out / SPLITS[0] / GLIOMA).iterdir())) == 1
    assert len(list((out / SPLITS[1] / GLIOMA).iterdir())) == 2
    image = cv2.imread(str(out / SPLITS[1] / GLIOMA / "phantom_glioma_00000.jpg"), 0)
    assert image.shape == (48, 48)
    assert json.loads((out / "phantom.json").read_text())["seed"] == 2


def test_refuses_to_overwrite_foreign_folder(tmp_path: Path) -> None:
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a phantom data set"):
        generate_phantom_dataset(foreign, 1, 1, 40, seed=0)
    assert (foreign / "keep.txt").read_text() == "precious"
    with pytest.raises(ValueError, match="train_per_class"):
        generate_phantom_dataset(tmp_path / "new", 0, 1, 40, seed=0)


def test_different_phantoms_are_not_copies_to_the_audit(tmp_path: Path) -> None:
    # Every phantom is drawn from its own generator, so none is a copy of another; the copy
    # audit must say so, or the demo's grouped split and its "no copy in Training" test set
    # shrink to a few images (format 2 heads, affine images of one ellipse, registered as one
    # picture: 782 of the demo's 1,200 images in copy groups).
    from brainmri.data.audit import audit_duplicates
    from brainmri.data.manifest import scan_dataset

    root = generate_phantom_dataset(tmp_path / "set", 40, 10, 128, seed=42)
    audited, pairs = audit_duplicates(scan_dataset(root), root, min_correlation=0.97)
    grouped = int((audited["copy_group_size"] > 1).sum())
    assert len(audited) == 200 and pairs["aligned"].notna().any()  # registration did run
    assert grouped <= 10, f"{grouped} of 200 different phantoms taken for copies"
