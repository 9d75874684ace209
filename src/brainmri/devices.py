"""Devices: the tf.distribute strategy of a run and its numeric precision policy.

Training goes through one loop for every strategy (:func:`brainmri.training.fit`); this module
only decides *where* it runs:

- ``none``: TensorFlow's default strategy (one device, the CPU or the first GPU);
- ``mirrored``: :class:`tf.distribute.MirroredStrategy` over every local GPU;
- ``multi_worker``: :class:`tf.distribute.MultiWorkerMirroredStrategy`, the cluster read from the
  ``TF_CONFIG`` environment variable, which each machine sets for itself (its own address list
  and ``task.index``).

The batch size of the parameters is per replica: a batch of the input pipeline holds
``batch_size * replicas`` images (the global batch), which the strategy splits.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from brainmri.config import PRECISIONS, STRATEGIES

if TYPE_CHECKING:
    import tensorflow as tf

# TensorFlow and Keras are imported inside the functions that use them: the pipeline runner
# asks is_chief() before any notebook runs, and should not pay TensorFlow's start-up for it.


class DistributeError(RuntimeError):
    """The configured strategy cannot run here (no TF_CONFIG, a malformed cluster, no GPU)."""


def cluster_spec(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The multi-worker cluster described by TF_CONFIG, checked.

    Args:
        env: the environment to read (default: ``os.environ``).

    Returns:
        The parsed TF_CONFIG: ``{"cluster": {"worker": [...], ...}, "task": {"type", "index"}}``.

    Raises:
        DistributeError: TF_CONFIG is missing, not JSON, or names no worker list or task.
    """
    env = os.environ if env is None else env
    text = env.get("TF_CONFIG", "")
    example = (
        'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\''
    )
    if not text.strip():
        raise DistributeError(
            "train.distribute = multi_worker needs the cluster in the TF_CONFIG environment "
            f"variable on every machine, e.g. {example} (index 1 on the second machine)"
        )
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DistributeError(
            f"TF_CONFIG is not valid JSON ({exc}); expected e.g. {example}"
        ) from exc
    workers = spec.get("cluster", {}).get("worker") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(workers, list) or not workers or not isinstance(task, dict):
        raise DistributeError(
            f"TF_CONFIG must name cluster.worker (a list of host:port) and task; got {text!r}"
        )
    members = spec["cluster"].get(task.get("type"), [])
    if not isinstance(task.get("index"), int) or not 0 <= task["index"] < len(members):
        raise DistributeError(
            f"TF_CONFIG task {task!r} is not a member of the cluster {spec['cluster']!r}"
        )
    return spec


