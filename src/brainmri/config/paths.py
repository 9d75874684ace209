"""Every location a run reads or writes, derived from the project root and the profile."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from brainmri.config.schema import check_profile_name

# --- paths ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    """Every location the project reads or writes, derived from the project root and profile."""

    root: Path
    profile: str

    def __post_init__(self) -> None:
        check_profile_name(self.profile)

    @property
    def params_dir(self) -> Path:
        return self.root / "params"

    @property
    def notebooks_dir(self) -> Path:
        return self.root / "notebooks"

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def kaggle_dir(self) -> Path:
        return self.data_root / "brain-tumor-mri-dataset"

    @property
    def phantom_dir(self) -> Path:
        return self.data_root / "phantom"

    @property
    def run_dir(self) -> Path:
        return self.root / "reports" / self.profile

    @property
    def figures_dir(self) -> Path:
        return self.run_dir / "figures"

    @property
    def html_dir(self) -> Path:
        return self.run_dir / "html"

    @property
    def failed_dir(self) -> Path:
        return self.run_dir / "failed"

    @property
    def state_dir(self) -> Path:
        return self.run_dir / ".state"

    @property
    def cache_dir(self) -> Path:
        return self.run_dir / ".cache"

    @property
    def manifest(self) -> Path:
        return self.run_dir / "manifest.csv"

    @property
    def copy_pairs(self) -> Path:
        """The copy audit's pairs (brainmri.data.audit): the evidence behind the copy groups."""
        return self.run_dir / "copy_pairs.csv"

    @property
    def data_json(self) -> Path:
        return self.run_dir / "data.json"

    @property
    def model(self) -> Path:
        return self.run_dir / "model.keras"

    @property
    def unguided_model(self) -> Path:
        """A guided run's fine-tuned model before the guided phase (04/05 compare the two)."""
        return self.run_dir / "model_unguided.keras"

    @property
    def ood(self) -> Path:
        """The OOD guard's feature statistics, fitted by 04_evaluate for model.keras."""
        return self.run_dir / "ood.npz"

    @property
    def history(self) -> Path:
        return self.run_dir / "history.csv"

    @property
    def run_json(self) -> Path:
        return self.run_dir / "run.json"

    @property
    def metrics(self) -> Path:
        return self.run_dir / "metrics.json"

    @property
    def previous_metrics(self) -> Path:
        """metrics.json as it was before the last pipeline run that ran a stage."""
        return self.run_dir / "metrics.previous.json"

    @property
    def index_html(self) -> Path:
        return self.run_dir / "index.html"

    @property
    def model_card(self) -> Path:
        return self.run_dir / "model_card.md"

    @property
    def screenshots_dir(self) -> Path:
        return self.run_dir / "screenshots"

    def stage_metrics(self, stage: str) -> Path:
        """The JSON fragment a stage writes; the pipeline merges them into metrics.json."""
        return self.run_dir / "metrics" / f"{stage}.json"

    def notebook(self, stage: str) -> Path:
        return self.notebooks_dir / f"{stage}.ipynb"

    def executed(self, stage: str) -> Path:
        return self.run_dir / f"{stage}.ipynb"


PROJECT_MARKER = Path("params") / "default.yaml"
"""The file that makes a folder a brainmri project: every run starts from it."""


class NotAProject(FileNotFoundError):
    """A folder that is not a brainmri project (no params/default.yaml) where one is needed."""


def is_project_root(folder: Path) -> bool:
    """True when folder is a brainmri project: it holds :data:`PROJECT_MARKER`."""
    return (Path(folder) / PROJECT_MARKER).is_file()


def project_root_at(folder: str | Path, *, named: str, remedy: str) -> Path:
    """The folder, resolved, when it is a brainmri project; else one line saying so.

    Args:
        folder: the folder given.
        named: how the message names it, e.g. ``"--root ../x"`` or ``"BRAINMRI_ROOT=/x"``.
        remedy: what to do instead.

    Returns:
        The resolved folder.

    Raises:
        NotAProject: it holds no :data:`PROJECT_MARKER`.
    """
    root = Path(folder).resolve()
    if not is_project_root(root):
        raise NotAProject(f"{named}: not a brainmri project (no {PROJECT_MARKER} there); {remedy}")
    return root


def find_root(start: Path | None = None) -> Path:
    """Return the project root: BRAINMRI_ROOT, else the nearest folder up holding params/.

    Args:
        start: where to start looking (default: the working directory).

    Returns:
        The resolved project folder.

    Raises:
        NotAProject: BRAINMRI_ROOT names a folder that is not a project, or no folder from
            start up is one.
    """
    env = os.environ.get("BRAINMRI_ROOT")
    if env:
        return project_root_at(
            env,
            named=f"BRAINMRI_ROOT={env}",
            remedy="point it at the project's folder, or unset it",
        )
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if is_project_root(folder):
            return folder
    raise NotAProject(
        f"{here} is not in a brainmri project: no folder from it up holds {PROJECT_MARKER}; "
        "run from the project's folder (or set BRAINMRI_ROOT)"
    )


def paths(profile: str, root: Path | None = None) -> Paths:
    """Return the derived paths of one profile's run.

    Args:
        profile: the profile name; its run lives in reports/<profile>/.
        root: the project root; None finds it (:func:`find_root`: BRAINMRI_ROOT, else the
            nearest folder up from the working directory holding params/default.yaml).

    Returns:
        The :class:`Paths` of the run.

    Raises:
        NotAProject: root is None and no project root is found.
    """
    return Paths(root=Path(root) if root else find_root(), profile=profile)
