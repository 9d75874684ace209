"""Fine-tune a trained run with lesion guidance under several settings, scored on validation.

Lesion guidance (``train.lesion_guidance``, :mod:`brainmri.guidance`) moves Grad-CAM onto the
tumour, but on the real data the recipe first tried (weight 3, learning rate 5e-5, 2 epochs) also
cost about a point of accuracy. Each run of the pipeline trains about an hour before its guided
phase starts; this tool starts where that phase starts, from a run's unguided model
(``model_unguided.keras`` of a guided run, else ``model.keras``), and runs the pipeline's guided
phase (:func:`brainmri.training.guided_phase`) under each ``--variant`` of the train parameters
(``lesion_guidance``, ``guidance_learning_rate``, ``guidance_epochs``, ``guidance_margin``,
``guidance_cells``, ``guidance_distillation``, ``seed``; the distillation's teacher is the start
model, as in the pipeline). After every epoch it records the validation accuracy and Grad-CAM's
localisation on the **validation** images that have a tumour mask (the metrics of 05_gradcam and of
issue 18's goals), and for each variant the epoch the pipeline would keep (the best validation
accuracy). No test image is read: a recipe chosen here is chosen on validation. E.g. after

    make all PROFILE=cpu DATA_DIR=../shared/data/brain-tumor-mri-dataset UNTIL=03_train

(with or without ``MASK_DIR``):

    .venv/bin/python tools/guidance_study.py --profile cpu \\
        --mask-dir ../shared/data/brain-tumor-masks \\
        --variant lesion_guidance=3 --variant lesion_guidance=1,guidance_margin=0.067

With ``--mix 0.5 ...`` it also scores, for each variant, the kept epoch's weights pulled part of
the way back to the unguided start's (weight-space ensembling, WiSE-FT: Wortsman et al. 2022,
"Robust fine-tuning of zero-shot models"): the guided phase moves a model that has converged on
the classes, and a point on the line between the two may keep most of the maps' gain and less of
the accuracy's loss. Both ends share their batch-norm statistics (frozen in the `cpu` profile).

It prints one JSON line per epoch and mix (also appended to ``--out``), then a table. On 2 cores
about 7-10 minutes per variant of 2 epochs for the `cpu` model, scored on 60 lesions per class (10
on all of them, with two mixes; about 15 with distillation, whose teacher adds a forward pass); run
one study at a time. The guided phase here starts from a fresh shuffle and augmentation stream,
where the pipeline's continues the fine-tuning's (the same recipe, another draw), and runs with this
tool's scoring instead of the pipeline's callbacks: no learning-rate reduction or early stopping
(with the `cpu` profile's patience of 2 and 4 they cannot act within two epochs; longer variants
differ there).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import keras
import numpy as np
import yaml

from brainmri import config, explain, inputs, runs, sources, training
from brainmri import model as mdl
from brainmri.config import TUMOUR_CLASSES
from brainmri.explain.layers import study_parser

ROOT = Path(__file__).resolve().parents[1]

# what a variant may change: the guided phase's own parameters (the model it starts from is the
# run's, so model and fine-tuning parameters have no say here)
VARIANT_KEYS = (
    "lesion_guidance",
    "guidance_learning_rate",
    "guidance_epochs",
    "guidance_margin",
    "guidance_cells",
    "guidance_distillation",
    "seed",
)


def parse_variant(text: str) -> dict:
    """``KEY=VALUE[,KEY=VALUE...]`` of VARIANT_KEYS, the values as YAML numbers
    (:func:`brainmri.config.parse_yaml`: ``2e-5`` included), ``guidance_cells`` one of its
    choices (:data:`brainmri.config.GUIDANCE_CELLS`)."""
    variant = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in VARIANT_KEYS:
            raise argparse.ArgumentTypeError(
                f"--variant {text!r}: expected KEY=VALUE pairs separated by commas, KEY one of "
                f"{', '.join(VARIANT_KEYS)}"
            )
        if key == "guidance_cells":
            if value.strip() not in config.GUIDANCE_CELLS:
                raise argparse.ArgumentTypeError(
                    f"--variant {text!r}: {key} = {value!r}: expected one of "
                    f"{', '.join(config.GUIDANCE_CELLS)}"
                )
            variant[key] = value.strip()
            continue
        try:
            number = config.parse_yaml(value)
        except yaml.YAMLError:
            number = None
        if isinstance(number, bool) or not isinstance(number, int | float):
            number = math.nan
        if not math.isfinite(number):
            raise argparse.ArgumentTypeError(
                f"--variant {text!r}: {key} = {value!r}: expected a finite number"
            )
        variant[key] = number
    return variant


class _Score(keras.callbacks.Callback):
    """After each epoch: Grad-CAM's localisation on the validation masks, one record each."""

    def __init__(self, report, variant: dict) -> None:
        super().__init__()
        self.report, self.variant, self.records = report, variant, []

    def on_epoch_begin(self, epoch, logs=None):  # noqa: D102
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):  # noqa: D102
        seconds = time.perf_counter() - self.start
        if not self.records or logs["val_accuracy"] > kept(self.records)["val_accuracy"]:
            self.kept_weights = self.model.get_weights()  # the epoch the pipeline would keep
        record = {
            "variant": self.variant,
            "epoch": epoch + 1,
            "val_accuracy": float(logs["val_accuracy"]),
            "val_loss": float(logs["val_loss"]),
            "lesion_outside": float(logs.get("lesion_outside", np.nan)),
            "train_seconds": round(seconds),
            **self.report(self.model),
        }
        self.records.append(record)


