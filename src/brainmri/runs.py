"""A run's records for the notebooks and tools: one prologue instead of a dozen lines in each.

``open_run(profile)`` gathers what 02-05 and the study tools start from: the run's paths, its data
record and manifest (01_download), the data root, and, once 03_train has run, the trained model
and how its images were prepared (cut to the head or not, from run.json). ``run.images(rows)``
then decodes manifest rows the way training did. ``run_info`` is what a prediction needs of the
run that trained a model: its hash, temperature, OOD guard (gate bounds, energy threshold, the
feature statistics of ood.npz) and crop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmri import config, sources
from brainmri.io import file_sha256, read_json


@dataclass
class Run:
    """One profile's run: its records, and its model once trained.

    Attributes:
        paths: every location of the run.
        record: the data record (data.json).
        manifest: the manifest (manifest.csv).
        data_root: the folder the manifest's paths are relative to.
        model: the trained model, or None (not loaded, or not trained yet).
        crop: whether the model's images are cut to the head first (``model.crop_to_brain``
            as run.json recorded it; False before training).
    """

    paths: config.Paths
    record: dict[str, Any]
    manifest: pd.DataFrame
    data_root: Path
    model: Any = None
    crop: bool = False

    @property
    def image_size(self) -> int:
        """The model's input side in pixels."""
        if self.model is None:
            raise ValueError(f"{self.paths.run_dir}: no model loaded (open_run(..., model=True))")
        return int(self.model.input_shape[1])

    def rows(self, name: str) -> pd.DataFrame:
        """Manifest rows of a subset: 'train', 'val', 'test' or 'headline' (see
        ``sources.subset``)."""
        return sources.subset(self.manifest, name)

    def files(self, rows: pd.DataFrame | Iterable[str]) -> list[str]:
        """Absolute file paths of manifest rows (or of their relative paths)."""
        paths = rows["path"] if isinstance(rows, pd.DataFrame) else rows
        return [str(self.data_root / p) for p in paths]

    def images(self, rows: pd.DataFrame | Iterable[str], *, size: int | None = None) -> np.ndarray:
        """Decode manifest rows (or relative paths) as the model's inputs were prepared.

        Args:
            rows: manifest rows, or paths relative to the data root.
            size: the side in pixels; None: the model's input side.

        Returns:
            A float32 array (N, size, size, 3) of 0-255 pixels.
        """
        from brainmri import inputs  # TensorFlow: only where images are decoded for a model

        return inputs.load_batch(self.files(rows), size or self.image_size, crop=self.crop)

    def unguided_model(self) -> Any:
        """A guided run's fine-tuned model before its guided phase, checked against the hash
        run.json recorded; None for a run without a guided phase.

        Raises:
            RuntimeError: the file is not the model 03_train saved (rerun 03_train).
        """
        recorded = (
            read_json(self.paths.run_json).get("unguided_model_sha256")
            if self.paths.run_json.is_file()
            else None
        )
        if not recorded:
            return None
        path = self.paths.unguided_model
        if not path.is_file() or file_sha256(path) != recorded:
            raise RuntimeError(
                f"{path} is not the model 03_train saved (missing, or its SHA-256 differs from "
                "run.json's unguided_model_sha256): rerun 03_train"
            )
        from brainmri.model import load_model  # TensorFlow: only where a model is needed

        return load_model(path)

    def lesions(
        self, rows: pd.DataFrame, *, per_class: int, mask_root: str | Path | None = None
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """The tumour images among some rows that have a mask, with their masks cut and sized
        as the images are (``sources.images_with_masks``).

        Args:
            rows: manifest rows (e.g. ``run.rows("val")``).
            per_class: the most images kept per class, in manifest order.
            mask_root: the masks tree; None: the one the data record names.

        Returns:
            ``(rows, masks)``: the kept rows and their bool masks (N, size, size).
        """
        return sources.images_with_masks(
            rows,
            self.data_root,
            self.image_size,
            mask_root=mask_root or self.record.get("mask_root"),
            per_class=per_class,
            crop=self.crop,
        )


def crop_to_brain_of(run_dir: Path, params: Mapping[str, Any] | None = None) -> bool:
    """Whether a run's model takes images cut to the head (``model.crop_to_brain``), from its
    run.json; from ``params`` (or False) where there is none yet."""
    run_json = Path(run_dir) / "run.json"
    if run_json.is_file():
        return bool(read_json(run_json).get("params", {}).get("crop_to_brain", False))
    return bool((params or {}).get("crop_to_brain", False))


def open_run(profile: str, *, model: bool = True, root: Path | None = None) -> Run:
    """Open a profile's run as the notebooks and tools start from it.

    Args:
        profile: the profile name (reports/<profile>/).
        model: load the trained model (03_train must have run).
        root: the project root; None finds it.

    Returns:
        The :class:`Run`.

    Raises:
        FileNotFoundError: 01_download has not run, or ``model`` is True and 03_train has not.
    """
    paths = config.paths(profile, root)
    record, manifest = sources.load_run_data(paths)
    run = Run(paths, record, manifest, Path(record["root"]), crop=crop_to_brain_of(paths.run_dir))
    if model:
        from brainmri.model import load_model  # TensorFlow: only where a model is needed

        if not paths.model.is_file():
            raise FileNotFoundError(f"{paths.model}: no trained model; run the 03_train stage")
        run.model = load_model(paths.model)
    return run


@dataclass
class RunInfo:
    """What a prediction run knows about its model, from the training run's records."""

    model_path: Path
    model_sha256: str
    temperature: float = 1.0
    ood_threshold: float | None = None
    """The energy score's threshold (flags below it where there is no feature guard)."""
    crop_to_brain: bool = False
    warnings: tuple[str, ...] = ()
    gate: Any = None
    """The OOD input gate (``ood.gate.GateBounds``), or None: the run recorded none."""
    guard: Any = None
    """The OOD feature guard (``ood.features.FeatureGuard`` from ood.npz), or None."""


def run_info(
    model_path: Path, run_dir: Path | None, *, crop_to_brain: bool | None = None
) -> RunInfo:
    """The model's hash, and the temperature, OOD guard and preprocessing (whether images are
    cropped to the head) of the run that trained it.

    A model whose hash differs from the one its run recorded gets a warning: the calibration
    and threshold then belong to another model. A missing or stale ood.npz gets one warning
    line, and predictions are flagged by the gate and the energy score alone.

    Args:
        model_path: the model file.
        run_dir: the run's report folder (run.json, metrics.json, ood.npz), or None for a model
            without.
        crop_to_brain: crop scans to the head; None = as the run recorded (``model.crop_to_brain``
            in run.json), False without a run record.
    """
    from brainmri.ood import features, gate

    digest = file_sha256(model_path)
    info = RunInfo(Path(model_path), digest, crop_to_brain=bool(crop_to_brain))
    if run_dir is None:
        return info
    warnings = []
    run_json, metrics = Path(run_dir) / "run.json", Path(run_dir) / "metrics.json"
    run = read_json(run_json) if run_json.is_file() else {}
    if not run and crop_to_brain is None:
        warnings.append(
            f"{run_json}: no training record; the scans are prepared without the crop to the "
            "head (pass --crop-to-brain if the model was trained with it)"
        )
    recorded = run.get("model_sha256")
    if crop_to_brain is None:
        info.crop_to_brain = crop_to_brain_of(run_dir)
    if recorded and recorded != digest:
        warnings.append(
            f"{model_path}: SHA-256 {digest[:12]}... differs from the {recorded[:12]}... that "
            f"{run_json} recorded: the calibration and OOD threshold may not fit this model"
        )
    ood: dict[str, Any] = {}
    if metrics.is_file():
        evaluate = read_json(metrics).get("evaluate", {})
        info.temperature = float(evaluate.get("temperature") or 1.0)
        ood = evaluate.get("ood") or {}
        info.ood_threshold = ood.get("threshold")
    if (ood.get("guard") or {}).get("gate"):
        info.gate = gate.GateBounds.from_json(ood["guard"]["gate"])
    try:
        info.guard = features.load_guard(Path(run_dir) / "ood.npz", model_sha256=digest)
    except features.GuardUnavailable as exc:
        layers = "the input gate and the energy score" if info.gate else "the energy score"
        warnings.append(f"{exc}; out-of-distribution flags use {layers} only")
    info.warnings = tuple(warnings)
    return info
