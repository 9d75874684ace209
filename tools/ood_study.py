"""Measure the out-of-distribution guard of a trained run, and compare its feature scores.

Fits the gate's bounds and the feature scores on the run's **training** subset, chooses each
threshold on **validation** (keeping 95%), and reports per probe kind
(:mod:`brainmri.ood.probes`) the AUROC against validation and the share flagged, for the
class-conditional Mahalanobis distance (Lee et al. 2018) and the k-th nearest-neighbour
distance (Sun et al. 2022) at several k, beside the energy score (Liu et al. 2020). It reads no
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
from brainmri.ood import energy, features, probes, report

SUBSETS = ("train", "val")


def main() -> None:
    """Run the study; print a table per method and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a run folder (reports/<profile>)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON written")
    parser.add_argument("--cache", type=Path, help="features of the subsets, reused when present")
    parser.add_argument(
        "--probe-slices", type=int, default=60, help="validation slices made foreign"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    started = time.perf_counter()
    record = read_json(args.run / "data.json")
    manifest = pd.read_csv(args.run / "manifest.csv", keep_default_na=False)
    manifest = manifest[manifest["status"] == "ok"]
    root = Path(record["root"])
    crop = runs.crop_to_brain_of(args.run)
    model = load_model(args.run / "model.keras")
    rows = {s: manifest[manifest["subset"] == s] for s in SUBSETS}
    files = {s: [str(root / p) for p in r["path"]] for s, r in rows.items()}

    if args.cache and args.cache.is_file():
        cached = np.load(args.cache)
        data = {s: (cached[f"{s}_features"], cached[f"{s}_logits"]) for s in SUBSETS}
    else:
        data = {}
        for s in SUBSETS:
            t = time.perf_counter()
            data[s] = features.extract_files(model, files[s], crop=crop)
            print(f"{s}: {len(files[s])} images, {time.perf_counter() - t:.0f} s", flush=True)
        if args.cache:
            np.savez(args.cache, **{f"{s}_{n}": data[s][i] for s in SUBSETS for i, n in
                                    enumerate(("features", "logits"))})  # fmt: skip
    t = time.perf_counter()
    bounds = report.fit_gate_on(files["train"])
    raw_val = report.read_raw(files["val"])
    val_reasons = report.refusals(bounds, raw_val)
    print(f"gate fitted and applied: {time.perf_counter() - t:.0f} s", flush=True)
    pick = np.random.default_rng(args.seed).choice(len(raw_val), args.probe_slices, replace=False)
    probe_set = probes.probe_set([raw_val[i] for i in sorted(pick)], seed=args.seed)
    energy_threshold = energy.ood_threshold(data["val"][1], keep=0.95)
    labels = rows["train"]["label_index"].to_numpy()
    digest = file_sha256(args.run / "model.keras")
    results = {}
    for method, k in [("mahalanobis", 0), ("knn", 1), ("knn", 5), ("knn", 10), ("knn", 50)]:
        scorer = features.fit_scorer(method, data["train"][0], labels, k=max(k, 1))
        val_scores = scorer.score(data["val"][0])
        passed = np.array([r is None for r in val_reasons])
        threshold = features.choose_threshold(val_scores, passed, keep=0.95)
        guard = features.FeatureGuard(scorer, threshold, 0.95, digest)
        rec, _ = report.measure_guard(
            model, bounds, guard,
            val={"reasons": val_reasons, "features": data["val"][0], "logits": data["val"][1]},
            test=None,
            probes=probe_set, energy_threshold=energy_threshold, crop=crop,
        )  # fmt: skip
        name = method if method == "mahalanobis" else f"knn k={k}"
        results[name] = rec
        print(f"\n== {name}: validation kept {rec['validation']['kept']:.3f} (gate refused "
              f"{rec['validation']['refused_by_gate']:.3f})")  # fmt: skip
        table = pd.DataFrame(rec["kinds"]).T[
            ["group", "n", "flagged", "auroc", "gate", "feature_auroc", "energy_flagged",
             "energy_auroc"]]  # fmt: skip
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
        print("groups:", json.dumps(rec["groups"]))
    payload = {
        "run": str(args.run),
        "model_sha256": digest,
        "energy_threshold": energy_threshold,
        "train_images": len(files["train"]),
        "seconds": time.perf_counter() - started,
        "methods": results,
    }
    args.out.write_text(json.dumps(payload, indent=1, default=float))
    print(f"\nwritten {args.out} in {payload['seconds']:.0f} s")


if __name__ == "__main__":
    main()
