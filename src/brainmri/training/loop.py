"""The training loop: seeding, compiling, and the epochs of one phase under any tf.distribute
strategy (a custom step, so that the lesion-guidance penalty and distillation fit in)."""

from __future__ import annotations

import os
import random
import time

import keras
import numpy as np
import tensorflow as tf

from brainmri import devices, guidance
from brainmri.io import DiskFull, is_disk_full


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


class TrainingSteps:
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
    steps = TrainingSteps(
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
    epoch = initial_epoch - 1  # the last finished epoch, for a message when none runs
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        start = time.perf_counter()
        logs = steps.run_epoch(train_dist, steps.train_step)
        if guidance_columns:
            logs = {"lesion_guidance": lesion_guidance, "lesion_outside": np.nan, **logs}
        val = steps.run_epoch(val_dist, steps.eval_step)
        logs.update({f"val_{k}": v for k, v in val.items()})
        _saving(epoch, callbacks, callback_list.on_epoch_end, epoch, logs)
        print(
            f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - start:.0f}s - "
            + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items() if k != "epoch_seconds"),
            flush=True,
        )
        if model.stop_training:
            break
    _saving(epoch, callbacks, callback_list.on_train_end, logs)


def _saving(epoch: int, callbacks: list[keras.callbacks.Callback], step, *args) -> None:
    """Call ``step(*args)`` of the callbacks; a full disk in any of them (the backup, the history, the
    checkpoint) ends in one line saying what the checkpoint kept, not an OSError traceback."""
    try:
        step(*args)
    except DiskFull:
        raise
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        kept = [cb.kept() for cb in callbacks if hasattr(cb, "kept")]
        where = getattr(exc, "filename", None) or "the training state"
        raise DiskFull(
            f"{where}: no space left on device after epoch {epoch + 1}; "
            + "; ".join(kept or ["no checkpoint in this phase"])
            + "; free space and rerun to resume"
        ) from None
