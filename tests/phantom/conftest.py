"""Fixtures of the phantom tests: a tiny phantom data set shared by the read-only tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from brainmri.phantom import generate_phantom_dataset


@pytest.fixture(scope="session")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny phantom data set (3 Training and 2 Testing images per class, 64 px, seed 5)."""
    return generate_phantom_dataset(tmp_path_factory.mktemp("p") / "set", 3, 2, 64, seed=5)
