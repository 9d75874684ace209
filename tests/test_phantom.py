"""Tests of the synthetic phantom data set: anatomy of the lesions, files on disk, idempotence."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from brainmri.config import CLASS_NAMES, SPLITS, TUMOUR_CLASSES
from brainmri.phantom import generate_phantom_dataset, load_mask, mask_path, render_slice

NOTUMOR = next(c for c in CLASS_NAMES if c not in TUMOUR_CLASSES)
GLIOMA, MENINGIOMA, PITUITARY = TUMOUR_CLASSES


def _head_mask(image: np.ndarray) -> np.ndarray:
    """Return the filled outer outline of the head found in the image itself (uint8 0/255)."""
    smooth = cv2.medianBlur(image, 5)
    _, bright = cv2.threshold(smooth, 50, 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(bright, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    head = np.zeros_like(image)
    cv2.drawContours(head, [max(contours, key=cv2.contourArea)], -1, 255, thickness=-1)
    return head


def _files(root: Path) -> dict[str, bytes]:
    """Return every file under root (relative path -> bytes)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# --- render_slice -----------------------------------------------------------------------------


@pytest.mark.parametrize("label", CLASS_NAMES)
def test_render_slice_types_and_masks(label: str) -> None:
    for seed in range(3):
        image, mask = render_slice(label, np.random.default_rng(seed), 64)
        assert image.dtype == np.uint8 and image.shape == (64, 64)
        assert mask.dtype == bool and mask.shape == (64, 64)
        assert image.std() > 10, "the slice should show a head, not a flat image"
        assert mask.any() == (label in TUMOUR_CLASSES)


def test_render_slice_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="astrocytoma"):
        render_slice("astrocytoma", np.random.default_rng(0), 64)
    with pytest.raises(ValueError, match="size"):
        render_slice(GLIOMA, np.random.default_rng(0), 8)
    with pytest.raises(ValueError, match="size"):
        render_slice(GLIOMA, np.random.default_rng(0), 64.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("label", TUMOUR_CLASSES)
def test_same_generator_state_differs_only_around_the_lesion(label: str) -> None:
    """Nothing outside the lesion (and its halo) reveals the class: the head is class-free."""
    for seed in range(5):
        base, _ = render_slice(NOTUMOR, np.random.default_rng(seed), 96)
        image, mask = render_slice(label, np.random.default_rng(seed), 96)
        changed = base != image
        assert np.abs(image.astype(int) - base)[mask].mean() > 20, "lesion should be visible"
        radius = np.sqrt(mask.sum() / np.pi)
        reach = int(np.ceil(1.2 * radius)) + 3  # oedema halo plus the partial-volume blur
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
        near = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
        assert not (changed & ~near).any(), f"{label} seed {seed} changed pixels far from lesion"


def test_lesion_anatomy() -> None:
    """Masks lie inside the skull; meningioma hugs it, glioma is away, pituitary at the sella."""
    size = 128
    min_dist: dict[str, list[float]] = {c: [] for c in TUMOUR_CLASSES}
    areas: dict[str, list[int]] = {c: [] for c in TUMOUR_CLASSES}
    for label in TUMOUR_CLASSES:
        for seed in range(20):
            image, mask = render_slice(label, np.random.default_rng(seed), size)
            head = _head_mask(image)
            # distance of every head pixel to the outside of the head (the skull's outer edge)
            dist = cv2.distanceTransform(head, cv2.DIST_L2, 5)
            min_dist[label].append(float(dist[mask].min()))
            areas[label].append(int(mask.sum()))
            if label == PITUITARY:
                ys, xs = np.nonzero(head)
                my, mx = np.nonzero(mask)
                width, height = xs.max() - xs.min(), ys.max() - ys.min()
                assert abs(mx.mean() - xs.mean()) < 0.1 * width, f"seed {seed}: off the midline"
                down = (my.mean() - ys.min()) / height
                assert 0.55 < down < 0.85, f"seed {seed}: pituitary {down:.2f} down the head"
    everything = [d for ds in min_dist.values() for d in ds]
    assert min(everything) >= 3, "a mask reaches into the skull ring"
    assert max(min_dist[MENINGIOMA]) <= 8, "meningioma should touch the inner skull"
    assert min(min_dist[GLIOMA]) >= 10, "glioma should be intra-axial, away from the skull"
    assert max(min_dist[MENINGIOMA]) < min(min_dist[GLIOMA])
    assert np.median(areas[PITUITARY]) < 0.5 * np.median(areas[GLIOMA])
    assert np.median(areas[PITUITARY]) < 0.5 * np.median(areas[MENINGIOMA])


def test_no_global_intensity_cue() -> None:
    """The mean intensity outside the lesion is about the same in every class."""
    means = {}
    for k, label in enumerate(CLASS_NAMES):
        values = []
        for i in range(40):
            image, mask = render_slice(label, np.random.default_rng(1000 * k + i), 64)
            values.append(image[~mask].mean())
        means[label] = float(np.mean(values))
    spread = max(means.values()) - min(means.values())
    assert spread < 3.0, f"outside-lesion mean differs by class: {means}"


# --- the data set on disk ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny phantom data set shared by the read-only tests."""
    return generate_phantom_dataset(tmp_path_factory.mktemp("p") / "set", 3, 2, 64, seed=5)


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


def test_load_mask(small_set: Path, tmp_path: Path) -> None:
    image_path = small_set / SPLITS[0] / GLIOMA / "phantom_glioma_00001.jpg"
    full = load_mask(image_path, small_set)
    assert full is not None and full.dtype == bool and full.shape == (64, 64) and full.any()
    half = load_mask(image_path, small_set, size=32)
    assert half is not None and half.shape == (32, 32)
    assert np.array_equal(half, full[::2, ::2])  # nearest neighbour, no smoothing
    # cropped to the head, the mask is cut by the square its image is cut by
    from brainmri.data import brain_box, load_image

    x0, y0, side = brain_box(load_image(image_path, 64))
    cut = load_mask(image_path, small_set, crop=True)
    assert (
        cut is not None and side < 64 and np.array_equal(cut, full[y0 : y0 + side, x0 : x0 + side])
    )
    empty = load_mask(small_set / SPLITS[1] / NOTUMOR / "phantom_notumor_00000.jpg", small_set)
    assert empty is not None and not empty.any()
    # an image of a data set without masks (e.g. the Kaggle one) has none
    assert load_mask(tmp_path / SPLITS[0] / GLIOMA / "x.jpg", tmp_path) is None
    with pytest.raises(ValueError, match="not inside the data root"):
        mask_path(tmp_path / "elsewhere.jpg", small_set)


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
