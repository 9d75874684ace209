"""The manifest: scan outcome of every crafted file, CSV round trip and hash, the real data."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brainmri import data
from brainmri.config import CLASS_NAMES, SPLITS

TRAIN, TEST = SPLITS


def test_scan_gives_documented_outcome_for_each_crafted_file(
    tmp_path, dataset_tree, write_file, jpeg, picture
):
    names = {TRAIN: "training", (TRAIN, "notumor"): "no_tumor", (TEST, "glioma"): "GLIOMA"}
    root = dataset_tree(tmp_path / "ds", per_class=1, names=names)
    gl, mn = root / "training" / "glioma", root / "training" / "meningioma"
    no, pi = root / "training" / "no_tumor", root / "training" / "pituitary"
    good = jpeg(picture(99))
    noise = np.random.default_rng(1).bytes(2000)
    write_file(gl / "corrupt.jpg", good[: good.index(b"\xff\xda") + 20] + noise)  # after the header
    write_file(gl / "broken_header.jpg", good[:300] + noise)
    write_file(gl / "empty.jpg", b"")
    write_file(gl / "text.jpg", b"this is not an image\n")
    write_file(gl / "notes.txt", b"a note")
    write_file(mn / "truncated.jpg", good[: len(good) * 2 // 3])
    cv2.imwrite(str(no / "deep16.png"), np.array([[0, 32768], [65535, 1000]], np.uint16))
    rgba = np.zeros((6, 5, 4), np.uint8)
    rgba[..., 3] = 255
    cv2.imwrite(str(pi / "alpha.png"), rgba)
    palette = Image.new("P", (7, 3))
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.save(pi / "palette.png")
    write_file(pi / "nested" / "deeper.jpg", jpeg(picture(98)))
    write_file(gl / ".hidden" / "ghost.jpg", good)
    write_file(gl / ".DS_Store", b"\0\1\2")
    write_file(root / "masks" / TRAIN / "glioma" / "img0.png", good)
    write_file(root / "README.md", b"# readme")

    manifest = data.scan_dataset(root)
    rows = manifest.set_index("path")

    assert list(manifest.columns) == list(data.SCAN_COLUMNS)
    assert not any(".hidden" in p or "DS_Store" in p or "masks" in p for p in manifest["path"])
    assert len(manifest) == 8 + 10  # one good image per split and class, 10 crafted files
    excluded = {
        "training/glioma/corrupt.jpg": "truncated or corrupt: ",
        "training/glioma/broken_header.jpg": "truncated or corrupt: JPEG",
        "training/glioma/empty.jpg": "empty file",
        "training/glioma/text.jpg": "not an image",
        "training/glioma/notes.txt": "unsupported extension '.txt'",
        "training/meningioma/truncated.jpg": "truncated or corrupt: ",
    }
    for path, reason in excluded.items():
        assert rows.loc[path, "status"] == "excluded", path
        assert rows.loc[path, "reason"].startswith(reason), (path, rows.loc[path, "reason"])
        assert rows.loc[path, "phash"] == ""
    assert (manifest["status"] == "ok").sum() == len(manifest) - len(excluded)
    accepted = {
        "training/no_tumor/deep16.png": ("I;16", 2, 2),
        "training/pituitary/alpha.png": ("RGBA", 5, 6),
        "training/pituitary/palette.png": ("P", 7, 3),
        "training/pituitary/nested/deeper.jpg": ("L", 64, 64),
    }
    for path, (mode, width, height) in accepted.items():
        assert tuple(rows.loc[path, ["mode", "width", "height"]]) == (mode, width, height), path
        assert rows.loc[path, "status"] == "ok" and len(rows.loc[path, "phash"]) == 16
    # canonical names whatever the folder spelling
    assert rows.loc["training/no_tumor/deep16.png", ["split", "label"]].tolist() == [
        TRAIN,
        "notumor",
    ]
    assert rows.loc["Testing/GLIOMA/img0.jpg", "label"] == "glioma"
    # sizes and content hashes are those of the files
    for path in ("training/glioma/text.jpg", "training/pituitary/palette.png"):
        payload = (root / path).read_bytes()
        assert rows.loc[path, "bytes"] == len(payload)
        assert rows.loc[path, "sha256"] == hashlib.sha256(payload).hexdigest()
    # sorted by split (Training first), class, then path
    order = manifest.assign(
        s=manifest["split"].map(SPLITS.index), c=manifest["label"].map(CLASS_NAMES.index)
    )
    assert order.sort_values(["s", "c", "path"]).index.tolist() == list(range(len(manifest)))


def test_manifest_round_trip_and_hash(tmp_path, clustered):
    manifest = data.assign_subsets(
        clustered,
        protocol="official",
        dedup="exact",
        val_fraction=0.25,
        test_fraction=0.2,
        seed=1,
    )
    manifest["label_index"] = manifest["label"].map(CLASS_NAMES.index).astype(int)
    path = tmp_path / "run" / "manifest.csv"
    data.write_manifest(manifest, path)
    assert [p.name for p in path.parent.iterdir()] == ["manifest.csv"]  # no temp file left
    back = data.read_manifest(path)
    pd.testing.assert_frame_equal(back, manifest, check_dtype=False)
    assert back["bytes"].dtype == np.int64 and back["label_index"].dtype == np.int64
    assert back["headline_test"].dtype == bool and back["label_conflict"].dtype == bool
    assert back["copy_group"].dtype == np.int64 and back["closest_kind"].tolist()[0] == ""
    assert back["training_copy"].dtype == bool and back["closest_correlation"].dtype == float
    assert (back["reason"] == "").sum() == (manifest["status"] == "ok").sum()  # "" stays ""

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert data.manifest_hash(manifest) == digest == data.manifest_hash(path)
    assert data.manifest_hash(back) == digest
    changed = manifest.copy()
    changed.loc[0, "subset"] = "val" if changed.loc[0, "subset"] != "val" else "train"
    assert data.manifest_hash(changed) != digest


def test_read_manifest_rejects_other_files(tmp_path, write_file):
    other = write_file(tmp_path / "other.csv", b"path,label\na.jpg,glioma\n")
    with pytest.raises(ValueError) as err:
        data.read_manifest(other)
    assert str(other) in str(err.value) and "'sha256'" in str(err.value)
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        data.read_manifest(tmp_path / "nothing.csv")


REAL_COUNTS = {
    TRAIN: {"glioma": 1321, "meningioma": 1339, "notumor": 1591, "pituitary": 1457},
    TEST: {"glioma": 300, "meningioma": 306, "notumor": 405, "pituitary": 300},
}


@pytest.mark.realdata
def test_real_dataset_counts_and_status(real_data, real_manifest):
    counts = real_manifest.groupby(["split", "label"]).size()
    assert {s: {c: int(counts[s, c]) for c in CLASS_NAMES} for s in SPLITS} == REAL_COUNTS
    assert len(real_manifest) == 7019
    assert (real_manifest["status"] == "ok").all()
    assert (real_manifest[["width", "height"]] == 224).all().all()
    assert set(real_manifest["mode"]) == {"L", "RGB"}
    on_disk = {
        p.relative_to(real_data).as_posix()
        for p in real_data.glob("*/*/*")
        if p.is_file() and not p.name.startswith(".")
    }
    assert set(real_manifest["path"]) == on_disk  # e.g. .ipynb_checkpoints is not counted
