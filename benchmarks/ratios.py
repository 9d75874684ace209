"""The project against what a user would otherwise run, as ratios measured in one run.

`make bench` runs this after the pytest benchmarks. Each line compares two ways of doing the
same work on the same files, in the same process, one after the other, so machine speed and
load cancel out in the ratio:

1. input pipeline: the project's training input (decode once, cache, shuffle, augment, batch,
   prefetch) against the reference's ``ImageDataGenerator(...).flow_from_directory`` with the
   same augmentation, 240 px, batch 32;
2. training step: EfficientNetB1 at 240 px (random weights, the reference head) trained by the
   project's loop on the project's pipeline against ``model.fit`` on the reference generator,
   without XLA and, where a GPU is present (``--xla auto``) or asked for (``--xla always``),
   with it: on 2 CPU cores XLA made B1 six times slower after a 5-minute compile;
3. inference and Grad-CAM images per second for B1 at 240 px and the `cpu` model (Lite1);
4. with ``--parts threads``, the training step of 2. under other TensorFlow thread settings
   (intra-op, inter-op pool sizes), each in a process of its own: TensorFlow fixes its pools
   when it starts.

It reads up to ``--per-class`` Training images per class of the real data set where present
(``../shared/data/brain-tumor-mri-dataset``), otherwise a phantom set made for the purpose, and
writes ``reports/bench/bench.json``. E.g. ``.venv/bin/python benchmarks/ratios.py --per-class 50``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from brainmri import explain, inputs, training  # noqa: E402
from brainmri import model as mdl  # noqa: E402
from brainmri.config import CLASS_NAMES, load_profile  # noqa: E402

REAL_DATA = ROOT.parent / "shared" / "data" / "brain-tumor-mri-dataset"
SIZE, BATCH = 240, 32
PARTS = ("input", "training", "inference", "threads")
# what `make bench` measures; "threads" (three more training measurements, each in a process of
# its own, about 10 minutes each on 2 cores) runs when asked for with --parts
DEFAULT_PARTS = ("input", "training", "inference")
# intra-op, inter-op pool sizes tried besides TensorFlow's own choice (0,0: one thread per core
# in each pool): fewer threads than cores, one inter-op thread, and oversubscription
THREAD_SETTINGS = ("1,1", "2,1", "4,2")


def set_threads(spec: str) -> None:
    """Size TensorFlow's thread pools from "INTRA,INTER" (0 = TensorFlow's choice).

    Only before TensorFlow has run anything: it fixes its pools when it starts.
    """
    intra, inter = (int(n) for n in spec.split(","))
    if (intra, inter) == (0, 0):
        return  # TensorFlow's choice: nothing to set (and nothing to refuse once it has started)
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)


def image_folder(work: Path, per_class: int) -> tuple[Path, str]:
    """A Training-layout folder of symlinks to per_class images of each class (no copies)."""
    if (REAL_DATA / "Training").is_dir():
        source, name = REAL_DATA / "Training", "real data (Training)"
    else:
        from brainmri.phantom import generate_phantom_dataset

        made = generate_phantom_dataset(work / "phantom", per_class, 1, 256, seed=0)
        source, name = made / "Training", "phantom set (no real data here)"
    folder = work / "images"
    for label in CLASS_NAMES:
        (folder / label).mkdir(parents=True)
        for file in sorted((source / label).iterdir())[:per_class]:
            (folder / label / file.name).symlink_to(file.resolve())
    return folder, name


def reference_generator(folder: Path, *, shuffle: bool = True):
    """The reference notebook's generator: ImageDataGenerator with its augmentation.

    Keras 3 keeps it only under TensorFlow's namespace (keras.src.legacy), as tf.keras.
    """
    generator = tf.keras.preprocessing.image.ImageDataGenerator(
        rotation_range=10,
        width_shift_range=0.1,
        height_shift_range=0.1,
        shear_range=0.1,
        zoom_range=0.1,
        horizontal_flip=True,
        fill_mode="nearest",
    )
    return generator.flow_from_directory(
        str(folder), target_size=(SIZE, SIZE), batch_size=BATCH, shuffle=shuffle, seed=0
    )


def project_dataset(folder: Path):
    """The project's training input on the same files (the reference augmentation)."""
    files = sorted(folder.glob("*/*"))
    labels = [CLASS_NAMES.index(f.parent.name) for f in files]
    params = load_profile("default")["train"]
    return inputs.make_dataset(
        files,
        labels,
        SIZE,
        BATCH,
        shuffle=True,
        seed=0,
        augment=inputs.augmentation(params, 0),
    ), len(files)


