"""Write notebooks/*.ipynb from the cell lists below; the parameters cells come from params/default.yaml.

Run `python tools/make_notebooks.py` after editing; tests check that the committed notebooks match.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from brainmri.config import STAGE_SECTIONS, load_profile  # noqa: E402

SETUP = """\
from brainmri import config

cfg = config.notebook_config(STAGE, globals())  # validates the injected parameters
paths = config.paths(profile)
paths.figures_dir.mkdir(parents=True, exist_ok=True)"""

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "01_download": [
        (
            "md",
            """\
# 1 · Data: source, validation, manifest and splits

This stage finds the images, checks every file once, audits duplicates and writes the run's
**manifest** (`manifest.csv`): one row per file with its split, class, size, mode, content hash,
perceptual hash, status, and the subset it is used in (train / val / test).

The data source is resolved in this order: `data_dir` holding the Kaggle layout
(`Training|Testing/<class>/*.jpg`), then a Kaggle download (credentials from `KAGGLE_USERNAME`/`KAGGLE_KEY`
or `kaggle.json`), then the synthetic **phantom set** with known tumour masks.""",
        ),
        ("params", ""),
        (
            "code",
            SETUP
            + """
from brainmri import data, sources
from brainmri.io import write_json""",
        ),
        ("md", "## Where the images come from"),
        (
            "code",
            """\
source = sources.resolve_source(cfg, paths)
source""",
        ),
        (
            "md",
            """\
## Validation and manifest
Every file is decoded once. Unreadable, empty, truncated and non-image files are excluded and listed
with the reason; hidden files and folders are ignored. Validation is a stratified, seeded carve-out of
Training that keeps every duplicate cluster on one side; Testing is used only by the evaluation stage.""",
        ),
        (
            "code",
            """\
manifest = sources.build_manifest(source["root"], cfg)
data.write_manifest(manifest, paths.manifest)
manifest.groupby(["split", "subset", "label"]).size().unstack(fill_value=0)""",
        ),
        (
            "code",
            """\
excluded = manifest[manifest["status"] != "ok"][["path", "reason"]]
print(f"{len(excluded)} excluded files")
excluded""",
        ),
        ("md", "## Duplicate and leakage audit (summary; details in the EDA report)"),
        (
            "code",
            """\
record = sources.data_record(source, manifest, paths.manifest)
write_json(paths.data_json, record)
write_json(paths.stage_metrics(STAGE), record)
{k: v for k, v in record["audit"].items() if k != "example_pairs"}""",
        ),
    ],
    "02_eda": [
        (
            "md",
            """\
# 2 · Exploratory data analysis

Class balance, what the images look like, their sizes and modes, intensity distributions per class,
the duplicate and leakage audit, and the files that were excluded.""",
        ),
        ("params", ""),
        (
            "code",
            SETUP
            + """
from brainmri import sources
from brainmri.plotting import data as dplot
from brainmri.plotting.common import save_figure
from brainmri.io import write_json

record, manifest = sources.load_run_data(paths)
root = record["root"]""",
        ),
        ("md", "## Class counts per split"),
        (
            "code",
            """\
ok = manifest[manifest["status"] == "ok"]
counts = ok.groupby(["label", "split"]).size().unstack(fill_value=0)
display(counts)
fig = dplot.plot_class_counts(manifest)
save_figure(fig, paths.figures_dir, "eda_class_counts")""",
        ),
        ("md", "## Sample images per class"),
        (
            "code",
            """\
fig = dplot.plot_sample_grid(manifest, root, eda_samples_per_class, seed)
save_figure(fig, paths.figures_dir, "eda_samples")""",
        ),
        ("md", "## Image sizes and modes"),
        (
            "code",
            """\
display(ok.groupby(["mode", "width", "height"]).size().rename("files").to_frame())
fig = dplot.plot_size_mode(manifest)
save_figure(fig, paths.figures_dir, "eda_size_mode")""",
        ),
        ("md", "## Intensity histograms per class"),
        (
            "code",
            """\
