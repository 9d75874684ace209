"""The committed notebooks: generated from their notebooks/*.py sources, one parameters cell each."""

from __future__ import annotations

import ast

import nbformat
import papermill as pm
import pytest

from brainmri.config import EXPLORER, PIPELINE, STAGES, load_profile, stage_params

NOTEBOOKS = (*STAGES, EXPLORER)
"""Every committed notebook: the pipeline's stages and the explorer (make lab)."""


@pytest.fixture(scope="module")
def generator(load_script):
    return load_script("tools/make_notebooks.py")


@pytest.mark.parametrize("stage", NOTEBOOKS)
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


@pytest.mark.parametrize("stage", NOTEBOOKS)
def test_notebooks_are_committed_without_outputs(stage, project_root):
    nb = nbformat.read(project_root / "notebooks" / f"{stage}.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("stage", NOTEBOOKS)
def test_notebook_sources_narrate_and_call(stage, project_root):
    """Notebooks call the library: a function or class defined in a notebook belongs in src/."""
    tree = ast.parse((project_root / "notebooks" / f"{stage}.py").read_text())
    defined = [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    ]
    assert not defined, f"notebooks/{stage}.py defines {defined}: move them into src/brainmri"


def test_generator_names_a_source_without_one_parameters_cell(generator, tmp_path, monkeypatch):
    source = tmp_path / "02_eda.py"
    source.write_text("# %%\nx = 1\n")
    monkeypatch.setattr(generator, "NOTEBOOKS", tmp_path)
    with pytest.raises(ValueError, match=r"02_eda.py: expected exactly one cell marked .*found 0"):
        generator.build("02_eda")


@pytest.mark.parametrize("stage", STAGES)
def test_no_notebook_name_is_shadowed_by_a_parameter(stage, project_root):
    """papermill injects each parameter as a global after the parameters cell: a module or
    variable of the same name (say `import distribute` beside `train.distribute`) would be
    silently replaced by the parameter's value."""
    tree = ast.parse((project_root / "notebooks" / f"{stage}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    params = set(stage_params(load_profile("default", root=project_root), stage))
    injected = {"STAGE", "profile"}
    clashes = (names & params) - injected
    assert not clashes, f"notebooks/{stage}.py uses parameter names as variables: {clashes}"


def test_the_explorer_is_outside_the_pipeline_and_opens_the_latest_run(project_root):
    """make all never runs the explorer; its one parameter, PROFILE, defaults to None (the most
    recently finished run, brainmri.explore.latest_run)."""
    assert EXPLORER not in STAGES and all(s.name != EXPLORER for s in PIPELINE)
    path = project_root / "notebooks" / f"{EXPLORER}.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert len([c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]) == 1
    inspected = pm.inspect_notebook(str(path))
    assert set(inspected) == {"PROFILE"} and inspected["PROFILE"]["default"] == "None"