def is_chief(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process writes the results: always, except on non-chief cluster workers.

    TensorFlow's rule: the task of type "chief", or worker 0 when the cluster has no chief.
    Without TF_CONFIG every process is its own chief.

    Args:
        env: the environment to read (default: ``os.environ``).
    """
    env = os.environ if env is None else env
    if not env.get("TF_CONFIG", "").strip():
        return True
    spec = cluster_spec(env)
    task = spec["task"]
    if "chief" in spec["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def task_name(env: Mapping[str, str] | None = None) -> str:
    """This process's cluster role as "worker-1", or "local" without TF_CONFIG."""
    env = os.environ if env is None else env
    if not env.get("TF_CONFIG", "").strip():
        return "local"
    task = cluster_spec(env)["task"]
    return f"{task['type']}-{task['index']}"


def make_strategy(kind: str, *, mirror_over: Sequence[str] | None = None) -> tf.distribute.Strategy:
    """The tf.distribute strategy for the ``train.distribute`` setting.

    Create it before any other TensorFlow work of the process (MultiWorkerMirroredStrategy
    must be created first) and build and compile the model inside ``strategy.scope()``.

    Args:
        kind: "none", "mirrored" or "multi_worker".
        mirror_over: for "mirrored", the devices to mirror over instead of every local GPU
            (e.g. two logical CPUs, as the tests do to run the mirrored path without a GPU).

    Returns:
        The strategy; ``strategy.num_replicas_in_sync`` is the number of replicas in the
        cluster.

    Raises:
        DistributeError: "mirrored" without a GPU, or "multi_worker" without a valid TF_CONFIG.
        ValueError: an unknown kind.
    """
    import tensorflow as tf

    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        if mirror_over:
            return tf.distribute.MirroredStrategy(list(mirror_over))
        if not tf.config.list_physical_devices("GPU"):
            raise DistributeError(
                "train.distribute = mirrored splits batches over the local GPUs, and TensorFlow "
                "sees none here; use distribute: none on a CPU-only machine"
            )
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        cluster_spec()  # a clear error before TensorFlow's own
        # RING all-reduce runs on CPUs and GPUs alike; NCCL would need GPUs on every worker.
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    raise ValueError(f"train.distribute = {kind!r}: expected one of {STRATEGIES}")


def distribute_dataset(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset):
    """The dataset split over the strategy's replicas (each worker reads its share of batches).

    The pipeline decodes files inside ``map``, so TensorFlow cannot shard by file; sharding by
    data (every worker keeps its share of each global batch) is set explicitly instead of
    letting AUTO fall back to it with a warning.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def synchronize_batch_norm(model) -> int:
    """Make the model's batch-norm layers use the statistics of the global batch.

    Keras 3's BatchNormalization normalises each replica's share of a batch with that share's
    own mean and variance unless ``synchronized=True``; each worker then also keeps its own
    moving statistics, so the workers of one cluster end up with different models (the
    two-worker test found this: equal weights, moving means apart by 1e-2). Synchronised, the
    model trained on N replicas is the one trained on one device with the global batch. The
    cost is one all-reduce per batch-norm layer and step.

    Args:
        model: a Keras model; layers that run in inference mode (frozen) are unaffected.

    Returns:
        The number of batch-norm layers changed.
    """
    import keras

    def nested(layer):  # every layer inside, through nested models (their public .layers)
        for inner in getattr(layer, "layers", ()):
            yield inner
            yield from nested(inner)

    layers = [
        layer
        for layer in nested(model)
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized
    ]
    for layer in layers:
        layer.synchronized = True
    return len(layers)


def gpu_supports_float16() -> bool:
    """True when every visible GPU has compute capability 7.0 or newer (tensor cores)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return False
    for gpu in gpus:
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability is None or tuple(capability) < (7, 0):
            return False
    return True


def resolve_precision(setting: str, *, float16_gpu: bool | None = None) -> str:
    """The Keras dtype policy for ``train.mixed_precision``.

    Args:
        setting: "auto" (mixed_float16 where the GPU computes it fast, float32 otherwise, e.g.
            on every CPU), "float32" or "mixed_float16".
        float16_gpu: whether the GPUs support float16 (default: asked of TensorFlow).

    Returns:
        "float32" or "mixed_float16".
    """
    if setting not in PRECISIONS:
        raise ValueError(f"train.mixed_precision = {setting!r}: expected one of {PRECISIONS}")
    if setting != "auto":
        return setting
    float16_gpu = gpu_supports_float16() if float16_gpu is None else float16_gpu
    return "mixed_float16" if float16_gpu else "float32"


def set_precision(setting: str) -> str:
    """Set Keras' global dtype policy for the models built after this call.

    Under mixed_float16 the layers compute in float16 and keep float32 weights; the model's
    logits and softmax stay float32 (see :func:`brainmri.model.build_model`), so Grad-CAM and
    the calibration see the same numbers as before.

    Returns:
        The policy set ("float32" or "mixed_float16").
    """
    import keras

    policy = resolve_precision(setting)
    keras.mixed_precision.set_global_policy(policy)
    return policy


def describe(strategy: tf.distribute.Strategy, policy: str) -> str:
    """One line for the training notebook: strategy, replicas, role and precision."""
    import tensorflow as tf

    name = "no strategy (one device)"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        name = "MultiWorkerMirroredStrategy"  # its class is named CollectiveAllReduceStrategy
    elif isinstance(strategy, tf.distribute.MirroredStrategy):
        name = "MirroredStrategy"
    return (
        f"{name}: {strategy.num_replicas_in_sync} replica(s), task {task_name()}"
        f"{' (chief)' if is_chief() else ''}, dtype policy {policy}"
    )