fig = dplot.plot_intensity_histograms(manifest, root, 200, seed)
save_figure(fig, paths.figures_dir, "eda_intensity")""",
        ),
        (
            "md",
            """\
## Duplicate and leakage audit
Exact duplicates share a content hash; near duplicates have perceptual hashes within the configured
Hamming distance. Testing images that duplicate a Training image inflate test accuracy, so the
evaluation also reports a de-duplicated Testing split.""",
        ),
        (
            "code",
            """\
audit = dict(record["audit"])  # computed once by 01_download
pairs = audit.pop("example_pairs", [])
display(audit)
if pairs:
    fig = dplot.plot_duplicate_pairs(manifest, root, pairs[:6])
    save_figure(fig, paths.figures_dir, "eda_duplicate_pairs")
conflicts = manifest[manifest.get("label_conflict", False) == True]  # noqa: E712
print(f"{len(conflicts)} images sit in clusters holding different labels")
conflicts[["path", "split", "label", "exact_group", "near_group"]].head(20)""",
        ),
        ("md", "## Excluded files"),
        (
            "code",
            """\
excluded = manifest[manifest["status"] != "ok"][["path", "split", "label", "reason"]]
write_json(paths.stage_metrics(STAGE), {"excluded": int(len(excluded)), "figures": sorted(
    p.name for p in paths.figures_dir.glob("eda_*.png"))})
excluded if len(excluded) else print("no file was excluded")""",
        ),
    ],
    "03_train": [
        (
            "md",
            """\
# 3 · Training

Builds the configured model (reference: EfficientNetB1 at 240x240, global max pooling, two
Dense+Dropout layers and a 4-way softmax), trains it with Adam and categorical cross-entropy on the
training subset with the reference augmentation, and selects the checkpoint with the best
**validation** accuracy (Testing is never looked at here). A run killed mid-training resumes from its
last finished epoch when the pipeline runs again.""",
        ),
        ("params", ""),
        (
            "code",
            SETUP
            + """
from brainmri import inputs, model as mdl, sources, training
from brainmri.io import write_json
from brainmri.plotting.common import plot_training_curves, save_figure

record, manifest = sources.load_run_data(paths)
root = paths.root
started = training.now()
training.seed_everything(seed, deterministic)""",
        ),
        ("md", "## Model"),
        (
            "code",
            """\
model = mdl.build_model(cfg, root)
counts = mdl.parameter_counts(model)
print(f"{model.name}: {counts['total']:,} parameters ({counts['trainable']:,} trainable)")
model.summary(line_length=110, expand_nested=False, show_trainable=True)""",
        ),
        ("md", "## Input pipeline"),
        (
            "code",
            """\
_, train_files, train_labels = sources.subset_files(manifest, record["root"], "train")
_, val_files, val_labels = sources.subset_files(manifest, record["root"], "val")
print(f"train: {len(train_files)} images, validation: {len(val_files)} images")
cache_args = {"cache": cache, "cache_dir": paths.cache_dir, "cache_tag": record["manifest_sha256"]}
train_ds = inputs.make_dataset(
    train_files, train_labels, image_size, batch_size, shuffle=True, seed=seed,
    augment=inputs.augmentation(cfg, seed), **cache_args,
)
val_ds = inputs.make_dataset(val_files, val_labels, image_size, batch_size, **cache_args)""",
        ),
        ("md", "## Training (one line per epoch)"),
        (
            "code",
            """\
model, history, status = training.train_or_resume(
    model, train_ds, val_ds, cfg, record["manifest_sha256"], paths.model, paths.history,
    paths.state_dir / "train",
)
best = training.best_epoch(history)
print(f"best epoch {best.get('epoch')}: validation accuracy {best.get('val_accuracy', float('nan')):.4f}")""",
        ),
        ("md", "## Training curves"),
        (
            "code",
            """\
