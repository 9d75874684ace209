"""The phases of a run (head warm-up, fine-tuning, lesion-guided fine-tuning), their callbacks,
the kept model and its history; `train_or_resume` is the entry point of 03_train."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import pandas as pd
import tensorflow as tf

from brainmri import devices, guidance
from brainmri.io import DiskFull, file_sha256, fsync_path, is_disk_full
from brainmri.model import set_trainable
from brainmri.training.loop import EpochTimer, compile_model, run_epochs
from brainmri.training.state import COMPLETE, STATUS_MESSAGES, prepare_state


def read_history(path: Path) -> pd.DataFrame:
    """Read history.csv, keeping the last row of any epoch a resumed run recorded twice."""
    if not Path(path).is_file() or Path(path).stat().st_size == 0:
        return pd.DataFrame()
    df = pd.read_csv(path)
    if df.empty:
        return df
    return df.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def _callbacks(
    phase: str,
    params: Mapping[str, Any],
    model_path: Path,
    history_path: Path,
    state_dir: Path,
) -> list[keras.callbacks.Callback]:
    """The reference callbacks plus BackupAndRestore and the CSV history of one phase.

    The checkpoint of the guided phase competes only with guided epochs: its model is the best
    guided epoch even where an unguided one scored higher on validation.
    """
    history = read_history(history_path)
    if phase == "guide":  # none before the phase's first epoch; its own after a resume
        history = history[history["lesion_guidance"] > 0] if "lesion_guidance" in history else []
    best = float(history["val_accuracy"].max()) if len(history) else None
    return [
        EpochTimer(),
        keras.callbacks.BackupAndRestore(str(state_dir / f"backup-{phase}")),
        AtomicModelCheckpoint(
            str(model_path),
            monitor="val_accuracy",
            mode="max",
            save_best_only=True,
            initial_value_threshold=best,
        ),
        keras.callbacks.EarlyStopping(
            monitor="val_accuracy",
            mode="max",
            patience=params["early_stopping_patience"],
            restore_best_weights=True,
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss",
            factor=params["reduce_lr_factor"],
            patience=params["reduce_lr_patience"],
            min_lr=1e-7,
        ),
        keras.callbacks.CSVLogger(str(history_path), append=True),
    ]


def fit(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    params: Mapping[str, Any],
    *,
    model_path: Path,
    history_path: Path,
    state_dir: Path,
    unguided_path: Path | None = None,
) -> pd.DataFrame:
    """Train (optional head warm-up, fine-tuning, optional guided phase), resuming after a kill.

    The phases: ``warmup_epochs`` head-only epochs on the frozen backbone; up to ``epochs`` epochs
    with the ``trainable`` policy; with ``lesion_guidance`` > 0, up to ``guidance_epochs`` more
    at ``guidance_learning_rate`` with the lesion-guidance penalty (:func:`guided_phase`),
    starting from the best fine-tuned weights and keeping the best guided epoch; with
    ``guidance_distillation`` > 0 the guided loss also keeps the predictions close to those
    fine-tuned weights' (:func:`brainmri.guidance.distillation`). Guiding only
    after the model has learnt the classes is what worked on the real data: guided from the
    first fine-tuning epoch, the penalty pulled the validation accuracy down to 0.77.

    The same loop runs on one device and under any tf.distribute strategy (:func:`run_epochs`);
    the strategy is the one the model was built in. On a cluster, only the chief writes
    ``model_path`` and ``history_path``; every other worker writes its checkpoints into its
    own folder of ``state_dir`` (they must all save: saving reads variables collectively).

    Args:
        model: the model to train (it is compiled here), built in its strategy's scope.
        train_ds: batches of (images, one-hot labels), augmented and shuffled, of the global
            batch size; with ``lesion_guidance`` on, (images, labels, masks).
        val_ds: validation batches; the best epoch by validation accuracy is kept (the best
            guided one when there is a guided phase).
        params: the run, model and train parameters.
        model_path: where the best model is saved (ModelCheckpoint).
        history_path: the CSV history, appended to across resumed runs.
        state_dir: BackupAndRestore state of the phases, so a killed run resumes.
        unguided_path: with a guided phase, where the fine-tuned model it starts from is saved
            (the unguided model of the same run, for a paired comparison on the same test
            images); a stale file there is removed when no guided phase runs.

    Returns:
        The history, one row per epoch.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    model_path, history_path = worker_outputs(model_path, history_path, state_dir)
    if model.distribute_strategy.num_replicas_in_sync > 1:
        devices.synchronize_batch_norm(model)  # one model, however the batch is split
    warmup = int(params["warmup_epochs"])
    guide = int(params["guidance_epochs"]) if params["lesion_guidance"] > 0 else 0
    # a finished phase's weights: where a killed run resumes from the next phase
    done = {name: state_dir / f"{name}.weights.h5" for name in ("warmup", "main")}

    def phase(name: str, learning_rate: float, first: int, last: int) -> None:
        if done[name].is_file():
            print(f"{name} phase already finished: loading {done[name].name}")
            model.load_weights(done[name])
            return
        _run_phase(
            model,
            train_ds,
            val_ds,
            params,
            learning_rate=learning_rate,
            first=first,
            last=last,
            callbacks=_callbacks(name, params, model_path, history_path, state_dir),
            guidance_columns=guide > 0,
        )

    if warmup > 0:
        set_trainable(model, "freeze")
        phase("warmup", params["warmup_learning_rate"], 0, warmup)
        model.save_weights(done["warmup"])
    set_trainable(model, params["trainable"], params["finetune_top_n"])
    phase("main", params["learning_rate"], warmup, warmup + int(params["epochs"]))
    if guide:
        model.save_weights(done["main"])  # the best fine-tuned weights (EarlyStopping restored)
        if unguided_path is not None and devices.is_chief():
            save_model_atomically(model, Path(unguided_path))
        # numbered on from the epochs that ran (early stopping may have ended the main phase);
        # the distillation's teacher is made from those weights, also after a resume
        guided_phase(
            model,
            train_ds,
            val_ds,
            params,
            first_epoch=len(read_history(history_path)),
            callbacks=_callbacks("guide", params, model_path, history_path, state_dir),
        )
    elif unguided_path is not None:
        Path(unguided_path).unlink(missing_ok=True)  # not this run's: never compared with it
    # Finished: the phases' weights are no longer resume points, and a rerun of the stage with
    # the same parameters and data can reuse the result instead of training again.
    for path in done.values():
        path.unlink(missing_ok=True)
    # The finished state names the model it produced, so a model file changed since (truncated,
    # replaced) is never taken for the result of this training.
    (state_dir / COMPLETE).write_text(file_sha256(model_path) + "\n")
    return read_history(history_path)


