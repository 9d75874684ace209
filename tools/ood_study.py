"""Measure the out-of-distribution guard of a trained run, and compare its feature scores.

Fits the gate's bounds and the feature scores on the run's **training** subset, chooses each
threshold on **validation** (keeping 95%), and reports per probe kind
(:mod:`brainmri.ood.probes`) the AUROC against validation and the share flagged, for two
feature layers (the pooled backbone features, ``features.FEATURE_LAYER``, and the head's last
hidden layer, the literal penultimate one) and for the class-conditional Mahalanobis distance
(Lee et al. 2018) and the k-th nearest-neighbour distance (Sun et al. 2022) at several k,
beside the energy score (Liu et al. 2020). It reads no
test image (the headline test's flagged share is 04_evaluate's, with the method chosen here) and
writes nothing into the run; ``--out`` gets the JSON, ``--cache`` the features (a rerun then skips the model).

    .venv/bin/python tools/ood_study.py --run reports/cpu --out /tmp/ood_study.json \\
        --cache /tmp/ood_features.npz

About 8 minutes on 2 cores for the `cpu` model (5,360 images through EfficientNet-Lite1).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from brainmri import runs
from brainmri.io import file_sha256, read_json
from brainmri.model import load_model
from brainmri.ood import energy, features, report

SUBSETS = ("train", "val")
LAYERS = {"pooled": features.FEATURE_LAYER, "head": None}
"""The feature layers compared: name -> layer (None: the input of the logits layer)."""
METHODS = [("mahalanobis", 0), ("knn", 1), ("knn", 10), ("knn", 50)]


def extractor(model):
    """A model mapping images to the features of every layer compared, then the logits."""
    import keras

    heads = [features.feature_model(model, layer) for layer in LAYERS.values()]
    return keras.Model(model.inputs[0], [h.outputs[0] for h in heads] + [heads[0].outputs[1]])


def run_model(net, batches) -> dict[str, np.ndarray]:
    """{layer name: features, "logits": logits} of a dataset or an array of images."""
    outputs = net.predict(
        batches, verbose=0, **({} if hasattr(batches, "map") else {"batch_size": 32})
    )
    named = dict(zip([*LAYERS, "logits"], outputs, strict=True))
    return {k: np.asarray(v, np.float64) for k, v in named.items()}


def main(argv: list[str] | None = None) -> int:
    """Run the study; print a table per layer and score, and write the JSON.

    Args:
        argv: the command line's arguments (None: sys.argv's).

    Returns:
        0.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a run folder (reports/<profile>)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON written")
    parser.add_argument("--cache", type=Path, help="the subsets' features, reused when present")
    parser.add_argument(
        "--probe-slices", type=int, default=60, help="validation slices made foreign"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    record = read_json(args.run / "data.json")
    manifest = pd.read_csv(args.run / "manifest.csv", keep_default_na=False)
    manifest = manifest[manifest["status"] == "ok"]
    root = Path(record["root"])
    crop = runs.crop_to_brain_of(args.run)
    model = load_model(args.run / "model.keras")
    rows = {s: manifest[manifest["subset"] == s] for s in SUBSETS}
    files = {s: [str(root / p) for p in r["path"]] for s, r in rows.items()}

    from brainmri import inputs
    from brainmri.data.images import fit_image

    net = extractor(model)
    if args.cache and args.cache.is_file():
        cached = np.load(args.cache)
        data = {s: {k: cached[f"{s}_{k}"] for k in [*LAYERS, "logits"]} for s in SUBSETS}
    else:
        data = {}
        for s in SUBSETS:
            t = time.perf_counter()
            ds = inputs.make_dataset(
                files[s], None, model.input_shape[1], 64, cache="none", crop=crop
            )
            data[s] = run_model(net, ds)
            print(f"{s}: {len(files[s])} images, {time.perf_counter() - t:.0f} s", flush=True)
        if args.cache:
            np.savez(args.cache, **{f"{s}_{k}": v for s in SUBSETS for k, v in data[s].items()})
    t = time.perf_counter()
    bounds = report.fit_gate_on(files["train"])
    raw_val = report.read_raw(files["val"])
    val_reasons = report.refusals(bounds, raw_val)
    print(f"gate fitted and applied: {time.perf_counter() - t:.0f} s", flush=True)
    probe_set = report.validation_probes(files["val"], n=args.probe_slices, seed=args.seed)
    size = int(model.input_shape[1])
    probe_data = {
        kind: run_model(
            net, np.stack([fit_image(i, size, crop=crop) for i in images]).astype(np.float32)
        )
        for kind, (_, images) in probe_set.items()
    }
    probe_reasons = {
        kind: report.refusals(bounds, images) for kind, (_, images) in probe_set.items()
    }
    passed = np.array([r is None for r in val_reasons])
    energy_threshold = energy.ood_threshold(data["val"]["logits"], keep=0.95, passed=passed)
    labels = rows["train"]["label_index"].to_numpy()
    results = {}
    for layer in LAYERS:
        for method, k in METHODS:
            k_used = min(max(k, 1), len(labels))  # a small run has fewer images than k
            scorer = features.fit_scorer(method, data["train"][layer], labels, k=k_used)
            val_scores = scorer.score(data["val"][layer])
            threshold = features.choose_threshold(val_scores, passed, keep=0.95)
            measured, _ = report.measure_scores(
                val_reasons=val_reasons,
                val_scores=val_scores,
                val_logits=data["val"]["logits"],
                probes={
                    kind: (group, probe_reasons[kind], scorer.score(probe_data[kind][layer]),
                           probe_data[kind]["logits"])
                    for kind, (group, _) in probe_set.items()
                },
                threshold=threshold,
                energy_threshold=energy_threshold,
            )  # fmt: skip
            kept, kinds = measured["validation"]["kept"], measured["kinds"]
            rec = {
                "layer": layer, "method": method, "k": k, "threshold": threshold,
                "validation_kept": kept,
                "validation_refused_by_gate": measured["validation"]["refused_by_gate"],
                "kinds": kinds, "groups": measured["groups"],
            }  # fmt: skip
            name = f"{layer} {method}" + (f" k={k}" if k else "")
            results[name] = rec
            far = rec["groups"]["far"]
            print(f"\n== {name}: validation kept {kept:.3f} (gate refused {(~passed).mean():.3f}); "
                  f"far: flagged {far['flagged']:.3f}, AUROC {far['auroc']:.4f}")  # fmt: skip
            table = pd.DataFrame(kinds).T[
                ["group", "n", "flagged", "auroc", "gate", "feature_auroc", "energy_flagged",
                 "energy_auroc"]]  # fmt: skip
            print(table.to_string(float_format=lambda v: f"{v:.3f}"))
            print("groups:", json.dumps(rec["groups"]))
    payload = {
        "run": str(args.run),
        "model_sha256": file_sha256(args.run / "model.keras"),
        "energy_threshold": energy_threshold,
        "train_images": len(files["train"]),
        "seconds": time.perf_counter() - started,
        "methods": results,
    }
    args.out.write_text(json.dumps(payload, indent=1, default=float))
    print(f"\nwritten {args.out} in {payload['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
