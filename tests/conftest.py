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