def guided_phase(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    params: Mapping[str, Any],
    *,
    first_epoch: int = 0,
    callbacks: list[keras.callbacks.Callback] | None = None,
    teacher: keras.Model | None = None,
) -> None:
    """Fine-tune with the lesion-guidance penalty: the guided phase of :func:`fit`.

    Compiles ``model`` at ``guidance_learning_rate`` and trains it for ``guidance_epochs`` epochs
    with :mod:`brainmri.guidance`'s penalty of weight ``lesion_guidance`` (its mask grown by
    ``guidance_margin``, its cells counted by ``guidance_cells``) and, with
    ``guidance_distillation`` > 0, the distillation towards ``teacher``
    (:func:`brainmri.guidance.distillation`). Every epoch logs the columns "lesion_guidance" and
    "lesion_outside" besides the loss and accuracy. :func:`fit` passes its checkpoint, early
    stopping, learning-rate schedule, CSV history and BackupAndRestore; a study may pass its
    own callbacks (e.g. one that scores Grad-CAM after each epoch).

    Args:
        model: the model to guide, usually one that has learnt the classes, built in its
            strategy's scope; its trainable layers are the caller's choice
            (:func:`brainmri.model.set_trainable`). It is compiled here.
        train_ds: batches of (images, one-hot labels, lesion masks)
            (:func:`brainmri.inputs.make_dataset` with ``masks``).
        val_ds: validation batches of (images, one-hot labels).
        params: the run, model and train parameters (``lesion_guidance`` > 0,
            ``guidance_epochs``, ``guidance_learning_rate``, ``guidance_margin``, ``image_size``,
            ``guidance_cells``, ``guidance_distillation``, ``label_smoothing``, ``jit_compile``).
        first_epoch: the 0-based number of the phase's first epoch (in :func:`fit`, the epochs
            already in the history); a backup found by BackupAndRestore wins.
        callbacks: the phase's Keras callbacks (none by default).
        teacher: the logits model the distillation keeps the predictions close to; None with
            ``guidance_distillation`` > 0 makes it here, a frozen copy of ``model`` as the phase
            starts (:func:`brainmri.guidance.frozen_teacher`). Unused without distillation.

    Raises:
        ValueError: ``lesion_guidance`` is not > 0.
    """
    weight = params["lesion_guidance"]
    if not weight > 0:
        raise ValueError(f"guided phase: lesion_guidance must be > 0, got {weight}")
    distillation = params["guidance_distillation"]
    if distillation > 0 and teacher is None:
        with model.distribute_strategy.scope():
            teacher = guidance.frozen_teacher(model)
    _run_phase(
        model,
        train_ds,
        val_ds,
        params,
        learning_rate=params["guidance_learning_rate"],
        first=first_epoch,
        last=first_epoch + int(params["guidance_epochs"]),
        callbacks=list(callbacks or []),
        lesion_guidance=weight,
        guidance_columns=True,
        teacher=teacher if distillation > 0 else None,
    )


