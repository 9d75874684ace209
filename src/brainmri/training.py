"""Training: seeding, compile, callbacks, resumable two-phase fit, history and run metadata."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from brainmri import devices, guidance
from brainmri.model import set_trainable

COMPLETE = "complete"
STATUS_MESSAGES = {
    "fresh": "starting a new training run",
    "resume": "resuming the interrupted training run from its last finished epoch",
    "complete": "training already finished for these parameters, data and code: reusing model.keras",
}
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


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and TensorFlow; optionally make TF ops deterministic.

    Args:
        seed: the seed of every generator.
        deterministic: also enable TensorFlow's op determinism (slower; needed for
            bit-identical reruns on the CPU).
    """
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def compile_model(
    model: keras.Model, learning_rate: float, label_smoothing: float, jit_compile: str = "auto"
) -> None:
    """Compile with Adam and categorical cross-entropy on the softmax output.

    Args:
        model: the model to compile.
        learning_rate: Adam's learning rate.
        label_smoothing: the cross-entropy's label smoothing.
        jit_compile: "auto" (Keras: XLA where the model allows it), "always" or "never".
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
        jit_compile={"auto": "auto", "always": True, "never": False}[jit_compile],
    )


class EpochTimer(keras.callbacks.Callback):
    """Adds each epoch's wall time and learning rate to the logs (so CSVLogger records them)."""

    def on_epoch_begin(self, epoch, logs=None):  # noqa: D102
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):  # noqa: D102
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )


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
        keras.callbacks.ModelCheckpoint(
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


class _Steps:
    """The compiled training and validation steps of one phase, for any tf.distribute strategy.

    Why not ``model.fit``: under MultiWorkerMirroredStrategy, Keras 3.15's fit fails
    ("unsupported type PerReplica", keras-team/keras#20585), and two training paths, fit for
    one machine and a custom step for clusters, would drift apart. This is the step of the
    TensorFlow guide "Custom training with tf.distribute.Strategy": ``strategy.run`` of a
    GradientTape step per replica, the loss averaged over the *global* batch
    (``tf.nn.compute_average_loss``) so that the all-reduced gradients are those of one big
    batch, and the sums of loss, correct predictions and images reduced across replicas, so
    every worker sees the same epoch metrics and the callbacks decide the same on all of them.
    """

    def __init__(
        self,
        model: keras.Model,
        label_smoothing: float,
        jit_compile: bool,
        lesion_guidance: float = 0.0,
        guidance_margin: int = 0,
        guidance_cells: str = "area",
        teacher: keras.Model | None = None,
        distillation: float = 0.0,
    ) -> None:
        self.model = model
        self.strategy = model.distribute_strategy
        if not model.optimizer.built:
            # Create the optimizer's slots now, in the strategy's scope, as model.fit does before
            # its first step. Left to the first apply_gradients, they are created inside the
            # replicated step, which MirroredStrategy cannot run ("You must feed a value for
            # placeholder tensor"; found by the two-logical-CPU test).
            with self.strategy.scope():
                model.optimizer.build(model.trainable_variables)
        self.loss = keras.losses.CategoricalCrossentropy(
            label_smoothing=label_smoothing, reduction=None
        )
        guided = lesion_guidance > 0
        distil = distillation > 0
        if distil and teacher is None:
            raise ValueError(f"distillation = {distillation} needs a teacher model, got None")
        if distil and not guided:
            raise ValueError(
                "distillation towards a teacher is part of the guided phase: it needs "
                f"lesion_guidance > 0, got {lesion_guidance}"
            )
        if guided:  # the same layers, cut where Grad-CAM reads them (brainmri.guidance)
            features, head = guidance.split_at_feature_map(model)

        def train_one(images, labels, masks=None):
            if guided and masks is None:  # checked once, while tracing
                raise ValueError(
                    "train.lesion_guidance > 0: the training batches must carry the lesion "
                    "masks, (images, labels, masks) as inputs.make_dataset(masks=...) gives them"
                )
            with tf.GradientTape() as tape:
                if guided:
                    fmap = features(images, training=True)
                    logits, probs = head(fmap, training=True)
                    shares = guidance.outside_share(
                        head, fmap, labels, masks, margin=guidance_margin, cells=guidance_cells
                    )
                else:
                    probs = model(images, training=True)
                per_image = self.loss(labels, probs)
                loss = tf.nn.compute_average_loss(per_image)
                if guided:
                    # the mean over the global batch's masked images: all-reduced, so every
                    # replica scales its share of the penalty by the same count
                    masked = tf.reduce_sum(
                        tf.cast(tf.reduce_max(masks, axis=(1, 2, 3)) > 0, tf.float32)
                    )
                    masked = tf.distribute.get_replica_context().all_reduce("sum", masked)
                    loss += lesion_guidance * tf.reduce_sum(shares) / tf.maximum(masked, 1.0)
                if distil:  # what the fine-tuned model predicted (brainmri.guidance.distillation)
                    kept = guidance.distillation(teacher(images, training=False), logits)
                    loss += distillation * tf.nn.compute_average_loss(kept)
                if model.losses:  # the compact CNN's activity penalty
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
                # mixed_float16: scale the loss so small float16 gradients do not vanish
                scaled = model.optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            sums = self._sums(per_image, labels, probs)
            if guided:
                has = tf.cast(tf.reduce_max(masks, axis=(1, 2, 3)) > 0, tf.float32)
                sums += (tf.reduce_sum(shares), tf.reduce_sum(has))
            return sums

        def eval_one(images, labels, masks=None):
            probs = model(images, training=False)
            return self._sums(self.loss(labels, probs), labels, probs)

        # Keras compiles the per-replica step with XLA in the same way (jit_compile=True).
        train_one = tf.function(train_one, jit_compile=jit_compile, reduce_retracing=True)
        eval_one = tf.function(eval_one, jit_compile=jit_compile, reduce_retracing=True)
        self.train_step = tf.function(lambda batch: self._reduce(train_one, batch))
        self.eval_step = tf.function(lambda batch: self._reduce(eval_one, batch))

    @staticmethod
    def _sums(per_image, labels, probs):
        correct = tf.cast(tf.equal(tf.argmax(probs, -1), tf.argmax(labels, -1)), tf.float32)
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return tf.reduce_sum(tf.cast(per_image, tf.float32)), tf.reduce_sum(correct), count

    def _reduce(self, step, batch):
        sums = self.strategy.run(step, args=batch)
        return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]

    def run_epoch(self, dataset, step) -> dict[str, float]:
        """Run a step over every batch; return the epoch's mean loss and accuracy."""
        totals = np.zeros(5)
        for batch in dataset:
            sums = [float(s) for s in step(batch)]
            totals[: len(sums)] += sums
        loss, correct, count, outside, masked = totals
        count = max(count, 1.0)
        logs = {"accuracy": correct / count, "loss": loss / count}
        if masked:  # guided training: the mean share of Grad-CAM energy outside the lesions
            logs["lesion_outside"] = outside / masked
        return logs


