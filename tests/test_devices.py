"""brainmri.distribute: the cluster from TF_CONFIG, the strategy and the dtype policy."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from brainmri import devices
from brainmri import model as mdl
from brainmri.config import load_profile


def _tf_config(index: int, *, chief: bool = False) -> dict[str, str]:
    cluster = {"worker": ["127.0.0.1:20001", "127.0.0.1:20002"]}
    if chief:
        cluster["chief"] = ["127.0.0.1:20000"]
    task = {"type": "chief" if chief and index < 0 else "worker", "index": max(index, 0)}
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})}


def test_without_tf_config_every_process_is_its_own_chief():
    assert devices.is_chief({}) and devices.task_name({}) == "local"


def test_worker_zero_is_chief_unless_the_cluster_names_a_chief():
    assert devices.is_chief(_tf_config(0))
    assert not devices.is_chief(_tf_config(1))
    assert devices.task_name(_tf_config(1)) == "worker-1"
    assert not devices.is_chief(_tf_config(0, chief=True))
    assert devices.is_chief(_tf_config(-1, chief=True))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "needs the cluster in the TF_CONFIG"),
        ("{not json", "not valid JSON"),
        ('{"cluster": {}}', "must name cluster.worker"),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
            "not a member",
        ),
    ],
)
def test_bad_tf_config_gets_a_clear_error(value, expected):
    with pytest.raises(devices.DistributeError, match=expected):
        devices.cluster_spec({"TF_CONFIG": value})


def test_mirrored_without_a_gpu_says_so():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    with pytest.raises(devices.DistributeError, match="sees none here"):
        devices.make_strategy("mirrored")


def test_none_is_the_default_strategy_with_one_replica():
    strategy = devices.make_strategy("none")
    assert strategy.num_replicas_in_sync == 1
    assert "one device" in devices.describe(strategy, "float32")


def test_precision_auto_is_float16_only_on_capable_gpus():
    assert devices.resolve_precision("auto", float16_gpu=False) == "float32"
    assert devices.resolve_precision("auto", float16_gpu=True) == "mixed_float16"
    assert devices.resolve_precision("float32", float16_gpu=True) == "float32"
    assert devices.resolve_precision("mixed_float16", float16_gpu=False) == "mixed_float16"
    with pytest.raises(ValueError, match="mixed_precision"):
        devices.resolve_precision("bfloat8")


def test_precision_auto_resolves_to_float32_on_this_cpu():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    assert devices.resolve_precision("auto") == "float32"


def test_mixed_float16_model_keeps_float32_logits_and_probabilities():
    """Under mixed_float16 the body computes in float16; the logits and softmax stay float32."""
    params = {**load_profile("smoke")["model"], "image_size": 32}
    try:
        assert devices.set_precision("mixed_float16") == "mixed_float16"
        model = mdl.build_model(params)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert conv.compute_dtype == "float16" and conv.variable_dtype == "float32"
    assert model.get_layer(mdl.LOGITS_LAYER).compute_dtype == "float32"
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    probs = model(images)
    logits = mdl.logits_model(model)(images)
    assert keras.backend.standardize_dtype(probs.dtype) == "float32"
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    np.testing.assert_allclose(np.asarray(probs).sum(axis=1), 1.0, rtol=1e-5)


def _free_ports(n: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_loopback_workers_train_one_model(tmp_path, fresh_copy, make_command, edit_param):
    """`make all` on two "machines" (project copies) of one TF_CONFIG cluster on 127.0.0.1.

    Both train the smoke profile for one epoch under MultiWorkerMirroredStrategy; worker 1 runs
    only the stages a worker runs, worker 0 (the chief) writes the model. Synchronous training
    gives both the same weights. Both stop after 03_train (UNTIL): the chief's later stages are
    those of any run, tested everywhere else.
    """
    import subprocess

    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    runs = []
    for index in range(2):
        root = fresh_copy(tmp_path / f"machine{index}")
        edit_param(root, "smoke", "train", "epochs", "1")
        edit_param(root, "smoke", "train", "distribute", "multi_worker")
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        argv, env = make_command("all", "PROFILE=smoke", "UNTIL=03_train")
        env["TF_CONFIG"] = json.dumps(tf_config)
        log = (tmp_path / f"worker{index}.log").open("w")
        process = subprocess.Popen(argv, cwd=root, env=env, stdout=log, stderr=log)
        runs.append((root, process, log))
    try:
        for _, process, _ in runs:
            process.wait(timeout=900)
    finally:
        for _, process, log in runs:
            if process.poll() is None:
                process.kill()
            log.close()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    for (_, process, _), text in zip(runs, logs, strict=True):
        assert process.returncode == 0, text[-3000:]

    chief, other = runs[0][0] / "reports" / "smoke", runs[1][0] / "reports" / "smoke"
    assert "worker-1 of a cluster: running 01_download, 03_train" in logs[1]
    assert (chief / "03_train.ipynb").is_file() and (other / "03_train.ipynb").is_file()
    assert not (other / "02_eda.ipynb").exists()  # a worker's stages: 01 and 03 only
    # Only the chief writes the model the reports use; the other worker kept its own checkpoint.
    assert not (other / "model.keras").exists()
    model = mdl.load_model(chief / "model.keras")
    worker_copy = mdl.load_model(other / ".state" / "train" / "worker-1" / "model.keras")
    for a, b in zip(model.get_weights(), worker_copy.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    images = np.random.default_rng(0).uniform(0, 255, (3, 48, 48, 3)).astype("float32")
    probs = model.predict(images, verbose=0)
    assert probs.shape == (3, 4) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert "MultiWorkerMirroredStrategy: 2 replica(s)" in logs[0]


MIRRORED_SCRIPT = """
import json, sys
from pathlib import Path
import numpy as np
import tensorflow as tf

