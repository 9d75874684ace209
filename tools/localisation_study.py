"""Train a profile's model on its phantom set with several seeds and score where Grad-CAM points.

Grad-CAM's pointing rate on small lesions varies a lot between training runs, so one run proves
little. This trains the model once per seed (validation: every fifth Training image; Testing stays
unseen) and prints one JSON line per seed with the test accuracy and, per tumour class, the
pointing rate with the standard tolerance, the strict rate and the energy ratio. It is how the
README's comparison of `cnn_convs` 1 and 2 was measured, e.g.

    .venv/bin/python tools/localisation_study.py --seeds 42 7 1 3 --set cnn_convs=2

Runs take about a minute each on 2 cores for the demo profile; run one study at a time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from brainmri import config, explain, inputs, phantom, sources, training  # noqa: E402
from brainmri import model as mdl  # noqa: E402
from brainmri.config import CLASS_NAMES, TUMOUR_CLASSES  # noqa: E402


def _override(text: str) -> tuple[str, object]:
    """Parse KEY=VALUE, the value as YAML (numbers, lists, booleans)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected KEY=VALUE")
    return key, yaml.safe_load(value)


def run_seed(params: dict, root: Path, seed: int, work: Path) -> dict:
    """Train with one seed and return accuracy and per-class Grad-CAM localisation scores."""
    cfg = {**params["run"], **params["model"], **params["train"], "seed": seed}
    files = sorted((root / "Training").glob("*/*.jpg"))
    labels = [CLASS_NAMES.index(f.parent.name) for f in files]
    is_val = [i % 5 == 0 for i in range(len(files))]
    part = {
        val: (
            [f for f, v in zip(files, is_val, strict=True) if v == val],
            [y for y, v in zip(labels, is_val, strict=True) if v == val],
        )
        for val in (False, True)
    }
    size, batch = cfg["image_size"], cfg["batch_size"]
    training.seed_everything(seed)
    train_ds = inputs.make_dataset(
        *part[False], size, batch, shuffle=True, seed=seed, augment=inputs.augmentation(cfg, seed)
    )
    val_ds = inputs.make_dataset(*part[True], size, batch)
    model = mdl.build_model(cfg)
    out = work / f"seed{seed}"
    training.prepare_state(out / "state", cfg, "study", out / "model.keras", out / "history.csv")
    started = time.perf_counter()
    history = training.fit(
        model, train_ds, val_ds, cfg, out / "model.keras", out / "history.csv", out / "state"
    )
    seconds = time.perf_counter() - started
    model = mdl.load_model(out / "model.keras")

    test = sorted((root / "Testing").glob("*/*.jpg"))
    truth = np.array([CLASS_NAMES.index(f.parent.name) for f in test])
    _, probs = mdl.predict(model, inputs.make_dataset(test, None, size, 64, cache="none"))
    images = inputs.load_batch(test, size)
    tolerance = params["gradcam"]["pointing_tolerance"] * size
    result = {
        "seed": seed,
        "epochs": len(history),
        "train_seconds": round(seconds),
        "accuracy": float((probs.argmax(1) == truth).mean()),
    }
    for label in TUMOUR_CLASSES:
        idx = np.flatnonzero(truth == CLASS_NAMES.index(label))
        masks = [phantom.load_mask(test[i], root, size) for i in idx]
        maps = explain.gradcam(model, images[idx], class_index=CLASS_NAMES.index(label))
        pairs = list(zip(maps, masks, strict=True))
        result[label] = {
            "pointing_rate": float(
                np.mean([explain.pointing_game(m, k, tolerance) for m, k in pairs])
            ),
            "pointing_rate_strict": float(np.mean([explain.pointing_game(m, k) for m, k in pairs])),
            "energy_ratio": float(np.mean([explain.energy_ratio(m, k) for m, k in pairs])),
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
    root = phantom.generate_phantom_dataset(
        sources.phantom_root(paths, data),
        data["phantom_train_per_class"],
        data["phantom_test_per_class"],
        data["phantom_size"],
        data["seed"],
    )
    with tempfile.TemporaryDirectory(prefix="localisation-study-") as work:
        for seed in args.seeds:
            result = {
                "profile": args.profile,
                "overrides": dict(args.set),
                **run_seed(params, root, seed, Path(work)),
            }
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
