"""A finished small run for the explorer: a phantom set and a seeded compact CNN laid out as
reports/demo/ of a temporary project, with a manifest, data record, run record and metrics."""

from __future__ import annotations

import shutil

import numpy as np
import pytest


@pytest.fixture(scope="session")
def phantom_run(tmp_path_factory, project_root):
    """(project root, profile): a run that 04_evaluate finished, on a small phantom set.

    The model is the demo profile's compact CNN at 64 px, built from a fixed seed and not
    trained: the explorer's wiring is under test, not a model's skill, and building it takes a
    second where training takes minutes. The test subset is the phantom Testing folder (20
    images), the validation subset every fourth Training image (20); the temperature is 1.5
    and the OOD threshold keeps 95% of the validation images, as 04 chooses it.
    """
    import keras

    from brainmri import data, ood
    from brainmri import model as mdl
    from brainmri.config import CLASS_NAMES, flat_params, load_profile, paths
    from brainmri.io import file_sha256, write_json
    from brainmri.phantom import generate_phantom_dataset

    data_root = generate_phantom_dataset(
        tmp_path_factory.mktemp("explore_phantom"), 20, 5, 64, seed=5
    )
    root = tmp_path_factory.mktemp("explore_project")
    shutil.copytree(project_root / "params", root / "params")
    p = paths("demo", root)
    p.run_dir.mkdir(parents=True)
    manifest = data.scan_dataset(data_root)
    training = (manifest["split"] == "Training").to_numpy()
    order = np.cumsum(training) - 1  # each Training image's position among them
    val = training & (order % 4 == 0)
    manifest["subset"] = np.where(~training, "test", np.where(val, "val", "train"))
    manifest["headline_test"] = ~training
    manifest["label_index"] = [CLASS_NAMES.index(c) for c in manifest["label"]]
    manifest["copy_group"] = np.arange(len(manifest))
    data.write_manifest(manifest, p.manifest)
    write_json(p.data_json, {"root": str(data_root), "mask_root": None, "protocol": "grouped"})
    keras.utils.set_random_seed(7)
    model = mdl.build_model({**flat_params(load_profile("demo", root=root)), "image_size": 64})
    model.save(p.model)
    write_json(
        p.run_json,
        {"params": {"crop_to_brain": False}, "model_sha256": file_sha256(p.model)},
    )
    val_files = [str(data_root / f) for f in manifest.loc[val, "path"]]
    val_logits, _ = mdl.predict_files(model, val_files)
    threshold = ood.ood_threshold(val_logits, keep=0.95)
    write_json(p.metrics, {"evaluate": {"temperature": 1.5, "ood": {"threshold": threshold}}})
    return root, "demo"