def images_per_second(batches, limit: int) -> float:
    """Images per second of iterating ``limit`` batches (at least one image each)."""
    count, start = 0, time.perf_counter()
    for i, batch in enumerate(batches):
        count += len(batch[0])
        if i + 1 >= limit:
            break
    return count / (time.perf_counter() - start)


def measure_input(folder: Path) -> dict:
    """Input pipeline: the project's first (decoding) and later (cached) epochs vs the reference."""
    dataset, n = project_dataset(folder)
    steps = -(-n // BATCH)
    first = images_per_second(dataset, steps)
    cached = images_per_second(dataset, steps)
    reference = images_per_second(reference_generator(folder), steps)
    return {
        "images": n,
        "project_first_epoch": first,
        "project_cached_epoch": cached,
        "reference_imagedatagenerator": reference,
        "ratio_cached": cached / reference,
        "ratio_first_epoch": first / reference,
        "goal": ">= 5x (cached epochs, the ones training repeats)",
    }


def b1_model() -> keras.Model:
    """The reference classifier with random weights (no download)."""
    params = {**load_profile("default")["model"], "weights": "none"}
    return mdl.build_model(params)


def measure_training(folder: Path, steps: int, xla: bool = False) -> dict:
    """One epoch of ``steps`` batches of B1 at 240 px: project loop + pipeline vs fit + generator,
    without XLA and (``xla``) with it."""
    dataset, _ = project_dataset(folder)
    for _ in dataset:  # the cache is filled by the first epoch of training; fill it first
        pass
    dataset = dataset.take(steps)
    result: dict = {"steps": steps, "batch": BATCH}
    for jit in (False, True) if xla else (False,):
        tag = "xla" if jit else "no_xla"
        model = b1_model()
        training.compile_model(model, 1e-4, 0.0, "always" if jit else "never")
        # the project: its own loop (training.run_epochs) on its own pipeline; epoch 1 traces
        # and compiles, epoch 2 is timed (with one validation batch: a bias against the project)
        training.run_epochs(
            model,
            dataset,
            dataset.take(1),
            initial_epoch=0,
            epochs=2,
            callbacks=[_Record(result, f"project_{tag}", steps * BATCH)],
            label_smoothing=0.0,
            jit_compile=jit,
        )
        # the reference: model.fit on ImageDataGenerator, first epoch to trace, second timed
        model = b1_model()
        training.compile_model(model, 1e-4, 0.0, "always" if jit else "never")
        model.fit(
            reference_generator(folder),
            steps_per_epoch=steps,
            epochs=2,
            verbose=0,
            callbacks=[_Record(result, f"reference_{tag}", steps * BATCH)],
        )
        result[f"ratio_{tag}"] = result[f"project_{tag}"] / result[f"reference_{tag}"]
    result["goal"] = ">= 1.2x"
    return result


class _Record(keras.callbacks.Callback):
    """Keeps the images per second of the last epoch (the first one traces and compiles)."""

    def __init__(self, result: dict, key: str, images: int) -> None:
        super().__init__()
        self.result, self.key, self.images = result, key, images

    def on_epoch_begin(self, epoch, logs=None):  # noqa: D102
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):  # noqa: D102
        self.result[self.key] = self.images / (time.perf_counter() - self.start)


def measure_inference(folder: Path) -> dict:
    """Prediction and Grad-CAM images per second of B1 (240 px) and the cpu model."""
    files = sorted(folder.glob("*/*"))[:64]
    result = {}
    cpu = load_profile("cpu")["model"]
    for name, model, size in (
        ("b1_240", b1_model(), SIZE),
        ("cpu_lite1", mdl.build_model({**cpu, "weights": "none"}), cpu["image_size"]),
    ):
        images = inputs.load_batch(files, size)
        mdl.predict(model, images[:BATCH])  # trace
        start = time.perf_counter()
        mdl.predict(model, images)
        result[f"{name}_predict"] = len(images) / (time.perf_counter() - start)
        explain.gradcam(model, images[:2])  # trace
        start = time.perf_counter()
        explain.gradcam(model, images[:BATCH])
        result[f"{name}_gradcam"] = BATCH / (time.perf_counter() - start)
    return result