fig = plot_training_curves(history)
save_figure(fig, paths.figures_dir, "train_curves")
history.round(4)""",
        ),
        ("md", "## Run metadata (`run.json`)"),
        (
            "code",
            """\
run = training.run_metadata(
    cfg, model, history, manifest_sha256=record["manifest_sha256"], root=root, started=started,
    status=status,
)
write_json(paths.run_json, run)
write_json(paths.stage_metrics(STAGE), run["summary"])
run["summary"]""",
        ),
    ],
    "04_evaluate": [
        (
            "md",
            """\
# 4 · Evaluation

Everything here is computed on **Testing**, which no earlier stage touched: the official split and the
de-duplicated one (Testing images that duplicate a Training image removed), side by side. Confidence
intervals are 95% percentile bootstrap intervals; calibration is checked before and after temperature
scaling fitted on the validation subset.""",
        ),
        ("params", ""),
        (
            "code",
            SETUP
            + """
from pathlib import Path

import pandas as pd

from brainmri import evaluation, inputs, model as mdl, sources
from brainmri.config import CLASS_NAMES
from brainmri.plotting import evaluation as eplot
from brainmri.plotting.common import plot_image_gallery, save_figure
from brainmri.io import write_json

record, manifest = sources.load_run_data(paths)
model = mdl.load_model(paths.model)
image_size = model.input_shape[1]""",
        ),
        ("md", "## Predictions"),
        (
            "code",
            """\
def predict(name, tta=False):
    rows, files, _ = sources.subset_files(manifest, record["root"], name)
    ds = inputs.make_dataset(files, None, image_size, 64, cache="none")
    logits, probs = mdl.predict(model, ds, tta=tta)
    return rows, logits, probs

val_rows, val_logits, _ = predict("val")
temperature = evaluation.fit_temperature(val_logits, val_rows["label_index"].to_numpy())
print(f"temperature fitted on validation: T = {temperature:.3f}")
results = {}
for split, name in (("official", "test"), ("dedup", "test_dedup")):
    rows, logits, probs = predict(name)
    results[split] = (rows, logits, probs)
    print(f"{split}: {len(rows)} images")""",
        ),
        ("md", "## Metrics with 95% confidence intervals"),
        (
            "code",
            """\
blocks = {}
for split, (rows, logits, probs) in results.items():
    blocks[split] = evaluation.evaluate_split(
        rows["label_index"].to_numpy(), probs, logits, rows["path"].tolist(),
        n_resamples=bootstrap_resamples, seed=seed, n_bins=calibration_bins, temperature=temperature,
    )
table = pd.DataFrame({
    split: {
        "images": b["summary"]["n"], "accuracy": b["summary"]["accuracy"],
        "accuracy 95% CI": "{low:.4f} to {high:.4f}".format(**b["ci"]["accuracy"]),
        "macro F1": b["summary"]["macro"]["f1"], "Cohen's kappa": b["summary"]["cohen_kappa"],
        "MCC": b["summary"]["mcc"], "ECE": b["calibration"]["ece"],
    } for split, b in blocks.items()
})
table""",
        ),
        (
            "code",
            """\
pd.concat({
    split: pd.DataFrame(b["summary"]["per_class"]).T[["precision", "recall", "specificity", "f1", "roc_auc", "support"]]
    for split, b in blocks.items()
}, axis=1).round(4)""",
        ),
        (
            "code",
            """\
for split, b in blocks.items():
    fig = eplot.plot_ci_forest(b["ci"])
    fig.suptitle(f"95% bootstrap intervals: {split} Testing")
    save_figure(fig, paths.figures_dir, f"eval_ci_{split}")""",
        ),
        ("md", "## Confusion matrices"),
        (
            "code",
            """\