# Two logical CPUs stand in for two GPUs; they must be set before TensorFlow starts its devices.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from brainmri import devices, inputs, training, model as mdl
from brainmri.config import CLASS_NAMES, load_profile

root, out = Path(sys.argv[1]), Path(sys.argv[2])
p = load_profile("smoke")
cfg = {**p["run"], **p["model"], **p["train"], "dropout": 0.0, "epochs": 2}
files = sorted((root / "Training").glob("*/*.jpg"))
labels = [CLASS_NAMES.index(f.parent.name) for f in files]
weights = {}
for name, strategy in (
    ("none", devices.make_strategy("none")),
    ("mirrored", devices.make_strategy("mirrored", mirror_over=["/cpu:0", "/cpu:1"])),
):
    training.seed_everything(cfg["seed"], True)
    with strategy.scope():
        model = mdl.build_model(cfg)
    if name == "none":
        model.save_weights(out / "start.weights.h5")
    else:
        model.load_weights(out / "start.weights.h5")  # the same starting point
    # 16 images per global batch either way: 8 on each of the two replicas when mirrored
    ds = inputs.make_dataset(files, labels, cfg["image_size"], 16)
    paths = {"model_path": out / name / "model.keras", "history_path": out / name / "h.csv"}
    training.prepare_state(out / name / "state", cfg, manifest_sha256="m", **paths)
    training.fit(model, ds, ds, cfg, state_dir=out / name / "state", **paths)
    weights[name] = model.get_weights()
    print(name, strategy.num_replicas_in_sync, flush=True)
diffs = [float(np.max(np.abs(a - b))) for a, b in zip(weights["none"], weights["mirrored"])]
moved = [float(np.max(np.abs(a))) for a in weights["none"]]
print("RESULT", json.dumps({"diffs": diffs, "scale": moved}))
"""


@pytest.mark.slow  # two trainings in a subprocess: 15 s
def test_mirrored_over_two_devices_trains_like_one_device_on_the_same_global_batch(
    tmp_path, phantom_set
):
    """The mirrored path without a GPU: two logical CPUs, global batch split 8 + 8.

    Averaging the loss over the global batch, all-reducing the gradients and synchronising the
    batch-norm statistics make two replicas take the steps one device takes on the whole batch,
    so the weights after two epochs agree. (Per-replica batch norm would not: its statistics
    over 8 images differ from those over 16.)
    """
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(phantom_set), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "none 1" in result.stdout and "mirrored 2" in result.stdout
    line = next(li for li in result.stdout.splitlines() if li.startswith("RESULT "))
    found = json.loads(line.removeprefix("RESULT "))
    assert max(found["scale"]) > 0.1
    assert max(found["diffs"]) < 1e-4, found["diffs"]
