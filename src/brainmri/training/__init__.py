"""Training: seeding, the step loop, the phases of a resumable run, and its provenance.

Submodules, in the order a run uses them:

- `state`: what a training state belongs to (parameters, data, code) and whether a killed run
  resumes, a finished one is reused, or training starts afresh.
- `loop`: seeding, compiling, and the epochs of one phase under any tf.distribute strategy.
- `phases`: head warm-up, fine-tuning and the lesion-guided phase (`guided_phase`, which the
  guidance study also runs), their callbacks, the kept model and history; `train_or_resume`
  is what 03_train calls.
- `provenance`: `run.json` (parameters, data hash, versions, commit, timings).

Everything public is re-exported here: ``from brainmri import training; training.fit(...)``.
"""

from brainmri.training.loop import (
    EpochTimer,
    TrainingSteps,
    compile_model,
    run_epochs,
    seed_everything,
)
from brainmri.training.phases import (
    AtomicModelCheckpoint,
    best_epoch,
    fit,
    guidance_margin_pixels,
    guided_epochs,
    guided_phase,
    had_guided_phase,
    read_history,
    save_model_atomically,
    train_or_resume,
    worker_outputs,
)
from brainmri.training.provenance import PACKAGES, environment_info, git_info, now, run_metadata
from brainmri.training.state import (
    COMPLETE,
    STATUS_MESSAGES,
    has_resumable_state,
    prepare_state,
    state_key,
    training_code_files,
)

__all__ = [
    "AtomicModelCheckpoint",
    "COMPLETE",
    "PACKAGES",
    "STATUS_MESSAGES",
    "EpochTimer",
    "TrainingSteps",
    "best_epoch",
    "compile_model",
    "environment_info",
    "fit",
    "git_info",
    "guidance_margin_pixels",
    "guided_epochs",
    "had_guided_phase",
    "had_guided_phase",
    "guided_phase",
    "has_resumable_state",
    "now",
    "prepare_state",
    "read_history",
    "run_epochs",
    "run_metadata",
    "save_model_atomically",
    "seed_everything",
    "state_key",
    "train_or_resume",
    "training_code_files",
    "worker_outputs",
]
