"""The run context the notebooks and tools open: records, subsets, files, images as trained."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from brainmri import config, data, runs, sources
from brainmri.io import write_json


@pytest.fixture
def recorded(tmp_path, phantom_set, project_root):
    """A project with 01_download's records of the phantom set, and no model."""
    shutil.copytree(project_root / "params", tmp_path / "params")
    cfg = config.flat_params(config.load_profile("smoke", root=tmp_path))
    manifest, pairs = sources.build_manifest(phantom_set, cfg)
    paths = config.paths("smoke", tmp_path)
    data.write_manifest(manifest, paths.manifest)
    source = {"source": "phantom", "detail": "test", "root": str(phantom_set)}
    record = sources.data_record(
        source, manifest, paths.manifest, pairs, protocol=cfg["protocol"], min_correlation=0.97
    )
    write_json(paths.data_json, record)
    return paths


def test_open_run_gives_the_subsets_files_and_images_of_the_records(recorded, phantom_set):
    run = runs.open_run("smoke", model=False, root=recorded.root)
    assert run.paths == recorded and run.data_root == phantom_set and run.model is None
    headline = run.rows("headline")
    assert len(headline) and headline["headline_test"].all()
    assert set(run.rows("val")["subset"]) == {"val"}
    files = run.files(headline.head(3))
    assert files == [str(phantom_set / p) for p in headline["path"].head(3)]
    images = run.images(headline.head(3), size=32)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.float32 and images.max() > 0
    with pytest.raises(ValueError, match="no model loaded"):
        _ = run.image_size
    with pytest.raises(FileNotFoundError, match="no trained model; run the 03_train stage"):
        runs.open_run("smoke", root=recorded.root)


def test_images_are_cut_to_the_head_as_the_run_recorded(recorded):
    assert runs.crop_to_brain_of(recorded.run_dir) is False  # no run.json: not cut
    assert runs.crop_to_brain_of(recorded.run_dir, {"crop_to_brain": True}) is True  # the profile's
    write_json(recorded.run_json, {"params": {"crop_to_brain": True}})
    run = runs.open_run("smoke", model=False, root=recorded.root)
    assert run.crop is True
    rows = run.rows("test").head(2)
    cut = run.images(rows, size=48)
    whole = runs.Run(run.paths, run.record, run.manifest, run.data_root).images(rows, size=48)
    assert cut.shape == whole.shape and not np.array_equal(cut, whole)
    expected = np.stack([data.load_image(f, 48, crop=True) for f in run.files(rows)])
    np.testing.assert_array_equal(cut, expected.astype(np.float32))


def test_a_project_without_records_says_which_stage_to_run(tmp_path, project_root):
    shutil.copytree(project_root / "params", tmp_path / "params")
    with pytest.raises(FileNotFoundError, match="run the 01_download stage first"):
        runs.open_run("smoke", root=tmp_path)


def test_the_unguided_model_is_the_one_03_recorded_or_none(recorded, tmp_path):
    from brainmri.io import file_sha256
    from brainmri.model import build_model

    run = runs.open_run("smoke", model=False, root=recorded.root)
    assert run.unguided_model() is None  # no run.json: no guided phase recorded
    write_json(recorded.run_json, {"unguided_model_sha256": None})
    assert run.unguided_model() is None  # an unguided run
    model = build_model({**config.flat_params(config.load_profile("smoke")), "image_size": 32})
    model.save(recorded.unguided_model)

    write_json(recorded.run_json, {"unguided_model_sha256": file_sha256(recorded.unguided_model)})
    assert run.unguided_model().name == model.name
    write_json(recorded.run_json, {"unguided_model_sha256": "0" * 64})  # another model's hash
    with pytest.raises(RuntimeError, match="not the model 03_train saved.*rerun 03_train"):
        run.unguided_model()