def interpolate(start: list[np.ndarray], end: list[np.ndarray], mix: float) -> list[np.ndarray]:
    """Weights ``mix`` of the way from ``start`` to ``end`` (WiSE-FT, Wortsman et al. 2022).

    Both are one model's weights (``get_weights``) before and after a phase of training from the
    same start, so every array lines up; 0 gives ``start``, 1 gives ``end``.
    """
    if len(start) != len(end) or any(a.shape != b.shape for a, b in zip(start, end, strict=True)):
        raise ValueError("interpolate: the two weight lists are not of the same model")
    return [
        a + mix * (b - a) if a.dtype.kind == "f" else b for a, b in zip(start, end, strict=True)
    ]


def kept(records: list[dict]) -> dict:
    """The epoch the pipeline keeps: the best validation accuracy, the earliest of equals."""
    return max(records, key=lambda r: (r["val_accuracy"], -r["epoch"]))


def choose(best: list[dict]) -> dict | None:
    """Among the variants' kept epochs that meet the localisation goals, the most accurate on
    validation (the lower weight of equals: the smaller change to the model); None if none."""
    meeting = [r for r in best if r["meets_goals"]]
    if not meeting:
        return None
    return max(meeting, key=lambda r: (r["val_accuracy"], -r["variant"]["lesion_guidance"]))