def _run_phase(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    params: Mapping[str, Any],
    *,
    learning_rate: float,
    first: int,
    last: int,
    callbacks: list[keras.callbacks.Callback],
    lesion_guidance: float = 0.0,
    guidance_columns: bool = False,
    teacher: keras.Model | None = None,
) -> None:
    """Compile ``model`` at ``learning_rate`` and run epochs ``first .. last - 1``
    (:func:`run_epochs`), distilling towards ``teacher`` when one is given."""
    smoothing = params["label_smoothing"]
    with model.distribute_strategy.scope():
        compile_model(model, learning_rate, smoothing, params["jit_compile"])
    run_epochs(
        model,
        train_ds,
        val_ds,
        initial_epoch=first,
        epochs=last,
        callbacks=callbacks,
        label_smoothing=smoothing,
        jit_compile=bool(model.jit_compile),  # "auto" resolved by Keras' compile
        lesion_guidance=lesion_guidance,
        guidance_margin=guidance_margin_pixels(params),
        guidance_cells=params["guidance_cells"],
        guidance_columns=guidance_columns,
        teacher=teacher,
        distillation=params["guidance_distillation"] if teacher is not None else 0.0,
    )


def save_model_atomically(model: keras.Model, path: Path) -> Path:
    """Save a model beside ``path``, flush it to the disk and rename it into place: a crash or a
    full disk leaves the earlier file whole, never a truncated zip.

    Args:
        model: the model to save.
        path: the published ``.keras`` file.

    Returns:
        The path written.

    Raises:
        OSError: the save failed (``path`` is then as it was, and no partial file is left).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        model.save(partial)
        # without the fsync a crash after the rename can leave a renamed but empty file
        fsync_path(partial)
        os.replace(partial, path)
        fsync_path(path.parent)  # the rename itself
    finally:
        partial.unlink(missing_ok=True)
    return path


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' ModelCheckpoint, publishing through :func:`save_model_atomically`.

    Keras writes the checkpoint in place, so a full disk left a truncated ``model.keras``
    where the best earlier epoch had been. Here the earlier file stays until the new one is
    complete; on a full disk the best score is set back (the file still holds the earlier
    epoch) and :class:`brainmri.io.DiskFull` says what was kept.
    """

    def _save_model(self, epoch, batch, logs):  # noqa: D102 - Keras' hook
        filepath = Path(self._get_file_path(epoch, batch, logs))
        before = self.best
        if not self._should_save_model(epoch, batch, logs, str(filepath)):
            return
        try:
            if self.save_weights_only:
                self.model.save_weights(filepath, overwrite=True)
            else:
                save_model_atomically(self.model, filepath)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            self.best = before
            raise DiskFull(
                f"{filepath}: no space left on device while saving epoch {epoch + 1}; "
                f"{self.kept()}; free space and rerun to resume"
            ) from None

    def kept(self) -> str:
        """What the published file holds now, in words (for a message after a failure)."""
        path = Path(self.filepath)
        if not path.is_file():
            return f"no earlier {path.name} to keep"
        score = "" if self.best is None else f", {self.monitor} {float(self.best):.4f}"
        return f"kept the earlier {path} whole (the best epoch so far{score})"


