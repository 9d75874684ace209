"""Score Grad-CAM of a trained run at several layers against the validation tumour masks.

Which feature map Grad-CAM explains is a choice (``gradcam.cam_layer``; null is the backbone's
last one). The last map is the most class-specific but the coarsest: 6x6 cells at 192 px for the
`cpu` model, each a sixth of the image wide, where a small lesion and the skull next to it share
a cell. Earlier maps are finer (12x12, 24x24) but their gradients say less about the class
(Selvaraju et al. 2017, sec. 3; Jiang et al. 2021, LayerCAM). This tool scores the candidates on
the **validation** images that have a tumour mask, with the metrics 05_gradcam reports (pointing
game with the standard tolerance and strict, energy ratio) next to the centre prior, and says for
each layer whether it meets the localisation goals (issue 18: tolerant pointing >= 0.80 and
energy ratio >= 3 for every tumour class, above the centre prior's pointing; the candidates,
their scores and the goals come from :mod:`brainmri.explain.layers`). It trains nothing and
reads no Testing image: the layer chosen with it is chosen on validation, and the model and
therefore every accuracy figure stay as they are. E.g. after
``make all PROFILE=cpu DATA_DIR=../shared/data/brain-tumor-mri-dataset``:

    .venv/bin/python tools/cam_layer_study.py --profile cpu \\
        --mask-dir ../shared/data/brain-tumor-masks

It prints one JSON line per layer, then a table. A few minutes on 2 cores for the `cpu` model.
"""

from __future__ import annotations

import json
from pathlib import Path

from brainmri import config, explain, runs, sources
from brainmri.config import TUMOUR_CLASSES
from brainmri.explain.layers import study_parser

ROOT = Path(__file__).resolve().parents[1]


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


def main(argv: list[str] | None = None) -> int:
    """Load a run's model and validation masks, score each layer, print JSON lines and a table."""
    parser = study_parser(__doc__.splitlines()[0], root=ROOT)
    parser.add_argument(
        "--layers", nargs="+", help="layers to score (default: explain.candidate_layers)"
    )
    args = parser.parse_args(argv)
    params = config.load_profile(args.profile, args.root)
    try:
        run = runs.open_run(args.profile, root=args.root)  # records, model, crop as trained
    except FileNotFoundError as exc:
        parser.error(f"{exc} (make all PROFILE={args.profile})")
    mask_root = run.record.get("mask_root")
    if args.mask_dir:
        mask_root = sources.resolve_mask_root(args.mask_dir, Path.cwd())
    model, size = run.model, run.image_size
    layers = args.layers or explain.candidate_layers(model)
    unknown = [name for name in layers if name not in {layer.name for layer in model.layers}]
    if unknown:
        parser.error(f"--layers: {unknown} are not layers of {run.paths.model}")

    scored, masks = run.lesions(run.rows("val"), per_class=args.per_class, mask_root=mask_root)
    if scored.empty:
        parser.error("no validation image has a tumour mask: pass --mask-dir")
    images = run.images(scored)
    tolerance = params["gradcam"]["pointing_tolerance"] * size
    results = explain.score_layers(
        model, images, masks, scored["label"].tolist(), layers, tolerance=tolerance
    )
    for result in results:
        print(json.dumps({"profile": args.profile, "split": "val", **result}), flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
