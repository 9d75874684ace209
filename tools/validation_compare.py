"""Compare two trained models on the validation split they share, image by image.

A recipe study trains a variant of a profile (e.g. a clone with ``params/study_nocrop.yaml``,
run with ``make all PROFILE=study_nocrop UNTIL=03_train``) and asks whether it beats the recipe.
Only validation may answer that (the headline test is read once, after the choice), and on a
few hundred images two accuracies a point apart are often the same model: this tool pairs them
on the same images (McNemar's exact test, overall and per class, with
:func:`brainmri.evaluation.paired_comparison`) so the answer says how sure it is.

Each side is a run: a profile, the project it lives in (``--a-root``, default this one) and which
of its models (``final``: model.keras; ``unguided``: a guided run's start, model_unguided.keras),
optionally with test-time augmentation (``--a-tta``: the logits averaged with the mirrored
image's, :func:`brainmri.model.predict`).
The two runs must hold the same validation images with the same labels (the same split), else it
refuses. It reads no Testing image and writes nothing into either run. E.g.:

    .venv/bin/python tools/validation_compare.py --a cpu --a-model unguided \\
        --b study_nocrop --b-root /path/to/study-clone

It prints one JSON line, then a table. About a minute per model for the `cpu` runs on 2 cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from brainmri import runs
from brainmri.evaluation import paired_comparison

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("final", "unguided")


def validation_probs(
    profile: str, root: Path, which: str, *, tta: bool = False
) -> tuple[list[str], np.ndarray, dict]:
    """One run's validation images (relative paths), their labels and the model's probabilities.

    Returns:
        ``(paths, labels, {"probs": ..., "crop": ...})``.

    Raises:
        SystemExit: the run has no such model.
    """
    from brainmri import model as mdl

    run = runs.open_run(profile, root=root, model=which == "final")
    net = run.model if which == "final" else run.unguided_model()
    if net is None:
        raise SystemExit(f"{run.paths.run_dir}: no unguided model (not a guided run)")
    rows = run.rows("val")
    _, probs = mdl.predict_files(net, run.files(rows), crop=run.crop, tta=tta)
    return list(rows["path"]), np.asarray(rows["label_index"]), {"probs": probs, "crop": run.crop}


def main(argv: list[str] | None = None) -> int:
    """Compare the two models on validation; print the JSON line and a table.

    Returns:
        0.

    Raises:
        SystemExit: bad arguments, a missing run or model, or the runs' validation splits differ.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for side in ("a", "b"):
        parser.add_argument(f"--{side}", required=True, help=f"model {side}'s profile")
        parser.add_argument(f"--{side}-root", type=Path, default=ROOT, help="its project")
        parser.add_argument(f"--{side}-model", choices=MODELS, default="final")
        parser.add_argument(f"--{side}-tta", action="store_true", help="average with the flip")
    args = parser.parse_args(argv)

    sides = {}
    for side in ("a", "b"):
        profile, root, which, tta = (
            getattr(args, f"{side}{k}") for k in ("", "_root", "_model", "_tta")
        )
        paths, labels, result = validation_probs(profile, root.resolve(), which, tta=tta)
        name = f"{root.resolve()} {profile} {which}" + (" tta" if tta else "")
        sides[side] = {"run": name, "paths": paths, **result}
        sides[side]["labels"] = labels
    a, b = sides["a"], sides["b"]
    if a["paths"] != b["paths"] or not np.array_equal(a["labels"], b["labels"]):
        raise SystemExit(
            f"the validation splits differ ({len(a['paths'])} images in {a['run']}, "
            f"{len(b['paths'])} in {b['run']}): a paired comparison needs the same images"
        )
    compared = paired_comparison(a["labels"], a["probs"], b["probs"], names=("a", "b"))
    record = {"a": a["run"], "b": b["run"], "crop": [a["crop"], b["crop"]], **compared}
    print(json.dumps(record))
    print(f"a: {a['run']}\nb: {b['run']}")
    print(f"{'':<12}{'n':>5}{'a':>8}{'b':>8}{'only a':>8}{'only b':>8}{'p':>9}")
    for name, part in [("all", compared["overall"]), *compared["per_class"].items()]:
        acc, test = part["accuracy"], part["mcnemar"]
        if part["n"] == 0:
            continue
        print(
            f"{name:<12}{part['n']:>5}{acc['a']:>8.3f}{acc['b']:>8.3f}"
            f"{test['b']:>8}{test['c']:>8}{test['p_value']:>9.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
