"""Project constants, parameter profiles and derived paths: the one source of truth.

Submodules, each with one job:

- `constants`: class names and order, the data set's folder names, file types, layer names.
- `stages`: the pipeline table (`PIPELINE`): each stage's parameters, inputs, outputs, metrics.
- `schema`: every parameter's type, range and meaning (`SCHEMA`), and `validate`, which checks
  a whole profile, rules across keys included (`ParamError` names the file and the key).
- `paths`: `Paths`, every location of a run; `find_root` and `is_project_root` (what makes a
  folder the project).
- `profiles`: `load_profile` (params/<profile>.yaml over default.yaml, with overrides) and the
  flat parameters each notebook receives (`stage_params`, `notebook_config`).

Everything is re-exported here: ``from brainmri.config import CLASS_NAMES, load_profile``.
"""

from brainmri.config.constants import (
    CLASS_NAMES,
    DISTILLATION_TEMPERATURE,
    GUIDANCE_CELLS,
    IMAGE_EXTENSIONS,
    KAGGLE_DATASET,
    LOGITS_LAYER,
    SERVE_MAX_UPLOAD_MB,
    SERVE_PORT,
    SPLITS,
    TUMOUR_CLASSES,
)
from brainmri.config.paths import (
    PROJECT_MARKER,
    NotAProject,
    Paths,
    find_root,
    is_project_root,
    paths,
    project_root_at,
)
from brainmri.config.profiles import (
    flat_params,
    load_profile,
    notebook_config,
    parse_yaml,
    stage_params,
)
from brainmri.config.schema import (
    ALL_KEYS,
    BACKBONES,
    CAM_METHODS,
    CAM_TITLES,
    PRECISIONS,
    PROFILE_NAME,
    SCHEMA,
    STRATEGIES,
    TOP_LEVEL_EXTRAS,
    ParamError,
    Spec,
    check_profile_name,
    validate,
)
from brainmri.config.stages import (
    EXPLORER,
    PIPELINE,
    STAGES,
    WORKER_STAGES,
    Stage,
    get_stage,
)

__all__ = [
    "EXPLORER",
    "ALL_KEYS",
    "BACKBONES",
    "CAM_METHODS",
    "CAM_TITLES",
    "CLASS_NAMES",
    "DISTILLATION_TEMPERATURE",
    "GUIDANCE_CELLS",
    "IMAGE_EXTENSIONS",
    "KAGGLE_DATASET",
    "LOGITS_LAYER",
    "PIPELINE",
    "PROJECT_MARKER",
    "PRECISIONS",
    "PROFILE_NAME",
    "SCHEMA",
    "SERVE_MAX_UPLOAD_MB",
    "SERVE_PORT",
    "SPLITS",
    "STAGES",
    "STRATEGIES",
    "TOP_LEVEL_EXTRAS",
    "TUMOUR_CLASSES",
    "WORKER_STAGES",
    "NotAProject",
    "ParamError",
    "Paths",
    "Spec",
    "Stage",
    "check_profile_name",
    "find_root",
    "flat_params",
    "get_stage",
    "is_project_root",
    "project_root_at",
    "load_profile",
    "notebook_config",
    "parse_yaml",
    "paths",
    "stage_params",
    "validate",
]
