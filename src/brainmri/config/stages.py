"""The pipeline's stages, declared once: what each notebook reads, writes and owns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One notebook of the pipeline, declared once: everything the runner and the reports know.

    The pipeline reruns a stage when its notebook, its parameter sections, src/ or an upstream
    stage changed; it counts the stage as done only while its executed notebook, its metrics
    fragment and every file in ``outputs`` exist.
    """

    name: str
    """File stem of the notebook (notebooks/<name>.ipynb) and of its executed copy in reports/."""
    title: str
    """Heading of the stage on the run's index page."""
    sections: tuple[str, ...]
    """Parameter sections the notebook receives (and is rerun for when they change)."""
    upstream: tuple[str, ...]
    """Stages whose artefacts it reads: a rerun of one of them reruns this one."""
    outputs: tuple[str, ...]
    """Artefacts beyond the executed notebook and metrics fragment, as names of Paths properties."""
    metrics_key: str
    """The section of metrics.json the stage owns (it writes metrics/<name>.json)."""
    figure_prefix: str | None
    """Name prefix of the figures the stage saves in figures/ (None: it draws none)."""


# One row per stage, read like a pipeline.yaml: kept as an aligned table (one line each) so that a
# stage's facts are read, and changed, in one place.
# fmt: off
PIPELINE: tuple[Stage, ...] = (
    #     name           title                                              sections                      upstream                      outputs                            metrics key  figures
    Stage("01_download", "Data: source, validation, manifest and splits",  ("run", "data"),              (),                           ("manifest", "data_json", "copy_pairs"), "data", None),
    Stage("02_eda",      "Exploratory data analysis and duplicate audit",  ("run", "eda"),               ("01_download",),             (),                                "eda",       "eda_"),
    Stage("03_train",    "Training",                                       ("run", "model", "train"),    ("01_download",),             ("model", "history", "run_json"),  "train",     "train_"),
    Stage("04_evaluate", "Evaluation",                                     ("run", "evaluate"),          ("01_download", "03_train"),  ("ood",),                          "evaluate",  "eval_"),
    Stage("05_gradcam",  "Explainability: Grad-CAM",                       ("run", "gradcam"),           ("01_download", "03_train"),  (),                                "gradcam",   "cam_"),
)
# fmt: on
"""The stages in the order they run."""

STAGES: tuple[str, ...] = tuple(s.name for s in PIPELINE)
"""The stage names in the order they run."""

EXPLORER: str = "explore"
"""The notebook outside the pipeline (notebooks/explore.py): it opens a finished run for
browsing (:mod:`brainmri.explore`); `make lab` opens it, `make all` never runs it."""

WORKER_STAGES: tuple[str, ...] = ("01_download", "03_train")
"""What a cluster's other workers run (train.distribute: multi_worker): the data and the training
they take part in; the chief alone evaluates, explains and publishes."""


def get_stage(name: str) -> Stage:
    """Return the declaration of one stage.

    Args:
        name: a stage name, e.g. ``"03_train"``.

    Returns:
        Its :class:`Stage`.
    """
    for declared in PIPELINE:
        if declared.name == name:
            return declared
    raise KeyError(f"unknown stage {name!r}: expected one of {list(STAGES)}")
