"""Train a profile's model on its phantom set with several seeds and score where Grad-CAM points.

Grad-CAM's pointing rate on small lesions varies a lot between training runs, so one run proves
little. This trains the model once per seed on the pipeline's own subsets (the same manifest and
validation split as 01_download; only the training seed changes) and prints one JSON line per seed
with the validation accuracy and, per tumour class of the validation subset, Grad-CAM's pointing
rate with the standard tolerance, the strict rate and the energy ratio, as 05_gradcam computes
them. Everything is scored on validation: a setting chosen with this tool is chosen without
looking at Testing, which only 04_evaluate and 05_gradcam read. E.g.

    .venv/bin/python tools/localisation_study.py --seeds 42 7 1 3 --set cnn_convs=2

Runs take about a minute each on 2 cores for the demo profile; run one study at a time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from brainmri import config, explain, inputs, phantom, sources, training
from brainmri import model as mdl
from brainmri.config import TUMOUR_CLASSES

ROOT = Path(__file__).resolve().parents[1]


def _override(text: str) -> tuple[str, object]:
    """Parse KEY=VALUE, the value as YAML (numbers, lists, booleans; ``1e-4`` a float)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected KEY=VALUE")
    return key, config.parse_yaml(value)


def run_seed(params: dict, root: Path, manifest: pd.DataFrame, seed: int, work: Path) -> dict:
    """Train with one seed and return accuracy and per-class Grad-CAM localisation scores."""
    cfg = {**params["run"], **params["model"], **params["train"], "seed": seed}
    size, batch, crop = cfg["image_size"], cfg["batch_size"], cfg["crop_to_brain"]
    _, train_files, train_labels = sources.subset_files(manifest, root, "train")
    val, val_files, val_labels = sources.subset_files(manifest, root, "val")
    training.seed_everything(seed)
    train_ds = inputs.make_dataset(
        train_files,
        train_labels,
        size,
        batch,
        shuffle=True,
        seed=seed,
        augment=inputs.augmentation(cfg, seed),
        crop=crop,
    )
    val_ds = inputs.make_dataset(val_files, val_labels, size, batch, crop=crop)
    out = work / f"seed{seed}"
    started = time.perf_counter()
    model, history, _ = training.train_or_resume(
        mdl.build_model(cfg),
        train_ds,
        val_ds,
        cfg,
        manifest_sha256="study",
        model_path=out / "model.keras",
        history_path=out / "history.csv",
        state_dir=out / "state",
    )
    seconds = time.perf_counter() - started
    _, probs = mdl.predict(
        model, inputs.make_dataset(val_files, None, size, 64, cache="none", crop=crop)
    )

    tumours = val["label"].isin(TUMOUR_CLASSES).to_numpy()
    paths = [Path(f) for f, t in zip(val_files, tumours, strict=True) if t]
    report = explain.localisation_report(
        model,
        inputs.load_batch(paths, size, crop=crop),
        np.stack([phantom.load_mask(p, root, size, crop=crop) for p in paths]),
        val["label"][tumours].tolist(),
        methods=["gradcam"],
        seed=seed,
        steps=None,  # faithfulness is not part of this study
        tolerance=params["gradcam"]["pointing_tolerance"] * size,
    )
    classes = explain.summarise_localisation(report)["classes"]
    result = {
        "seed": seed,
        "epochs": len(history),
        "val_accuracy_per_epoch": [round(float(v), 3) for v in history["val_accuracy"]],
        "train_seconds": round(seconds),
        "val_accuracy_best": float((probs.argmax(1) == np.asarray(val_labels)).mean()),
    }
    for label in TUMOUR_CLASSES:
        scores = classes[label]["methods"]["gradcam"]
        result[label] = {
            k: scores[k] for k in ("pointing_rate", "pointing_rate_strict", "energy_ratio")
        }
    return result


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, make the phantom set, train and score each seed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo", help="a profile whose data_source is phantom")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1, 3])
    parser.add_argument("--set", type=_override, action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        params = config.load_profile(args.profile, ROOT, dict(args.set))
    except config.ParamError as exc:
        parser.error(str(exc))
    if params["data"]["data_source"] != "phantom":
        parser.error(
            f"profile {args.profile!r}: data_source must be 'phantom' (tumour masks needed)"
        )
    paths = config.paths(args.profile, ROOT)
    data = {**params["run"], **params["data"]}
    root = Path(sources.resolve_source(data, paths)["root"])
    manifest, _ = sources.build_manifest(root, data)  # the pipeline's own subsets
    with tempfile.TemporaryDirectory(prefix="localisation-study-") as work:
        for seed in args.seeds:
            result = {
                "profile": args.profile,
                "overrides": dict(args.set),
                **run_seed(params, root, manifest, seed, Path(work)),
            }
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