def measure_threads(per_class: int, steps: int, settings=THREAD_SETTINGS) -> dict:
    """The training step (no XLA) under each thread setting, one process per setting.

    Returns:
        Per setting "INTRA,INTER": the project's and the reference's images per second and their
        ratio.
    """
    result = {}
    for spec in settings:
        with tempfile.TemporaryDirectory(prefix="brainmri-bench-threads-") as work:
            out = Path(work) / "bench.json"
            command = [sys.executable, __file__, "--parts", "training", "--xla", "never"]
            command += ["--threads", spec, "--per-class", str(per_class)]
            command += ["--train-steps", str(steps), "--out", str(out)]
            run = subprocess.run(command, capture_output=True, text=True, check=False)
            if run.returncode != 0:
                raise RuntimeError(f"threads {spec}: {' '.join(command)} failed:\n{run.stderr}")
            step = json.loads(out.read_text())["training_step"]
        result[spec] = {
            "project": step["project_no_xla"],
            "reference": step["reference_no_xla"],
            "ratio": step["ratio_no_xla"],
        }
    return result


def main(argv: list[str] | None = None) -> int:
    """Measure, print a table and write reports/bench/bench.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=100, help="images per class")
    parser.add_argument("--train-steps", type=int, default=6, help="batches per timed epoch")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench" / "bench.json")
    parser.add_argument(
        "--parts",
        default=",".join(DEFAULT_PARTS),
        help=f"comma-separated subset to measure ({', '.join(PARTS)})",
    )
    parser.add_argument(
        "--xla",
        choices=("auto", "always", "never"),
        default="auto",
        help="also time B1 with XLA: auto = where a GPU is present (on CPUs it compiles for "
        "minutes and runs slower)",
    )
    parser.add_argument(
        "--threads",
        default="0,0",
        metavar="INTRA,INTER",
        help="TensorFlow's thread pools for this run (0 = TensorFlow's choice)",
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    unknown = parts - set(PARTS)
    if unknown:
        parser.error(f"--parts: unknown {sorted(unknown)}; choose from {', '.join(PARTS)}")
    if not re.fullmatch(r"\d+,\d+", args.threads):
        parser.error(f"--threads {args.threads!r}: expected INTRA,INTER, e.g. 2,1")
    set_threads(args.threads)
    gpus = len(tf.config.list_physical_devices("GPU"))
    xla = args.xla == "always" or (args.xla == "auto" and gpus > 0)
    keras.utils.set_random_seed(0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="brainmri-bench-") as work:
        folder, data = image_folder(Path(work), args.per_class)
        results = {
            "data": data,
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "gpus": gpus,
                "load_average_1min": os.getloadavg()[0],
            },
            "threads": args.threads,
            "command": " ".join(["benchmarks/ratios.py", *(argv or sys.argv[1:])]),
        }
        # written after each part, so a long run interrupted keeps what it measured
        for part, key, measure in (
            ("input", "input_pipeline", lambda: measure_input(folder)),
            (
                "training",
                "training_step",
                lambda: measure_training(folder, args.train_steps, xla=xla),
            ),
            ("inference", "inference", lambda: measure_inference(folder)),
            (
                "threads",
                "thread_settings",
                lambda: measure_threads(args.per_class, args.train_steps),
            ),
        ):
            if part not in parts:
                continue
            results[key] = measure()
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"written: {args.out}")
    return 0


def table(results: dict) -> str:
    """The ratios as a plain-text table."""
    ip, ts = results.get("input_pipeline"), results.get("training_step")
    inf = results.get("inference") or {}
    rows = []
    if ip:
        rows += [
            (
                "input pipeline, cached epoch (img/s)",
                ip["project_cached_epoch"],
                ip["reference_imagedatagenerator"],
                ip["ratio_cached"],
                ip["goal"],
            ),
            (
                "input pipeline, first epoch (img/s)",
                ip["project_first_epoch"],
                ip["reference_imagedatagenerator"],
                ip["ratio_first_epoch"],
                "(decodes every file)",
            ),
        ]
    for tag, label in (("no_xla", "without XLA"), ("xla", "with XLA")) if ts else ():
        if f"project_{tag}" not in ts:
            continue
        rows.append((f"B1 training step {label} (img/s)", ts[f"project_{tag}"],
                     ts[f"reference_{tag}"], ts[f"ratio_{tag}"], ts["goal"]))  # fmt: skip
    lines = [
        f"data: {results['data']}; load {results['machine']['load_average_1min']:.1f} "
        f"on {results['machine']['cpus']} CPUs",
        f"{'':42} {'project':>9} {'reference':>10} {'ratio':>7}  goal",
    ]
    lines += [f"{r[0]:42} {r[1]:9.1f} {r[2]:10.1f} {r[3]:6.2f}x  {r[4]}" for r in rows]
    for spec, t in (results.get("thread_settings") or {}).items():
        lines.append(
            f"{'B1 training, threads intra,inter = ' + spec:42} {t['project']:9.1f} "
            f"{t['reference']:10.1f} {t['ratio']:6.2f}x"
        )
    lines += [f"{k:42} {v:9.1f} img/s" for k, v in inf.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
