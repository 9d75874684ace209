"""Score Grad-CAM of a trained run at several layers against the validation tumour masks.

Which feature map Grad-CAM explains is a choice (``gradcam.cam_layer``; null is the backbone's
last one). The last map is the most class-specific but the coarsest: 6x6 cells at 192 px for the
`cpu` model, each a sixth of the image wide, where a small lesion and the skull next to it share
a cell. Earlier maps are finer (12x12, 24x24) but their gradients say less about the class
(Selvaraju et al. 2017, sec. 3; Jiang et al. 2021, LayerCAM). This tool scores the candidates on
the **validation** images that have a tumour mask, with the metrics 05_gradcam reports (pointing
game with the standard tolerance and strict, energy ratio) next to the centre prior, and says for
each layer whether it meets the localisation goals (issue 18: tolerant pointing >= 0.80 and
energy ratio >= 3 for every tumour class, above the centre prior's pointing). It trains nothing
and reads no Testing image: the layer chosen with it is chosen on validation, and the model and
therefore every accuracy figure stay as they are. E.g. after
``make all PROFILE=cpu DATA_DIR=../shared/data/brain-tumor-mri-dataset``:

    .venv/bin/python tools/cam_layer_study.py --profile cpu \\
        --mask-dir ../shared/data/brain-tumor-masks

It prints one JSON line per layer, then a table. A few minutes on 2 cores for the `cpu` model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import keras
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from brainmri import config, explain, inputs, predict, sources  # noqa: E402
from brainmri import model as mdl  # noqa: E402
from brainmri.config import TUMOUR_CLASSES  # noqa: E402

# issue 18's localisation goals, per tumour class
MIN_POINTING, MIN_ENERGY_RATIO = 0.80, 3.0


def candidate_layers(model: keras.Model, *, finest: int = 4) -> list[str]:
    """The output of each finer grid's last block, after Grad-CAM's default layer.

    Args:
        model: a classifier following the model contract (see `brainmri.explain`).
        finest: how many times finer than the default layer's grid a candidate may be.

    Returns:
        Layer names, the default layer (:func:`explain.find_target_layer`) first, then for each
        finer grid, coarse to fine, its last residual sum (``keras.layers.Add``, a block's
        output in EfficientNet) or, in a model without any, its last 4-D layer. (The last layer
        of a grid is otherwise the expansion inside the next block, which only that block reads.)
    """
    default = explain.find_target_layer(model)
    coarsest = model.get_layer(default).output.shape[1]
    residual = any(isinstance(layer, keras.layers.Add) for layer in model.layers)
    last_of: dict[int, str] = {}
    for layer in model.layers:
        shape = getattr(getattr(layer, "output", None), "shape", None)
        if shape is None or len(shape) != 4 or shape[1] is None:
            continue
        if residual and not isinstance(layer, keras.layers.Add):
            continue
        if coarsest < shape[1] <= coarsest * finest:
            last_of[shape[1]] = layer.name  # later layers of the same grid replace earlier ones
    return [default, *(last_of[side] for side in sorted(last_of))]


def score_layers(
    model: keras.Model,
    images: np.ndarray,
    masks: np.ndarray,
    labels: list[str],
    layers: list[str],
    *,
    tolerance: float,
) -> list[dict]:
    """Grad-CAM's localisation per tumour class at each layer, with the centre prior's pointing.

    Args:
        model: the trained classifier.
        images: float 0-255 tumour images (N, H, W, 3).
        masks: their boolean masks (N, H, W).
        labels: their class names.
        layers: the layers to explain.
        tolerance: the pointing game's slack in pixels.

    Returns:
        One dict per layer: ``layer``, ``grid`` (the map's side), per class ``n``,
        ``pointing_rate``, ``pointing_rate_strict``, ``energy_ratio``, ``centre_pointing_rate``,
        and ``meets_goals`` (every class at MIN_POINTING, MIN_ENERGY_RATIO and above the centre).
    """
    results = []
    for layer in layers:
        report = explain.localisation_report(
            model,
            images,
            masks,
            labels,
            methods=["gradcam"],
            steps=None,  # faithfulness is not part of this study
            layer_name=layer,
            tolerance=tolerance,
        )
        classes = explain.summarise_localisation(report)["classes"]
        result: dict = {"layer": layer, "grid": int(model.get_layer(layer).output.shape[1])}
        meets = True
        for label in TUMOUR_CLASSES:
            if label not in classes:
                continue
            block = classes[label]
            cam, centre = block["methods"]["gradcam"], block["methods"]["centre"]
            scores = {
                "n": block["n_images"],
                "pointing_rate": cam["pointing_rate"],
                "pointing_rate_strict": cam["pointing_rate_strict"],
                "energy_ratio": cam["energy_ratio"],
                "centre_pointing_rate": centre["pointing_rate"],
            }
            meets &= (
                scores["pointing_rate"] >= MIN_POINTING
                and scores["energy_ratio"] >= MIN_ENERGY_RATIO
                and scores["pointing_rate"] > scores["centre_pointing_rate"]
            )
            result[label] = scores
        result["meets_goals"] = bool(meets)
        results.append(result)
    return results


def table(results: list[dict]) -> str:
    """The results as a text table: tolerant / strict pointing and energy ratio per class."""
    head = f"{'layer':<22}{'grid':>5}  " + "".join(f"{c:>24}" for c in TUMOUR_CLASSES) + "  goals"
    lines = [head]
    for r in results:
        cells = "".join(
            f"{r[c]['pointing_rate']:>9.2f} /{r[c]['pointing_rate_strict']:.2f} /{r[c]['energy_ratio']:>5.1f}"
            if c in r
            else f"{'-':>24}"
            for c in TUMOUR_CLASSES
        )
        lines.append(
            f"{r['layer']:<22}{r['grid']:>5}  {cells}  {'met' if r['meets_goals'] else '-'}"
        )
    first = results[0]
    centre = "".join(
        f"{first[c]['centre_pointing_rate']:>24.2f}" if c in first else f"{'-':>24}"
        for c in TUMOUR_CLASSES
    )
    lines.append(f"{'centre prior':<22}{'':>5}  {centre}")
    return "\n".join(lines)


def run_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the arguments that name a trained run, its masks and how many to score
    (``--profile``, ``--root``, ``--mask-dir``, ``--per-class``), for the tools that score one."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--profile", default="cpu", help="a profile whose run has trained (03)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project the run lives in")
    parser.add_argument(
        "--mask-dir", help="the masks tree (default: the run's data.mask_dir, or the set's own)"
    )
    parser.add_argument(
        "--per-class",
        type=int,
        default=100_000,
        help="most validation images per tumour class to score (default: all with a mask)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Load a run's model and validation masks, score each layer, print JSON lines and a table."""
    parser = run_parser(__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", help="layers to score (default: candidate_layers)")
    args = parser.parse_args(argv)
    params = config.load_profile(args.profile, args.root)
    paths = config.paths(args.profile, args.root)
    if not paths.model.is_file():
        parser.error(f"{paths.model}: no trained model; run make all PROFILE={args.profile} first")
    record, manifest = sources.load_run_data(paths)
    mask_root = record.get("mask_root")
    if args.mask_dir:
        mask_root = sources.resolve_mask_root(args.mask_dir, Path.cwd())
    model = mdl.load_model(paths.model)
    size = model.input_shape[1]
    crop = predict.run_info(paths.model, paths.run_dir).crop_to_brain  # as the run trained
    layers = args.layers or candidate_layers(model)
    unknown = [name for name in layers if name not in {layer.name for layer in model.layers}]
    if unknown:
        parser.error(f"--layers: {unknown} are not layers of {paths.model}")

    data_root = Path(record["root"])
    val_rows, _, _ = sources.subset_files(manifest, data_root, "val")
    scored, masks = sources.images_with_masks(
        val_rows, data_root, size, mask_root=mask_root, per_class=args.per_class, crop=crop
    )
    if scored.empty:
        parser.error("no validation image has a tumour mask: pass --mask-dir")
    images = inputs.load_batch([data_root / p for p in scored["path"]], size, crop=crop)
    tolerance = params["gradcam"]["pointing_tolerance"] * size
    results = score_layers(
        model, images, masks, scored["label"].tolist(), layers, tolerance=tolerance
    )
    for result in results:
        print(json.dumps({"profile": args.profile, "split": "val", **result}), flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