for split, b in blocks.items():
    fig = eplot.plot_confusion_matrices(b["summary"], CLASS_NAMES)
    fig.suptitle(f"{split} Testing")
    save_figure(fig, paths.figures_dir, f"eval_confusion_{split}")""",
        ),
        ("md", "## ROC and precision-recall curves (one-vs-rest)"),
        (
            "code",
            """\
for split, (rows, _, probs) in results.items():
    curves = evaluation.roc_pr_curves(rows["label_index"].to_numpy(), probs)
    fig = eplot.plot_roc_pr(curves, blocks[split]["summary"])
    fig.suptitle(f"{split} Testing")
    save_figure(fig, paths.figures_dir, f"eval_roc_pr_{split}")""",
        ),
        ("md", "## Calibration: reliability before and after temperature scaling"),
        (
            "code",
            """\
for split, b in blocks.items():
    cal = b["calibration"]
    fig = eplot.plot_reliability(cal["reliability"], cal["scaled"]["reliability"])
    fig.suptitle(f"{split} Testing: before and after temperature scaling (T = {temperature:.2f})")
    save_figure(fig, paths.figures_dir, f"eval_reliability_{split}")
pd.DataFrame({
    split: {"ECE": c["ece"], "Brier": c["brier"], "NLL": c["nll"], "ECE scaled": c["scaled"]["ece"],
            "Brier scaled": c["scaled"]["brier"], "NLL scaled": c["scaled"]["nll"]}
    for split, c in ((s, b["calibration"]) for s, b in blocks.items())
}).round(4)""",
        ),
        ("md", "## Test-time augmentation (horizontal flip)"),
        (
            "code",
            """\
tta_report = {}
if tta:
    for split, name in (("official", "test"), ("dedup", "test_dedup")):
        rows, _, probs_tta = predict(name, tta=True)
        y = rows["label_index"].to_numpy()
        tta_report[split] = {
            "accuracy_without": blocks[split]["summary"]["accuracy"],
            "accuracy_with": float((probs_tta.argmax(1) == y).mean()),
        }
    display(pd.DataFrame(tta_report))
else:
    print("test-time augmentation is off (tta: false)")""",
        ),
        (
            "md",
            """\
## Error analysis
The most confident mistakes and the least confident correct predictions, with their files.""",
        ),
        (
            "code",
            """\
rows, logits, probs = results["official"]
errors = evaluation.error_analysis(
    rows["label_index"].to_numpy(), probs, rows["path"].tolist(), error_gallery_size
)
for kind, frame in errors.items():
    display(frame)
    if len(frame):
        images = inputs.load_batch([Path(record["root"]) / p for p in frame["path"]], image_size)
        titles = [f"{r.path}\\ntrue {r.true} · pred {r.predicted} ({r.confidence:.2f})" for r in frame.itertuples()]
        fig = plot_image_gallery(images, titles)
        fig.suptitle(kind.replace("_", " "))
        save_figure(fig, paths.figures_dir, f"eval_{kind}")""",
        ),
        (
            "code",
            """\
write_json(paths.stage_metrics(STAGE), {
    **blocks, "temperature": temperature, "tta": tta_report,
    "errors": {k: v.to_dict(orient="records") for k, v in errors.items()},
})
print(f"accuracy: official {blocks['official']['summary']['accuracy']:.4f}, "
      f"de-duplicated {blocks['dedup']['summary']['accuracy']:.4f}")""",
        ),
    ],
    "05_gradcam": [
        (
            "md",
            """\
# 5 · Explainability: Grad-CAM

Grad-CAM weighs the last convolutional feature map by the gradient of the chosen class's
**pre-softmax** score. This report shows the reference view (original, heatmap, overlay, class
probabilities), galleries per class, the mistakes, several methods side by side, and, where the data
set has tumour masks (the phantom set), how well each map localises the lesion compared with random
and centre-prior baselines, how faithful it is (deletion/insertion), and a model-randomisation
sanity check.""",
        ),
        ("params", ""),
        (
            "code",
            SETUP
            + """