def guidance_margin_pixels(params: Mapping[str, Any]) -> int:
    """``train.guidance_margin`` (a fraction of the image side) in pixels of the model's input."""
    return round(params["guidance_margin"] * params["image_size"])


def worker_outputs(model_path: Path, history_path: Path, state_dir: Path) -> tuple[Path, Path]:
    """Where this process writes the model and history: the given paths on the chief (and
    without a cluster), a folder of its own under ``state_dir`` on any other worker.

    Returns:
        ``(model_path, history_path)`` of this process.
    """
    if devices.is_chief():
        return Path(model_path), Path(history_path)
    own = Path(state_dir) / devices.task_name()
    own.mkdir(parents=True, exist_ok=True)
    return own / Path(model_path).name, own / Path(history_path).name


def had_guided_phase(history: pd.DataFrame) -> bool:
    """True when the history holds epochs of a guided phase (``lesion_guidance`` above 0)."""
    return "lesion_guidance" in history and bool((history["lesion_guidance"] > 0).any())


def guided_epochs(history: pd.DataFrame) -> pd.DataFrame:
    """The epochs of the guided phase when the run had one, else every epoch: the epochs the
    kept model was chosen from."""
    return history[history["lesion_guidance"] > 0] if had_guided_phase(history) else history


def best_epoch(history: pd.DataFrame) -> dict[str, Any]:
    """The epoch of the kept model (the highest validation accuracy, among the guided epochs
    when the run had a guided phase; 1-based) and its metrics.

    Args:
        history: the training history (:func:`read_history`).

    Returns:
        ``{"epoch", "val_accuracy", "val_loss"}``, or an empty dict before any epoch.
    """
    history = guided_epochs(history)
    if history.empty or "val_accuracy" not in history:
        return {}
    row = history.loc[history["val_accuracy"].idxmax()]
    return {
        "epoch": int(row["epoch"]) + 1,
        "val_accuracy": float(row["val_accuracy"]),
        "val_loss": float(row["val_loss"]),
    }


def train_or_resume(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    cfg: Mapping[str, Any],
    *,
    manifest_sha256: str,
    model_path: Path,
    history_path: Path,
    state_dir: Path,
    unguided_path: Path | None = None,
) -> tuple[keras.Model, pd.DataFrame, str]:
    """Train, resume a killed run, or reuse a finished one.

    Args:
        model: a freshly built model (ignored when the finished run is reused).
        train_ds: training batches.
        val_ds: validation batches.
        cfg: the run, model and train parameters.
        manifest_sha256: hash of the run's manifest; a state of other data is not resumed.
        model_path: where the best model is saved.
        history_path: the CSV history.
        state_dir: the folder holding the training state and its key.
        unguided_path: where a guided run saves its fine-tuned model (see :func:`fit`).

    Returns:
        ``(best model, history, status)`` with status 'complete', 'resume' or 'fresh'.
    """
    from brainmri.model import load_model

    model_path, history_path = worker_outputs(model_path, history_path, state_dir)
    status = prepare_state(
        state_dir,
        cfg,
        manifest_sha256=manifest_sha256,
        model_path=model_path,
        history_path=history_path,
    )
    print(STATUS_MESSAGES[status], flush=True)
    if status != "complete":
        fit(
            model,
            train_ds,
            val_ds,
            cfg,
            model_path=model_path,
            history_path=history_path,
            state_dir=state_dir,
            unguided_path=unguided_path,
        )
    return load_model(model_path), read_history(history_path), status