def table(rows: list[dict]) -> str:
    """Validation accuracy and tolerant pointing / energy ratio per class, one line per row."""
    head = f"{'variant':<58}{'ep':>3}{'val acc':>9}  " + "".join(f"{c:>16}" for c in TUMOUR_CLASSES)
    lines = [head]
    for r in rows:
        name = ",".join(f"{k}={v}" for k, v in r["variant"].items()) or "(unguided start)"
        cells = "".join(
            f"{r[c]['pointing_rate']:>9.2f} /{r[c]['energy_ratio']:>5.1f}" for c in TUMOUR_CLASSES
        )
        goals = "goals met" if r["meets_goals"] else ""
        lines.append(f"{name:<58}{r['epoch']:>3}{r['val_accuracy']:>9.3f}  {cells}  {goals}")
    first = rows[0]
    lines.append(
        f"{'centre prior':<70}  "
        + "".join(f"{first[c]['centre_pointing_rate']:>16.2f}" for c in TUMOUR_CLASSES)
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Load a run, fine-tune its model under each variant, print JSON lines and a table."""
    parser = study_parser(__doc__.splitlines()[0], root=ROOT)
    parser.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        required=True,
        metavar="KEY=VALUE[,...]",
        help=f"a guided phase to try; keys: {', '.join(VARIANT_KEYS)}; repeat for more",
    )
    parser.add_argument(
        "--mix",
        type=float,
        nargs="+",
        metavar="FRACTION",
        help="also score each variant's kept epoch interpolated with the unguided start: its "
        "weights this fraction of the way from the start's (WiSE-FT; 0 < FRACTION < 1)",
    )
    parser.add_argument("--out", type=Path, help="append each JSON line to this file too")
    args = parser.parse_args(argv)
    if any(not 0 < mix < 1 for mix in args.mix or ()):
        parser.error(f"--mix {args.mix}: each fraction must lie strictly between 0 and 1")
    try:
        params = [config.load_profile(args.profile, args.root, v) for v in args.variant]
    except config.ParamError as exc:
        parser.error(str(exc))
    for variant, p in zip(args.variant, params, strict=True):
        if p["train"]["lesion_guidance"] <= 0 or p["train"]["guidance_epochs"] <= 0:
            parser.error(f"--variant {variant}: lesion_guidance and guidance_epochs must be > 0")
    try:
        run = runs.open_run(args.profile, root=args.root)  # records, model, crop as trained
        unguided = run.unguided_model()  # None unless the run had a guided phase
    except (FileNotFoundError, RuntimeError) as exc:
        parser.error(f"{exc} (make all PROFILE={args.profile})")
    paths, record, data_root, crop = run.paths, run.record, run.data_root, run.crop
    if args.mask_dir:
        record = {**record, "mask_root": str(sources.resolve_mask_root(args.mask_dir, Path.cwd()))}
    train_rows, val_rows = run.rows("train"), run.rows("val")
    train_files, train_labels = run.files(train_rows), train_rows["label_index"].tolist()
    val_files, val_labels = run.files(val_rows), val_rows["label_index"].tolist()
    guide_masks = sources.mask_files(train_rows, data_root, record.get("mask_root"))
    if not any(guide_masks):
        parser.error("no training image has a tumour mask: pass --mask-dir")

    # a guided run's model.keras is already guided: its phase started from model_unguided.keras
    start_model = run.model if unguided is None else unguided
    start_path = paths.model if unguided is None else paths.unguided_model
    size = run.image_size
    print(f"start model: {start_path}", flush=True)
    layer = explain.find_target_layer(start_model)
    scored, masks = run.lesions(
        val_rows, per_class=args.per_class, mask_root=record.get("mask_root")
    )
    if scored.empty:
        parser.error("no validation image has a tumour mask: pass --mask-dir")
    images = run.images(scored)
    labels = scored["label"].tolist()
    tolerance = params[0]["gradcam"]["pointing_tolerance"] * size

    def report(model: keras.Model) -> dict:
        (result,) = explain.score_layers(model, images, masks, labels, [layer], tolerance=tolerance)
        return {c: result[c] for c in TUMOUR_CLASSES} | {"meets_goals": result["meets_goals"]}

    def emit(row: dict) -> None:
        line = json.dumps({"profile": args.profile, "split": "val", **row})
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as out:
                out.write(line + "\n")

    val_images = inputs.make_dataset(val_files, None, size, 64, cache="none", crop=crop)

    def val_accuracy(model: keras.Model) -> float:
        _, probs = mdl.predict(model, val_images)
        return float((probs.argmax(1) == np.asarray(val_labels)).mean())

    start = {"variant": {}, "epoch": 0, "val_accuracy": val_accuracy(start_model)}
    start |= report(start_model)
    emit(start)
    start_weights = start_model.get_weights()
    del start_model
    rows, best = [start], []
    for variant, p in zip(args.variant, params, strict=True):
        cfg = {**p["run"], **p["model"], **p["train"]}
        training.seed_everything(cfg["seed"], cfg["deterministic"])
        model = mdl.load_model(start_path)
        mdl.set_trainable(model, cfg["trainable"], cfg["finetune_top_n"])
        train_ds = inputs.make_dataset(
            train_files,
            train_labels,
            size,
            cfg["batch_size"],
            shuffle=True,
            seed=cfg["seed"],
            augment=inputs.augmentation(cfg, cfg["seed"]),
            masks=guide_masks,
            crop=crop,
        )
        val_ds = inputs.make_dataset(val_files, val_labels, size, cfg["batch_size"], crop=crop)
        scorer = _Score(report, variant)
        # the pipeline's guided phase; the distillation's teacher is the start model, as there
        training.guided_phase(model, train_ds, val_ds, cfg, callbacks=[scorer])
        for row in scorer.records:
            emit(row)
        rows += scorer.records
        best.append(
            {
                **kept(scorer.records),
                "variant": {"lesion_guidance": cfg["lesion_guidance"]} | variant,
            }
        )
        # the kept epoch's weights pulled back towards the unguided start (WiSE-FT)
        for mix in args.mix or ():
            model.set_weights(interpolate(start_weights, scorer.kept_weights, mix))
            row = {"variant": variant | {"mix": mix}, "epoch": best[-1]["epoch"]}
            row |= {"val_accuracy": val_accuracy(model), **report(model)}
            emit(row)
            rows.append(row)
            best.append({**row, "variant": best[-1]["variant"] | {"mix": mix}})
    print(table(rows))
    chosen = choose(best)
    if chosen is None:
        print("no variant's kept epoch meets the localisation goals")
    else:
        print(
            f"chosen on validation: {chosen['variant']}, epoch {chosen['epoch']}, "
            f"validation accuracy {chosen['val_accuracy']:.3f} (unguided start "
            f"{start['val_accuracy']:.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
