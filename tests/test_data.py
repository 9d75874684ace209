"""Dataset access: layout checks, scan outcomes, safe download, duplicate audit and splits."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import tarfile
import traceback
import zipfile
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import requests
from matplotlib.figure import Figure
from PIL import Image

from brainmri import data
from brainmri.config import CLASS_NAMES, SPLITS
from brainmri.plotting import data as dplot

TRAIN, TEST = SPLITS
FAKE_KEY = "FAKEKEY-0123456789abcdef-DO-NOT-LEAK"


# --- fixture builders -----------------------------------------------------------------------


def _picture(seed: int, size: int = 64, colour: bool = False) -> np.ndarray:
    """A smooth random picture (random 8x8 grid upsampled), distinct for each seed."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (8, 8, 3) if colour else (8, 8)).astype(np.float32)
    image = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(image, 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _write(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def _dataset(root: Path, per_class: int = 2, seed: int = 0, names=None) -> Path:
    """A valid tree of small JPEGs; names maps a split or (split, class) to its folder name."""
    names = names or {}
    n = seed * 1000
    for split in SPLITS:
        for label in CLASS_NAMES:
            split_name = names.get(split, split)
            class_name = names.get((split, label), label)
            for i in range(per_class):
                n += 1
                _write(root / split_name / class_name / f"img{i}.jpg", _jpeg(_picture(n)))
    return root


def _zip_of(folder: Path, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, file.relative_to(folder).as_posix())
        for name, payload in (extra or {}).items():
            zf.writestr(name, payload)
    return archive


@pytest.fixture
def no_credentials(tmp_path, monkeypatch) -> Path:
    """A HOME without kaggle.json and no Kaggle variables; returns an empty project root."""
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    project = tmp_path / "project"
    project.mkdir()
    return project


@pytest.fixture
def credentials(no_credentials, monkeypatch) -> Path:
    """The fake key in the environment; returns the project root."""
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", FAKE_KEY)
    return no_credentials


# --- scan -----------------------------------------------------------------------------------


def test_scan_gives_documented_outcome_for_each_crafted_file(tmp_path):
    names = {TRAIN: "training", (TRAIN, "notumor"): "no_tumor", (TEST, "glioma"): "GLIOMA"}
    root = _dataset(tmp_path / "ds", per_class=1, names=names)
    gl, mn = root / "training" / "glioma", root / "training" / "meningioma"
    no, pi = root / "training" / "no_tumor", root / "training" / "pituitary"
    good = _jpeg(_picture(99))
    noise = np.random.default_rng(1).bytes(2000)
    _write(gl / "corrupt.jpg", good[: good.index(b"\xff\xda") + 20] + noise)  # after the header
    _write(gl / "broken_header.jpg", good[:300] + noise)
    _write(gl / "empty.jpg", b"")
    _write(gl / "text.jpg", b"this is not an image\n")
    _write(gl / "notes.txt", b"a note")
    _write(mn / "truncated.jpg", good[: len(good) * 2 // 3])
    cv2.imwrite(str(no / "deep16.png"), np.array([[0, 32768], [65535, 1000]], np.uint16))
    rgba = np.zeros((6, 5, 4), np.uint8)
    rgba[..., 3] = 255
    cv2.imwrite(str(pi / "alpha.png"), rgba)
    palette = Image.new("P", (7, 3))
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.save(pi / "palette.png")
    _write(pi / "nested" / "deeper.jpg", _jpeg(_picture(98)))
    _write(gl / ".hidden" / "ghost.jpg", good)
    _write(gl / ".DS_Store", b"\0\1\2")
    _write(root / "masks" / TRAIN / "glioma" / "img0.png", good)
    _write(root / "README.md", b"# readme")

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


def test_load_image_normalises_every_mode(tmp_path):
    deep = tmp_path / "deep.png"
    cv2.imwrite(str(deep), np.array([[0, 32768], [65535, 1000]], np.uint16))
    out = data.load_image(deep, 2)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[..., 0].tolist() == [[0, 128], [255, 4]]  # scaled by 255/65535
    assert (out[..., 0] == out[..., 2]).all()
    # 12-bit data in a 16-bit file uses the full grey range, not 1/16 of it.
    cv2.imwrite(str(deep), np.array([[0, 2048], [4095, 100]], np.uint16))
    assert data.load_image(deep, 2)[..., 0].tolist() == [[0, 128], [255, 6]]

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 2] = 200  # red, in OpenCV's BGRA order
    rgba[0, :, 3] = 255
    rgba[1, :, 3] = 0
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    out = data.load_image(tmp_path / "rgba.png", 2)
    assert out[0].tolist() == [[200, 0, 0]] * 2  # opaque: its colour, as RGB
    assert out[1].tolist() == [[0, 0, 0]] * 2  # transparent: black

    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    assert data.load_image(tmp_path / "palette.png", 2).tolist() == [[[0, 255, 0]] * 2] * 2

    grey = _picture(5, size=40)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    out = data.load_image(tmp_path / "grey.png", 20)
    assert out.shape == (20, 20, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    expected = cv2.resize(grey, (20, 20), interpolation=cv2.INTER_AREA)
    assert np.array_equal(out[..., 0], expected)

    colour = _picture(6, size=32, colour=True)  # BGR as OpenCV writes it
    cv2.imwrite(str(tmp_path / "colour.png"), colour)
    assert np.array_equal(data.load_image(tmp_path / "colour.png", 32), colour[..., ::-1])


def test_load_image_names_the_unreadable_file(tmp_path):
    good = _jpeg(_picture(1))
    cases = {
        "empty.jpg": b"",
        "text.jpg": b"hello",
        "truncated.jpg": good[: len(good) // 2],
    }
    for name, payload in cases.items():
        path = _write(tmp_path / name, payload)
        with pytest.raises(ValueError, match=name):
            data.load_image(path, 8)
    with pytest.raises(ValueError, match="missing.jpg"):
        data.load_image(tmp_path / "missing.jpg", 8)


# --- layout ---------------------------------------------------------------------------------


def test_find_dataset_root_finds_nested_layout(tmp_path):
    root = _dataset(tmp_path / "download" / "archive" / "brain", per_class=1)
    assert data.find_dataset_root(tmp_path / "download") == root
    assert data.find_dataset_root(root) == root
    deepest = _dataset(tmp_path / "deep" / "a" / "b" / "c" / "d", per_class=1)
    assert data.find_dataset_root(tmp_path / "deep" / "a") == deepest  # three levels down
    with pytest.raises(data.DatasetLayoutError, match="within 3 levels"):
        data.find_dataset_root(tmp_path / "deep")  # four levels down


def test_missing_split_is_a_layout_error_listing_the_folders(tmp_path):
    root = _dataset(tmp_path / "ds", per_class=1)
    for file in (root / TEST).rglob("*.jpg"):
        file.unlink()
    for folder in sorted((root / TEST).iterdir()):
        folder.rmdir()
    (root / TEST).rmdir()
    (root / "Validation").mkdir()
    for call in (data.find_dataset_root, data.scan_dataset):
        with pytest.raises(data.DatasetLayoutError) as err:
            call(root)
        message = str(err.value)
        assert "missing split" in message and "'Testing'" in message
        assert "Found:" in message and "Training/" in message and "Validation/" in message
        assert "Expected" in message and "glioma" in message


def test_missing_class_folder_is_a_layout_error(tmp_path):
    root = _dataset(tmp_path / "ds", per_class=1)
    for file in (root / TEST / "pituitary").iterdir():
        file.unlink()
    (root / TEST / "pituitary").rename(root / TEST / "pituitry")
    with pytest.raises(data.DatasetLayoutError) as err:
        data.scan_dataset(root)
    message = str(err.value)
    assert "lacks class folder(s) ['pituitary']" in message and "pituitry/" in message


def test_two_folders_for_one_class_is_a_layout_error(tmp_path):
    root = _dataset(tmp_path / "ds", per_class=1)
    _write(root / TRAIN / "no tumor" / "x.jpg", _jpeg(_picture(3)))
    with pytest.raises(data.DatasetLayoutError, match="several folders"):
        data.find_dataset_root(root)


# --- archives and download ------------------------------------------------------------------


def test_safe_extract_refuses_entries_escaping_dest(tmp_path):
    dest = tmp_path / "out" / "dest"
    for name in ("../evil.txt", "/abs/evil.txt", "ok/../../evil.txt"):
        archive = tmp_path / "bad.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("fine.txt", "fine")
            zf.writestr(name, "evil")
        with pytest.raises(data.DataSourceError, match=name.replace(".", r"\.")):
            data.safe_extract(archive, dest)
        assert not dest.exists()  # refused before anything was written
    assert not list(tmp_path.rglob("evil.txt"))

    tar_path = tmp_path / "bad.tar"
    with tarfile.open(tar_path, "w") as tf:
        link = tarfile.TarInfo("escape")
        link.type, link.linkname = tarfile.SYMTYPE, "../../outside"
        tf.addfile(link)
    with pytest.raises(data.DataSourceError, match="'escape'"):
        data.safe_extract(tar_path, dest)
    assert not dest.exists()

    good = tmp_path / "good.tar"
    with tarfile.open(good, "w") as tf:
        info = tarfile.TarInfo("inside/a.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
        link = tarfile.TarInfo("inside/b.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "a.txt"
        tf.addfile(link)
    data.safe_extract(good, dest)
    assert (dest / "inside" / "b.txt").read_text() == "hi"


def test_download_unpacks_a_kaggle_zip_atomically(tmp_path, no_credentials, monkeypatch):
    project = no_credentials
    (project / "kaggle.json").write_text(f'{{"username": "someone", "key": "{FAKE_KEY}"}}')
    source = _dataset(tmp_path / "source", per_class=1)
    seen = {}

    def fake_fetch(dataset: str, into: Path) -> None:
        seen.update(
            dataset=dataset,
            env=(os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")),
            into=into,
        )
        _zip_of(source, into / "brain-tumor-mri-dataset.zip")

    monkeypatch.setattr(data, "_fetch", fake_fetch)
    target = tmp_path / "data" / "brain-tumor-mri-dataset"
    assert data.download_kaggle("owner/brain-tumor-mri-dataset", target, project) == target
    assert seen["env"] == ("someone", FAKE_KEY)  # credentials reach the call...
    assert "KAGGLE_KEY" not in os.environ and "KAGGLE_USERNAME" not in os.environ  # ...only it
    assert seen["into"].parent == target.parent and seen["into"].name.startswith(".download-tmp-")
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # temp folder gone
    assert len(data.scan_dataset(target)) == 8
    for file in tmp_path.rglob("*"):  # no copy of the key written by us
        if file.is_file() and file != project / "kaggle.json":
            assert FAKE_KEY.encode() not in file.read_bytes(), file

    def must_not_fetch(dataset: str, into: Path) -> None:
        raise AssertionError("a valid target must not be downloaded again")

    monkeypatch.setattr(data, "_fetch", must_not_fetch)
    assert data.download_kaggle("owner/brain-tumor-mri-dataset", target, project) == target


@pytest.mark.parametrize("half_written", [False, True])
def test_failed_download_leaves_nothing_and_retry_works(
    tmp_path, credentials, monkeypatch, half_written
):
    target = tmp_path / "data" / "brain-tumor-mri-dataset"

    def broken_fetch(dataset: str, into: Path) -> None:
        if half_written:
            _write(into / "Training" / "glioma" / "img0.jpg", _jpeg(_picture(1)))
            (into / "partial.zip").write_bytes(b"PK\3\4 half")
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(data, "_fetch", broken_fetch)
    with pytest.raises(data.DataSourceError) as err:
        data.download_kaggle("owner/slug", target, credentials)
    message = str(err.value)
    assert "cannot reach Kaggle" in message and "DATA_DIR" in message and "PROFILE=demo" in message
    assert list(target.parent.iterdir()) == []

    source = _dataset(tmp_path / "source", per_class=1)
    monkeypatch.setattr(data, "_fetch", lambda d, into: _zip_of(source, into / "slug.zip"))
    assert data.find_dataset_root(data.download_kaggle("owner/slug", target, credentials))


def test_download_refuses_a_malicious_zip(tmp_path, credentials, monkeypatch):
    source = _dataset(tmp_path / "source", per_class=1)
    target = tmp_path / "data" / "ds"
    extra = {"../../../evil.txt": b"evil"}
    monkeypatch.setattr(data, "_fetch", lambda d, into: _zip_of(source, into / "x.zip", extra))
    with pytest.raises(data.DataSourceError, match=r"\.\./\.\./\.\./evil\.txt"):
        data.download_kaggle("owner/slug", target, credentials)
    assert list(target.parent.iterdir()) == []
    assert not list(tmp_path.rglob("evil.txt"))


def test_rejected_credentials_message(tmp_path, credentials, monkeypatch):
    def unauthorised(dataset: str, into: Path) -> None:
        response = requests.Response()
        response.status_code = 401
        raise requests.HTTPError(f"401 Client Error for key {FAKE_KEY}", response=response)

    monkeypatch.setattr(data, "_fetch", unauthorised)
    with pytest.raises(data.DataSourceError) as err:
        data.download_kaggle("owner/slug", tmp_path / "data" / "ds", credentials)
    message = str(err.value)
    assert "rejected the credentials" in message and "HTTP 401" in message
    assert "kaggle.json" in message and "DATA_DIR" in message and "PROFILE=demo" in message
    assert "cannot reach" not in message
    assert list((tmp_path / "data").iterdir()) == []


def test_missing_credentials_message(tmp_path, no_credentials, monkeypatch):
    def must_not_fetch(dataset: str, into: Path) -> None:
        raise AssertionError("no download without credentials")

    monkeypatch.setattr(data, "_fetch", must_not_fetch)
    assert data.kaggle_credentials(no_credentials) is None
    with pytest.raises(data.DataSourceError) as err:
        data.download_kaggle("owner/slug", tmp_path / "data" / "ds", no_credentials)
    message = str(err.value)
    assert "credentials not found" in message and "KAGGLE_USERNAME" in message
    assert str(tmp_path / "home" / ".kaggle" / "kaggle.json") in message
    assert str(no_credentials / "kaggle.json") in message
    assert "DATA_DIR" in message and "PROFILE=demo" in message
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


def test_download_does_not_overwrite_foreign_content(tmp_path, credentials, monkeypatch):
    target = _write(tmp_path / "data" / "ds" / "notes.txt", b"mine").parent
    monkeypatch.setattr(data, "_fetch", lambda d, into: None)
    with pytest.raises(data.DataSourceError, match="exists but does not hold the dataset"):
        data.download_kaggle("owner/slug", target, credentials)
    assert (target / "notes.txt").read_bytes() == b"mine"


def test_kaggle_credentials_sources_in_order_and_key_never_shown(
    tmp_path, no_credentials, monkeypatch
):
    home_json = tmp_path / "home" / ".kaggle" / "kaggle.json"
    _write(no_credentials / "kaggle.json", b'{"username": "project", "key": "k1"}')
    assert tuple(data.kaggle_credentials(no_credentials)) == ("project", "k1")
    _write(home_json, f'{{"username": "home", "key": "{FAKE_KEY}"}}'.encode())
    creds = data.kaggle_credentials(no_credentials)
    assert tuple(creds) == ("home", FAKE_KEY)
    assert FAKE_KEY not in repr(creds) and FAKE_KEY not in str(creds) and FAKE_KEY not in f"{creds}"
    monkeypatch.setenv("KAGGLE_USERNAME", "env")
    monkeypatch.setenv("KAGGLE_KEY", "k3")
    assert tuple(data.kaggle_credentials(no_credentials)) == ("env", "k3")
    monkeypatch.delenv("KAGGLE_KEY")
    home_json.write_text(f'{{"username": "home", "token": "{FAKE_KEY}"')  # broken JSON
    with pytest.raises(data.DataSourceError) as err:
        data.kaggle_credentials(no_credentials)
    assert str(home_json) in str(err.value) and FAKE_KEY not in str(err.value)


@pytest.mark.parametrize("status", [None, 401, 500])
def test_planted_key_never_appears_in_errors(tmp_path, credentials, monkeypatch, status):
    def leaky(dataset: str, into: Path) -> None:
        if status is None:
            raise ConnectionError(f"connection to https://someone:{FAKE_KEY}@kaggle.com refused")
        response = requests.Response()
        response.status_code = status
        raise requests.HTTPError(f"HTTP {status} with key={FAKE_KEY}", response=response)

    monkeypatch.setattr(data, "_fetch", leaky)
    with pytest.raises(data.DataSourceError) as err:
        data.download_kaggle("owner/slug", tmp_path / "data" / "ds", credentials)
    shown = str(err.value) + repr(err.value) + "".join(traceback.format_exception(err.value))
    assert FAKE_KEY not in shown
    assert err.value.__cause__ is None and err.value.__context__ is None
    assert list((tmp_path / "data").iterdir()) == []


# --- duplicate audit ------------------------------------------------------------------------


@pytest.fixture
def planted(tmp_path) -> Path:
    """A dataset with an exact cross-split copy, a near cross-split copy and a label conflict."""
    root = _dataset(tmp_path / "ds", per_class=3, seed=7)
    original = root / TRAIN / "meningioma" / "img0.jpg"
    _write(root / TEST / "meningioma" / "copy.jpg", original.read_bytes())
    pixels = cv2.imread(str(root / TRAIN / "glioma" / "img0.jpg"), cv2.IMREAD_UNCHANGED)
    brighter = np.clip(pixels.astype(np.int16) + 2, 0, 255).astype(np.uint8)
    _write(root / TEST / "glioma" / "brighter.jpg", _jpeg(brighter, quality=80))
    _write(
        root / TRAIN / "notumor" / "mislabelled.jpg",
        (root / TRAIN / "pituitary" / "img1.jpg").read_bytes(),
    )
    _write(root / TRAIN / "glioma" / "broken.jpg", b"")
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


# --- subsets --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clustered(tmp_path_factory) -> pd.DataFrame:
    """An audited manifest: 40 Training images per class, ten of them in triplets of copies."""
    root = tmp_path_factory.mktemp("clustered")
    n = 5000
    for label in CLASS_NAMES:
        folder = root / TRAIN / label
        for i in range(30):
            n += 1
            _write(folder / f"u{i:02d}.jpg", _jpeg(_picture(n, size=32)))
        for c in range(5):  # clusters of three: the original and two byte copies
            n += 1
            payload = _jpeg(_picture(n, size=32))
            for k in range(3):
                _write(folder / f"c{c}_{k}.jpg", payload)
        for i in range(4):
            n += 1
            _write(root / TEST / label / f"t{i}.jpg", _jpeg(_picture(n, size=32)))
        _write(root / TEST / label / "leak.jpg", (folder / "u00.jpg").read_bytes())
        near = cv2.imread(str(folder / "u01.jpg"), cv2.IMREAD_UNCHANGED)
        _write(root / TEST / label / "near.jpg", _jpeg(np.clip(near.astype(int) + 2, 0, 255)))
    _write(root / TRAIN / "glioma" / "zz_broken.jpg", b"not an image")
    return data.audit_duplicates(data.scan_dataset(root), near_distance=4)


def test_assign_subsets_dedup_and_test_flags(clustered):
    exact = data.assign_subsets(clustered, "exact", 0.25, seed=1)
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

    near = data.assign_subsets(clustered, "near", 0.25, seed=1).set_index("path")
    assert not near.loc[leaks, "test_dedup"].any()  # near copies leave the clean test set too

    none = data.assign_subsets(clustered, "none", 0.25, seed=1)
    assert "dropped" not in set(none["subset"])
    assert none["test_dedup"].tolist() == exact["test_dedup"].tolist()  # exact view

    with pytest.raises(ValueError, match="dedup='fuzzy'"):
        data.assign_subsets(clustered, "fuzzy", 0.25, seed=1)
    with pytest.raises(ValueError, match="missing column"):
        data.assign_subsets(clustered.drop(columns="near_group"), "none", 0.25, seed=1)


def test_validation_split_is_grouped_stratified_and_seeded(clustered):
    none = data.assign_subsets(clustered, "none", 0.25, seed=3)
    train_side = none[none["subset"].isin(["train", "val"])]
    for _, members in train_side[train_side["near_group"] >= 0].groupby("near_group"):
        assert members["subset"].nunique() == 1  # copies never straddle train and val
    share = train_side.groupby("label")["subset"].apply(lambda s: (s == "val").mean())
    assert share.between(0.15, 0.35).all(), share  # stratified around 1/4 in every class

    again = data.assign_subsets(clustered, "none", 0.25, seed=3)
    assert again["subset"].tolist() == none["subset"].tolist()
    other = data.assign_subsets(clustered, "none", 0.25, seed=4)
    assert other["subset"].tolist() != none["subset"].tolist()
    tenth = data.assign_subsets(clustered, "none", 0.1, seed=3)
    assert (tenth["subset"] == "val").sum() < (none["subset"] == "val").sum()


# --- manifest files -------------------------------------------------------------------------


def test_manifest_round_trip_and_hash(tmp_path, clustered):
    manifest = data.assign_subsets(clustered, "exact", 0.25, seed=1)
    manifest["label_index"] = manifest["label"].map(CLASS_NAMES.index).astype(int)
    path = tmp_path / "run" / "manifest.csv"
    data.write_manifest(manifest, path)
    assert [p.name for p in path.parent.iterdir()] == ["manifest.csv"]  # no temp file left
    back = data.read_manifest(path)
    pd.testing.assert_frame_equal(back, manifest, check_dtype=False)
    assert back["bytes"].dtype == np.int64 and back["label_index"].dtype == np.int64
    assert back["test_dedup"].dtype == bool and back["label_conflict"].dtype == bool
    assert (back["reason"] == "").sum() == (manifest["status"] == "ok").sum()  # "" stays ""

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert data.manifest_hash(manifest) == digest == data.manifest_hash(path)
    assert data.manifest_hash(back) == digest
    changed = manifest.copy()
    changed.loc[0, "subset"] = "val" if changed.loc[0, "subset"] != "val" else "train"
    assert data.manifest_hash(changed) != digest


def test_read_manifest_rejects_other_files(tmp_path):
    other = _write(tmp_path / "other.csv", b"path,label\na.jpg,glioma\n")
    with pytest.raises(ValueError) as err:
        data.read_manifest(other)
    assert str(other) in str(err.value) and "'sha256'" in str(err.value)
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        data.read_manifest(tmp_path / "nothing.csv")


# --- figures --------------------------------------------------------------------------------


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


# --- the real dataset -----------------------------------------------------------------------

REAL_COUNTS = {
    TRAIN: {"glioma": 1321, "meningioma": 1339, "notumor": 1591, "pituitary": 1457},
    TEST: {"glioma": 300, "meningioma": 306, "notumor": 405, "pituitary": 300},
}


@pytest.fixture(scope="module")
def real_manifest(real_data) -> pd.DataFrame:
    """The real dataset scanned once for this module."""
    return data.scan_dataset(data.find_dataset_root(real_data))


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