def run_epochs(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    *,
    initial_epoch: int,
    epochs: int,
    callbacks: list[keras.callbacks.Callback],
    label_smoothing: float,
    jit_compile: bool,
    lesion_guidance: float = 0.0,
    guidance_margin: int = 0,
    guidance_cells: str = "area",
    guidance_columns: bool = False,
    teacher: keras.Model | None = None,
    distillation: float = 0.0,
) -> None:
    """Train a compiled model for epochs ``initial_epoch .. epochs - 1``, driving the callbacks.

    The callbacks see what ``model.fit`` gives them (``on_train_begin``, ``on_epoch_begin``,
    ``on_epoch_end`` with loss, accuracy, val_loss and val_accuracy, ``on_train_end``), so
    ModelCheckpoint, EarlyStopping, ReduceLROnPlateau, CSVLogger and BackupAndRestore work
    unchanged, resume included. One line per epoch is printed.

    Args:
        model: a model built and compiled (for its optimizer) in its strategy's scope.
        train_ds: batches of the global batch size (per-replica batch x replicas).
        val_ds: validation batches, the same batch size.
        initial_epoch: the first epoch (0-based); a backup found by BackupAndRestore wins.
        epochs: the epoch to stop before.
        callbacks: the phase's callbacks.
        label_smoothing: the cross-entropy's label smoothing.
        jit_compile: XLA-compile the per-replica steps.
        lesion_guidance: the weight of :mod:`brainmri.guidance`'s penalty (0 = off); when on,
            train_ds yields (images, labels, masks).
        guidance_margin: pixels by which the penalty grows each mask
            (:func:`brainmri.guidance.outside_share`).
        guidance_cells: how a Grad-CAM cell counts as on the lesion ("area" or "centre",
            :func:`brainmri.guidance.outside_share`).
        guidance_columns: log "lesion_guidance" (the weight) and "lesion_outside" (the mean
            share of Grad-CAM energy outside the training lesions, NaN when unguided) every
            epoch, so every phase of a guided run writes the same history columns.
        teacher: a model giving the logits the guided model is kept close to
            (:func:`brainmri.guidance.frozen_teacher` of the model the phase started from).
        distillation: the weight of :func:`brainmri.guidance.distillation` towards ``teacher``
            (0 = off); only in a guided phase.
    """
    steps = _Steps(
        model,
        label_smoothing,
        jit_compile,
        lesion_guidance,
        guidance_margin,
        guidance_cells,
        teacher,
        distillation,
    )
    strategy = steps.strategy
    train_dist = devices.distribute_dataset(strategy, train_ds)
    val_dist = devices.distribute_dataset(strategy, val_ds)
    callback_list = keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs)
    model.stop_training = False
    callback_list.on_train_begin()
    # BackupAndRestore sets the epoch to resume from, as model.fit reads it
    initial_epoch = getattr(model, "_initial_epoch", None) or initial_epoch
    logs: dict[str, float] = {}
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        start = time.perf_counter()
        logs = steps.run_epoch(train_dist, steps.train_step)
        if guidance_columns:
            logs = {"lesion_guidance": lesion_guidance, "lesion_outside": np.nan, **logs}
        val = steps.run_epoch(val_dist, steps.eval_step)
        logs.update({f"val_{k}": v for k, v in val.items()})
        callback_list.on_epoch_end(epoch, logs)
        print(
            f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - start:.0f}s - "
            + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items() if k != "epoch_seconds"),
            flush=True,
        )
        if model.stop_training:
            break
    callback_list.on_train_end(logs)


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
    at ``guidance_learning_rate`` with the lesion-guidance penalty (:mod:`brainmri.guidance`),
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
    smoothing = params["label_smoothing"]

    def phase(
        name: str, learning_rate: float, first: int, last: int, weight: float, teacher=None
    ) -> None:
        if done.get(name, Path("/nonexistent")).is_file():
            print(f"{name} phase already finished: loading {done[name].name}")
            model.load_weights(done[name])
            return
        with model.distribute_strategy.scope():
            compile_model(model, learning_rate, smoothing, params["jit_compile"])
        run_epochs(
            model,
            train_ds,
            val_ds,
            initial_epoch=first,
            epochs=last,
            callbacks=_callbacks(name, params, model_path, history_path, state_dir),
            label_smoothing=smoothing,
            jit_compile=bool(model.jit_compile),  # "auto" resolved by Keras' compile
            lesion_guidance=weight,
            guidance_margin=guidance_margin_pixels(params),
            guidance_cells=params["guidance_cells"],
            guidance_columns=guide > 0,
            teacher=teacher,
            distillation=params["guidance_distillation"] if teacher is not None else 0.0,
        )

    if warmup > 0:
        set_trainable(model, "freeze")
        phase("warmup", params["warmup_learning_rate"], 0, warmup, 0.0)
        model.save_weights(done["warmup"])
    set_trainable(model, params["trainable"], params["finetune_top_n"])
    last = warmup + int(params["epochs"])
    phase("main", params["learning_rate"], warmup, last, 0.0)
    if guide:
        model.save_weights(done["main"])  # the best fine-tuned weights (EarlyStopping restored)
        if unguided_path is not None and devices.is_chief():
            save_model_atomically(model, Path(unguided_path))
        teacher = None
        if params["guidance_distillation"] > 0:  # those weights, also after a resume
            with model.distribute_strategy.scope():
                teacher = guidance.frozen_teacher(model)
        # numbered on from the epochs that ran (early stopping may have ended the main phase)
        first = len(read_history(history_path))
        phase(
            "guide",
            params["guidance_learning_rate"],
            first,
            first + guide,
            params["lesion_guidance"],
            teacher,
        )
    elif unguided_path is not None:
        Path(unguided_path).unlink(missing_ok=True)  # not this run's: never compared with it
    # Finished: the phases' weights are no longer resume points, and a rerun of the stage with
    # the same parameters and data can reuse the result instead of training again.
    for path in done.values():
        path.unlink(missing_ok=True)
    # The finished state names the model it produced, so a model file changed since (truncated,
    # replaced) is never taken for the result of this training.
    (state_dir / COMPLETE).write_text(_file_sha256(model_path) + "\n")
    return read_history(history_path)


