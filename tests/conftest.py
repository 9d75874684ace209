"""Shared fixtures: the project root, the real data set (where present) and a tiny phantom set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "brain-tumor-mri-dataset"


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The repository root."""
    return ROOT


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shared copy of the Kaggle data set; skips the test where it is absent."""
    if not (REAL_DATA / "Training").is_dir():
        pytest.skip(f"real data not present at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def phantom_set(tmp_path_factory) -> Path:
    """A small phantom data set with masks, generated once per test session."""
    from brainmri.phantom import generate_phantom_dataset

    return generate_phantom_dataset(
        tmp_path_factory.mktemp("phantom"), train_per_class=10, test_per_class=4, size=64, seed=3
    )


@pytest.fixture(scope="session")
def trained_phantom(tmp_path_factory):
    """A compact CNN trained briefly on phantoms: (model, data root, image size, history)."""
    from brainmri import inputs, training
    from brainmri import model as mdl
    from brainmri.config import CLASS_NAMES, load_profile
    from brainmri.phantom import generate_phantom_dataset

    root = generate_phantom_dataset(tmp_path_factory.mktemp("phantom_train"), 100, 20, 128, seed=11)
    p = load_profile("demo")
    no_aug = dict.fromkeys(
        ("aug_rotation", "aug_width_shift", "aug_height_shift", "aug_shear", "aug_zoom"), 0.0
    )
    cfg = {**p["run"], **p["model"], **p["train"], **no_aug, "epochs": 24}
    out = tmp_path_factory.mktemp("phantom_run")

    # Validation is every fifth Training image: the Testing images stay unseen for the tests.
    files = sorted((root / "Training").glob("*/*.jpg"))
    labels = [CLASS_NAMES.index(f.parent.name) for f in files]
    val_idx = set(range(0, len(files), 5))
    split = {
        part: (
            [f for i, f in enumerate(files) if (i in val_idx) == (part == "val")],
            [y for i, y in enumerate(labels) if (i in val_idx) == (part == "val")],
        )
        for part in ("train", "val")
    }
    training.seed_everything(cfg["seed"])
    size = cfg["image_size"]
    train = inputs.make_dataset(*split["train"], size, 32, shuffle=True, seed=1)
    val = inputs.make_dataset(*split["val"], size, 32)
    model = mdl.build_model(cfg)
    files = {"model_path": out / "model.keras", "history_path": out / "history.csv"}
    training.prepare_state(out / "state", cfg, manifest_sha256="fixture", **files)
    history = training.fit(model, train, val, cfg, state_dir=out / "state", **files)
    return mdl.load_model(out / "model.keras"), root, size, history
