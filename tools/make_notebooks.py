"""Write notebooks/*.ipynb from their sources, notebooks/*.py in jupytext's percent format.

Each source is a plain Python file (`# %%` code cells, `# %% [markdown]` prose cells) that ruff
formats and checks like any other code: the idea of keras-io's tutobooks, kept in one step. This
script only reads a source, appends the stage's default parameters (from params/default.yaml) to
its `parameters` cell (the explorer, outside the pipeline, keeps its cell as written), and writes
the notebook without outputs. Run it (`make notebooks`) after
editing a source; tests check that the committed notebooks match.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNELSPEC = {"name": "brainmri", "display_name": "Python (brainmri)", "language": "python"}


def _brainmri_config():
    """The project's config module, importable from a checkout that was not installed."""
    sys.path.insert(0, str(ROOT / "src"))
    from brainmri import config

    return config


def parameters_source(stage: str, head: str) -> str:
    """The parameters cell: the source's own lines, then the stage's default parameters."""
    config = _brainmri_config()
    params = config.load_profile("default", root=ROOT)
    lines = [head.rstrip()]
    for section in config.get_stage(stage).sections:
        lines.append(f"# {section}")
        lines += [f"{key} = {value!r}" for key, value in params[section].items()]
    return "\n".join(lines)


def build(stage: str) -> nbformat.NotebookNode:
    """One notebook from notebooks/<stage>.py.

    Args:
        stage: a stage name, e.g. ``"03_train"``, or ``config.EXPLORER``.

    Returns:
        The notebook: the source's cells, its parameters cell completed, no outputs.
    """
    source = NOTEBOOKS / f"{stage}.py"
    nb = jupytext.read(source, fmt="py:percent")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(
            f"{source}: expected exactly one cell marked '# %% tags=[\"parameters\"]', "
            f"found {len(tagged)}"
        )
    if stage in _brainmri_config().STAGES:
        tagged[0].source = parameters_source(stage, tagged[0].source)
    cells = []
    for i, cell in enumerate(nb.cells):
        metadata = {"tags": ["parameters"]} if cell is tagged[0] else {}
        if cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(cell.source)
        else:
            new = nbformat.v4.new_code_cell(cell.source, metadata=metadata)
        new["id"] = f"{stage}-{i:02d}"
        cells.append(new)
    out = nbformat.v4.new_notebook(cells=cells)
    out.metadata["kernelspec"] = dict(KERNELSPEC)
    out.metadata["language_info"] = {"name": "python"}
    return out


def main() -> None:
    """Write every stage's notebook and the explorer's."""
    config = _brainmri_config()
    for stage in (*config.STAGES, config.EXPLORER):
        nbformat.write(build(stage), NOTEBOOKS / f"{stage}.ipynb")


if __name__ == "__main__":
    main()
