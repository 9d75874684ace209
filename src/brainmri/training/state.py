"""The resumable training state: what it belongs to (parameters, data, code), whether a killed
run resumes, a finished one is reused, or training starts afresh."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brainmri import guidance
from brainmri.io import file_sha256

COMPLETE = "complete"


STATUS_MESSAGES = {
    "fresh": "starting a new training run",
    "resume": "resuming the interrupted training run from its last finished epoch",
    "complete": "training already finished for these parameters, data and code: reusing model.keras",
}


def has_resumable_state(state_dir: Path) -> bool:
    """True when a killed run left a backup or a finished warm-up to resume from."""
    state_dir = Path(state_dir)
    return any(state_dir.glob("backup-*")) or (state_dir / "warmup.weights.h5").is_file()


def training_code_files() -> list[Path]:
    """The source files whose code decides what training computes (decoding, model, training).

    Returns:
        The .py files of ``data`` and ``training`` (every module of each package),
        ``inputs``, ``model`` and ``guidance`` (the guided phase's penalty).
    """
    from brainmri import data, inputs, model, training

    files = []
    for m in (data, inputs, model, guidance, training):
        file = Path(m.__file__)
        # a package's __init__.py holds none of its code: every module of it counts
        files += sorted(file.parent.rglob("*.py")) if hasattr(m, "__path__") else [file]
    return files


def state_key(cfg: Mapping[str, Any], manifest_sha256: str) -> str:
    """What a training state belongs to: the parameters, the exact data and the training code."""
    src = Path(__file__).parent.parent  # src/brainmri
    code = {
        f.relative_to(src).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in training_code_files()
    }
    payload = json.dumps(
        {"params": dict(cfg), "manifest": manifest_sha256, "code": code}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def prepare_state(
    state_dir: Path,
    cfg: Mapping[str, Any],
    *,
    manifest_sha256: str,
    model_path: Path,
    history_path: Path,
) -> str:
    """Decide how training starts: 'complete', 'resume' (after a kill) or 'fresh'.

    A state is reused only when it belongs to the same parameters, data and training code, and
    a finished one only while the model file is the one it produced; anything else is wiped,
    with the previous model and history.
    """
    state_dir = Path(state_dir)
    key = state_key(cfg, manifest_sha256)
    key_file = state_dir / "key.txt"
    same = key_file.is_file() and key_file.read_text().strip() == key
    done = state_dir / COMPLETE
    if same and done.is_file() and Path(model_path).is_file():
        if done.read_text().strip() == file_sha256(model_path):
            return "complete"
        print(f"{model_path} is not the model this training produced: training again")
    if same and has_resumable_state(state_dir):
        return "resume"
    if state_dir.exists():
        shutil.rmtree(state_dir)
    for previous in (model_path, history_path):  # a previous run's results, not to be mixed in
        Path(previous).unlink(missing_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key + "\n")
    return "fresh"
