"""Kaggle download: credentials, safe extraction, atomic unpacking, and a key never shown.

No test reaches the network: download_kaggle's one network call, brainmri.data.kaggle._fetch,
is patched where download_kaggle looks it up.
"""

from __future__ import annotations

import io
import os
import socket
import tarfile
import traceback
import zipfile
from pathlib import Path

import pytest
import requests

from brainmri import data

FAKE_KEY = "FAKEKEY-0123456789abcdef-DO-NOT-LEAK"


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


def test_download_unpacks_a_kaggle_zip_atomically(
    tmp_path, no_credentials, monkeypatch, dataset_tree
):
    project = no_credentials
    (project / "kaggle.json").write_text(f'{{"username": "someone", "key": "{FAKE_KEY}"}}')
    source = dataset_tree(tmp_path / "source", per_class=1)
    seen = {}

    def fake_fetch(dataset: str, into: Path) -> None:
        seen.update(
            dataset=dataset,
            env=(os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")),
            into=into,
        )
        _zip_of(source, into / "brain-tumor-mri-dataset.zip")

    monkeypatch.setattr(data.kaggle, "_fetch", fake_fetch)
    target = tmp_path / "data" / "brain-tumor-mri-dataset"
    assert (
        data.download_kaggle("owner/brain-tumor-mri-dataset", target, project_root=project)
        == target
    )
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

    monkeypatch.setattr(data.kaggle, "_fetch", must_not_fetch)
    assert (
        data.download_kaggle("owner/brain-tumor-mri-dataset", target, project_root=project)
        == target
    )


@pytest.mark.parametrize("half_written", [False, True])
def test_failed_download_leaves_nothing_and_retry_works(
    tmp_path, credentials, monkeypatch, half_written, dataset_tree, write_file, jpeg, picture
):
    target = tmp_path / "data" / "brain-tumor-mri-dataset"

    def broken_fetch(dataset: str, into: Path) -> None:
        if half_written:
            write_file(into / "Training" / "glioma" / "img0.jpg", jpeg(picture(1)))
            (into / "partial.zip").write_bytes(b"PK\3\4 half")
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(data.kaggle, "_fetch", broken_fetch)
    with pytest.raises(data.DataSourceError) as err:
        data.download_kaggle("owner/slug", target, project_root=credentials)
    message = str(err.value)
    assert "cannot reach Kaggle" in message and "DATA_DIR" in message and "PROFILE=demo" in message
    assert list(target.parent.iterdir()) == []

    source = dataset_tree(tmp_path / "source", per_class=1)
    monkeypatch.setattr(data.kaggle, "_fetch", lambda d, into: _zip_of(source, into / "slug.zip"))
    assert data.find_dataset_root(
        data.download_kaggle("owner/slug", target, project_root=credentials)
    )


def test_download_refuses_a_malicious_zip(tmp_path, credentials, monkeypatch, dataset_tree):
    source = dataset_tree(tmp_path / "source", per_class=1)
    target = tmp_path / "data" / "ds"
    extra = {"../../../evil.txt": b"evil"}
    monkeypatch.setattr(
        data.kaggle, "_fetch", lambda d, into: _zip_of(source, into / "x.zip", extra)
    )
    with pytest.raises(data.DataSourceError, match=r"\.\./\.\./\.\./evil\.txt"):
        data.download_kaggle("owner/slug", target, project_root=credentials)
    assert list(target.parent.iterdir()) == []
    assert not list(tmp_path.rglob("evil.txt"))


def test_rejected_credentials_message(tmp_path, credentials, monkeypatch):
    def unauthorised(dataset: str, into: Path) -> None:
        response = requests.Response()
        response.status_code = 401
        raise requests.HTTPError(f"401 Client Error for key {FAKE_KEY}", response=response)

    monkeypatch.setattr(data.kaggle, "_fetch", unauthorised)
    with pytest.raises(data.DataSourceError) as err:
        data.download_kaggle("owner/slug", tmp_path / "data" / "ds", project_root=credentials)
    message = str(err.value)
    assert "rejected the credentials" in message and "HTTP 401" in message
    assert "kaggle.json" in message and "DATA_DIR" in message and "PROFILE=demo" in message
    assert "cannot reach" not in message
    assert list((tmp_path / "data").iterdir()) == []


def test_missing_credentials_message(tmp_path, no_credentials, monkeypatch):
    def must_not_fetch(dataset: str, into: Path) -> None:
        raise AssertionError("no download without credentials")

    monkeypatch.setattr(data.kaggle, "_fetch", must_not_fetch)
    assert data.kaggle_credentials(no_credentials) is None
    with pytest.raises(data.DataSourceError) as err:
        data.download_kaggle("owner/slug", tmp_path / "data" / "ds", project_root=no_credentials)
    message = str(err.value)
    assert "credentials not found" in message and "KAGGLE_USERNAME" in message
    assert str(tmp_path / "home" / ".kaggle" / "kaggle.json") in message
    assert str(no_credentials / "kaggle.json") in message
    assert "DATA_DIR" in message and "PROFILE=demo" in message
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


def test_download_does_not_overwrite_foreign_content(
    tmp_path, credentials, monkeypatch, write_file
):
    target = write_file(tmp_path / "data" / "ds" / "notes.txt", b"mine").parent
    monkeypatch.setattr(data.kaggle, "_fetch", lambda d, into: None)
    with pytest.raises(data.DataSourceError, match="exists but does not hold the dataset"):
        data.download_kaggle("owner/slug", target, project_root=credentials)
    assert (target / "notes.txt").read_bytes() == b"mine"


def test_kaggle_credentials_sources_in_order_and_key_never_shown(
    tmp_path, no_credentials, monkeypatch, write_file
):
    home_json = tmp_path / "home" / ".kaggle" / "kaggle.json"
    write_file(no_credentials / "kaggle.json", b'{"username": "project", "key": "k1"}')
    assert tuple(data.kaggle_credentials(no_credentials)) == ("project", "k1")
    write_file(home_json, f'{{"username": "home", "key": "{FAKE_KEY}"}}'.encode())
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

    monkeypatch.setattr(data.kaggle, "_fetch", leaky)
    with pytest.raises(data.DataSourceError) as err:
        data.download_kaggle("owner/slug", tmp_path / "data" / "ds", project_root=credentials)
    shown = str(err.value) + repr(err.value) + "".join(traceback.format_exception(err.value))
    assert FAKE_KEY not in shown
    assert err.value.__cause__ is None and err.value.__context__ is None
    assert list((tmp_path / "data").iterdir()) == []
