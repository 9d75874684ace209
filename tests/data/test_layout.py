"""Layout discovery: nested roots, folder spellings, and errors that show the tree found."""

from __future__ import annotations

import pytest

from brainmri import data
from brainmri.config import SPLITS

TRAIN, TEST = SPLITS


def test_find_dataset_root_finds_nested_layout(tmp_path, dataset_tree):
    root = dataset_tree(tmp_path / "download" / "archive" / "brain", per_class=1)
    assert data.find_dataset_root(tmp_path / "download") == root
    assert data.find_dataset_root(root) == root
    deepest = dataset_tree(tmp_path / "deep" / "a" / "b" / "c" / "d", per_class=1)
    assert data.find_dataset_root(tmp_path / "deep" / "a") == deepest  # three levels down
    with pytest.raises(data.DatasetLayoutError, match="within 3 levels"):
        data.find_dataset_root(tmp_path / "deep")  # four levels down


def test_missing_split_is_a_layout_error_listing_the_folders(tmp_path, dataset_tree):
    root = dataset_tree(tmp_path / "ds", per_class=1)
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


def test_missing_class_folder_is_a_layout_error(tmp_path, dataset_tree):
    root = dataset_tree(tmp_path / "ds", per_class=1)
    for file in (root / TEST / "pituitary").iterdir():
        file.unlink()
    (root / TEST / "pituitary").rename(root / TEST / "pituitry")
    with pytest.raises(data.DatasetLayoutError) as err:
        data.scan_dataset(root)
    message = str(err.value)
    assert "lacks class folder(s) ['pituitary']" in message and "pituitry/" in message


def test_two_folders_for_one_class_is_a_layout_error(
    tmp_path, dataset_tree, write_file, jpeg, picture
):
    root = dataset_tree(tmp_path / "ds", per_class=1)
    write_file(root / TRAIN / "no tumor" / "x.jpg", jpeg(picture(3)))
    with pytest.raises(data.DatasetLayoutError, match="several folders"):
        data.find_dataset_root(root)