from pathlib import Path

import numpy as np

from brainmri import explain, inputs, model as mdl, phantom, sources
from brainmri.config import CLASS_NAMES, TUMOUR_CLASSES
from brainmri.plotting import explain as xplot
from brainmri.plotting.common import save_figure
from brainmri.io import write_json

record, manifest = sources.load_run_data(paths)
model = mdl.load_model(paths.model)
image_size = model.input_shape[1]
layer = cam_layer or explain.find_target_layer(model)
print(f"explaining layer '{layer}' of {model.name}")
test, files, _ = sources.subset_files(manifest, record["root"], "test")
test = test.reset_index(drop=True)
_, probs = mdl.predict(model, inputs.make_dataset(files, None, image_size, 64, cache="none"))
test["predicted"] = probs.argmax(1)
test["correct"] = test["predicted"] == test["label_index"]""",
        ),
        ("md", "## The reference view"),
        (
            "code",
            """\
candidates = test[test["correct"] & (test["label"] != "notumor")]
first = (candidates if len(candidates) else test).iloc[0]
print(f"{first['path']}: true {first['label']}, predicted {CLASS_NAMES[first['predicted']]}")
image = inputs.load_batch([Path(record["root"]) / first["path"]], image_size)[0]
viz = explain.VizGradCAM(model, image, interpolant=interpolant, plot_results=True, layer_name=layer)
overlay, heatmap = viz  # the reference API: the overlay and the Grad-CAM map in [0, 1]
save_figure(viz.figure, paths.figures_dir, "cam_reference_view")""",
        ),
        ("md", "## Galleries: correct predictions per class, and the mistakes"),
        (
            "code",
            """\
rng = np.random.default_rng(seed)
def gallery(rows, name, title):
    if rows.empty:
        print(f"{title}: none")
        return
    batch = inputs.load_batch([Path(record["root"]) / p for p in rows["path"]], image_size)
    maps = explain.explain(cam_method, model, batch, layer_name=layer)
    overlays = [explain.overlay(img.astype(np.uint8), m, interpolant) for img, m in zip(batch, maps, strict=True)]
    titles = [f"{r.label} -> {CLASS_NAMES[r.predicted]}" for r in rows.itertuples()]
    fig = xplot.plot_cam_gallery(batch, overlays, titles, ncols=4)
    fig.suptitle(title)
    save_figure(fig, paths.figures_dir, name)

for label in CLASS_NAMES:
    rows = test[test["correct"] & (test["label"] == label)]
    gallery(rows.sample(min(len(rows), cam_images_per_class), random_state=seed), f"cam_gallery_{label}", f"{cam_method}: correct {label}")
mistakes = test[~test["correct"]]
gallery(mistakes.head(max(cam_images_per_class, 4)), "cam_gallery_mistakes", f"{cam_method}: mistakes")""",
        ),
        ("md", "## Methods side by side"),
        (
            "code",
            """\
picks = test[test["label"].isin(TUMOUR_CLASSES)].groupby("label").head(1)
batch = inputs.load_batch([Path(record["root"]) / p for p in picks["path"]], image_size)
maps = {m: explain.explain(m, model, batch, layer_name=layer, seed=seed) for m in cam_methods_compare}
masks = [phantom.load_mask(Path(record["root"]) / p, Path(record["root"]), image_size) for p in picks["path"]]
fig = xplot.plot_methods_side_by_side(batch, maps, masks if all(m is not None for m in masks) else None)
save_figure(fig, paths.figures_dir, "cam_methods")""",
        ),
        (
            "md",
            """\
