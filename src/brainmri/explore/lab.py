"""`make lab`: JupyterLab on the explorer notebook when a run has finished."""

from __future__ import annotations

import sys
from pathlib import Path


def lab_command(root: Path, *, python: str = sys.executable) -> tuple[list[str], str]:
    """The JupyterLab command line of `make lab`, and the line it prints first.

    JupyterLab serves notebooks/; with a finished run it opens on the explorer
    (notebooks/explore.ipynb, :mod:`brainmri.explore`), else on the file browser, and the line
    says how to make a run.

    Args:
        root: the project folder.
        python: the interpreter that runs JupyterLab.

    Returns:
        ``(argv, line)``.
    """
    from brainmri.config import EXPLORER
    from brainmri.explore.session import finished_runs

    found = finished_runs(root)
    argv = [python, "-m", "jupyterlab", f"--ServerApp.root_dir={root / 'notebooks'}"]
    if found:
        argv.append(f"--LabApp.default_url=/lab/tree/{EXPLORER}.ipynb")
        others = f" (PROFILE in its parameters cell picks another: {', '.join(found[1:])})"
        line = (
            f"explorer: notebooks/{EXPLORER}.ipynb opens the latest finished run, "
            f"reports/{found[0]}/{others if len(found) > 1 else ''}; the pipeline's notebooks "
            "are beside it"
        )
    else:
        line = (
            f"no finished run under {root / 'reports'} for the explorer (notebooks/{EXPLORER}"
            ".ipynb): make one with `make all PROFILE=demo` (5 to 15 minutes on two CPU cores), "
            "then `make lab` again; JupyterLab opens on the pipeline's notebooks"
        )
    return argv, line
