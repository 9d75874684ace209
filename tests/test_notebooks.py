"""The committed notebooks: generated from tools/make_notebooks.py, one parameters cell each."""

from __future__ import annotations

import importlib.util

import nbformat
import papermill as pm
import pytest

from brainmri.config import STAGES, load_profile, stage_params


@pytest.fixture(scope="module")
def generator(project_root):
    spec = importlib.util.spec_from_file_location(
        "make_notebooks", project_root / "tools" / "make_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("stage", STAGES)
def test_committed_notebook_matches_generator(stage, generator, project_root):
    committed = nbformat.read(project_root / "notebooks" / f"{stage}.ipynb", as_version=4)
    built = generator.build(stage)
    assert [c.source for c in committed.cells] == [c.source for c in built.cells], (
        f"notebooks/{stage}.ipynb is out of date: run `make notebooks`"
    )
    assert committed.metadata["kernelspec"]["name"] == "brainmri"


@pytest.mark.parametrize("stage", STAGES)
def test_one_parameters_cell_holding_the_default_values(stage, project_root):
    path = project_root / "notebooks" / f"{stage}.ipynb"
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    inspected = pm.inspect_notebook(str(path))
    defaults = stage_params(load_profile("default", root=project_root), stage)
    for key, value in defaults.items():
        assert key in inspected, f"{stage}: parameter {key} missing from the parameters cell"
        assert eval(inspected[key]["default"]) == value  # noqa: S307 - literal from our own notebook
    assert eval(inspected["profile"]["default"]) == "default"


@pytest.mark.parametrize("stage", STAGES)
def test_notebooks_are_committed_without_outputs(stage, project_root):
    nb = nbformat.read(project_root / "notebooks" / f"{stage}.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