## Localisation against the tumour masks
Pointing game (a hit when the map's maximum lies within `pointing_tolerance` of the image side of
the mask, the standard 15 px at 224 px; `pointing_rate_strict` allows no slack), energy share inside the mask (and its ratio to
the mask's area fraction), IoU of the Otsu-thresholded map, and deletion/insertion AUC. Baselines: a
random smooth map and a centred Gaussian prior.""",
        ),
        (
            "code",
            """\
scored = test[test["label"].isin(TUMOUR_CLASSES)].groupby("label").head(cam_eval_images)
root = Path(record["root"])
masks = [phantom.load_mask(root / p, root, image_size) for p in scored["path"]]
localisation = {}
if scored.empty or any(m is None for m in masks):
    print("this data set has no tumour masks: localisation is not scored")
else:
    batch = inputs.load_batch([root / p for p in scored["path"]], image_size)
    report = explain.localisation_report(
        model, batch, np.stack(masks), scored["label"].tolist(), cam_methods_compare, seed, faithfulness_steps,
        layer_name=layer, tolerance=pointing_tolerance * image_size,
    )
    localisation = explain.summarise_localisation(report)
    fig = xplot.plot_localisation_summary(localisation)
    save_figure(fig, paths.figures_dir, "cam_localisation")
    display(report.groupby(["label", "method"]).mean(numeric_only=True).round(3))""",
        ),
        (
            "md",
            """\
## Sanity check: model-parameter randomisation
Maps of a trained model should change when its weights are re-initialised (Adebayo et al. 2018); a
high rank correlation would mean the map reflects the image, not what the model learned. A
correlation is undefined where the randomised map is flat; if every one is, nothing of the trained
explanation survived, which passes too.""",
        ),
        (
            "code",
            """\
sample = test.groupby("label").head(4)
batch = inputs.load_batch([Path(record["root"]) / p for p in sample["path"]], image_size)
trained_maps, random_maps = explain.randomization_maps(model, batch, seed, layer_name=layer)
sanity = {"seed": seed, **explain.randomization_check(trained_maps, random_maps)}
rho = sanity["spearman_mean"]
shown = f"{rho:.3f}" if rho is not None else "undefined (the randomised model's maps are flat)"
print(f"mean Spearman correlation, trained vs re-initialised weights: {shown} over "
      f"{sanity['n_images'] - sanity['n_undefined']} of {sanity['n_images']} images; "
      f"{'passes' if sanity['passed'] else 'FAILS'} (below {sanity['max_correlation']} expected)")
first = np.flatnonzero(~sample["label"].duplicated().to_numpy())  # one image per class
fig = xplot.plot_methods_side_by_side(
    batch[first], {"trained": trained_maps[first], "re-initialised": random_maps[first]}
)
save_figure(fig, paths.figures_dir, "cam_randomization")
write_json(paths.stage_metrics(STAGE), {
    "layer": layer, "method": cam_method, "localisation": localisation, "randomization": sanity,
})""",
        ),
    ],
}


def parameters_source(stage: str) -> str:
    """The parameters cell: the default profile's values of the stage's sections."""
    params = load_profile("default", root=ROOT)
    lines = [f'STAGE = "{stage}"', 'profile = "default"']
    for section in STAGE_SECTIONS[stage]:
        lines.append(f"# {section}")
        lines += [f"{key} = {value!r}" for key, value in params[section].items()]
    return "\n".join(lines)


def build(stage: str) -> nbformat.NotebookNode:
    """One notebook from its cell list."""
    cells = []
    for kind, text in NOTEBOOKS[stage]:
        if kind == "md":
            cells.append(new_markdown_cell(text))
        elif kind == "params":
            cells.append(new_code_cell(parameters_source(stage), metadata={"tags": ["parameters"]}))
        else:
            cells.append(new_code_cell(text))
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "brainmri",
        "display_name": "Python (brainmri)",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{stage}-{i:02d}"
    return nb


def main() -> None:
    """Write every notebook."""
    for stage in NOTEBOOKS:
        nbformat.write(build(stage), ROOT / "notebooks" / f"{stage}.ipynb")


if __name__ == "__main__":
    main()
