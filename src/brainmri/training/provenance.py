"""Provenance of a run (`run.json`): parameters, data hash, versions, commit, timings."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from brainmri import devices
from brainmri.training.phases import best_epoch

PACKAGES = (
    "tensorflow",
    "keras",
    "numpy",
    "scikit-learn",
    "opencv-python",
    "papermill",
    "nbconvert",
    "pandas",
)


def git_info(root: Path) -> dict[str, Any]:
    """The commit of the project and whether its tracked files have uncommitted changes."""

    def run(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = run("rev-parse", "HEAD") or None
    dirty = bool(run("status", "--porcelain", "--untracked-files=no")) if commit else None
    return {"commit": commit, "dirty": dirty}


def environment_info() -> dict[str, Any]:
    """Python, platform, package versions, TensorFlow devices, dtype policy and cluster task."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "dtype_policy": keras.config.dtype_policy().name,  # train.mixed_precision, resolved
        "cluster_task": devices.task_name(),  # "local", or e.g. "worker-0" on a cluster
    }


def now() -> str:
    """The current UTC time in ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_metadata(
    cfg: Mapping[str, Any],
    model: keras.Model,
    history: pd.DataFrame,
    *,
    manifest_sha256: str,
    root: Path,
    started: str,
    status: str,
) -> dict[str, Any]:
    """run.json: git commit, environment, params, data hash, times, best epoch; plus a summary.

    Args:
        cfg: the run, model and train parameters.
        model: the trained model.
        history: its training history.
        manifest_sha256: hash of the run's manifest.
        root: the project root (for the git commit).
        started: when the stage started (ISO 8601, :func:`now`).
        status: what :func:`train_or_resume` reported ('fresh', 'resume' or 'complete').

    Returns:
        The run record, whose "summary" is the train section of metrics.json.
    """
    from brainmri.model import parameter_counts

    git = git_info(root)
    finished = now()
    seconds = history["epoch_seconds"].tolist() if "epoch_seconds" in history else []
    summary = {
        "model": f"{model.name} ({cfg['image_size']}x{cfg['image_size']}, weights {cfg['weights']})",
        "parameters": parameter_counts(model),
        "epochs_run": int(len(history)),
        "best": best_epoch(history),
        "seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
        "train_seconds": float(np.sum(seconds)) if seconds else None,
        "status": status,
        "git": git,
        "started": started,
        "finished": finished,
    }
    return {
        "summary": summary,
        "params": dict(cfg),
        "manifest_sha256": manifest_sha256,
        "environment": environment_info(),
        "git": git,
        "started": started,
        "finished": finished,
        "best_epoch": summary["best"],
    }