def save_model_atomically(model: keras.Model, path: Path) -> Path:
    """Save a model beside ``path`` and rename it into place: a crash or a full disk leaves the
    earlier file whole, never a truncated zip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        model.save(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


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


def has_resumable_state(state_dir: Path) -> bool:
    """True when a killed run left a backup or a finished warm-up to resume from."""
    state_dir = Path(state_dir)
    return any(state_dir.glob("backup-*")) or (state_dir / "warmup.weights.h5").is_file()


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


def guided_epochs(history: pd.DataFrame) -> pd.DataFrame:
    """The epochs of the guided phase when the run had one, else every epoch: the epochs the
    kept model was chosen from."""
    if "lesion_guidance" in history and (history["lesion_guidance"] > 0).any():
        return history[history["lesion_guidance"] > 0]
    return history


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


def training_code_files() -> list[Path]:
    """The source files whose code decides what training computes (decoding, model, training).

    Returns:
        The .py files of ``data`` (every module of the package), ``inputs``, ``model``,
        ``guidance`` (the guided phase's penalty) and ``training``.
    """
    from brainmri import data, inputs, model

    files = []
    for m in (data, inputs, model, guidance, sys.modules[__name__]):
        file = Path(m.__file__)
        # a package's __init__.py holds none of its code: every module of it counts
        files += sorted(file.parent.rglob("*.py")) if hasattr(m, "__path__") else [file]
    return files


def state_key(cfg: Mapping[str, Any], manifest_sha256: str) -> str:
    """What a training state belongs to: the parameters, the exact data and the training code."""
    src = Path(__file__).parent
    code = {
        f.relative_to(src).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in training_code_files()
    }
    payload = json.dumps(
        {"params": dict(cfg), "manifest": manifest_sha256, "code": code}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
        if done.read_text().strip() == _file_sha256(model_path):
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
