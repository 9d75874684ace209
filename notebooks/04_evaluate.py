# %% [markdown]
# # 4 · Evaluation
#
# Everything here is computed on the **test** subset, which no earlier stage touched. The headline
# is computed on the images the manifest marks `headline_test`: none has a copy of any kind (as it
# is, mirrored or re-cut) in train or validation. Under `protocol: grouped` that is the whole test
# subset (whole copy groups held out from the pooled folders); under `official` it is the Testing
# images without a copy in Training, and the official Testing folder is reported beside it, copies
# included, for comparison with published figures. Confidence intervals are 95% percentile
# intervals of a cluster bootstrap (copies resampled together), exact (Clopper-Pearson) where few
# copy groups or a perfect score make the bootstrap degenerate; calibration is checked before and
# after temperature scaling fitted on the validation subset.

# %%
import numpy as np
import pandas as pd
from IPython.display import display

from brainmri import config, evaluation, ood, runs, sources
from brainmri import model as mdl
from brainmri.config import CLASS_NAMES
from brainmri.io import file_sha256, write_json
from brainmri.plotting import evaluation as eplot
from brainmri.plotting.common import plot_image_gallery, save_figure
from brainmri.reports import tables

# %% tags=["parameters"]
STAGE = "04_evaluate"
profile = "default"

# %%
cfg = config.notebook_config(STAGE, globals())  # validates the injected parameters
run = runs.open_run(profile)  # records, manifest, model; images prepared as training prepared them
paths, record, model, crop = run.paths, run.record, run.model, run.crop

# %% [markdown]
# ## Predictions
# The temperature is fitted on validation, never on Testing. A temperature well above 1 means the
# model was over-confident; close to 1, its probabilities were already about right.

# %%
val_rows = run.rows("val")
val_files = run.files(val_rows)
# the pooled backbone features too: the out-of-distribution guard below is fitted on them
val_features, val_logits = ood.extract_files(model, val_files, crop=crop)
temperature = evaluation.fit_temperature(val_logits, val_rows["label_index"].to_numpy())
print(f"temperature fitted on validation: T = {temperature:.3f}")
# The headline images are a part of the test subset: predicted once, then sliced.
test_rows = run.rows("test")
test_files = run.files(test_rows)
test_features, test_logits = ood.extract_files(model, test_files, crop=crop)
test_probs = evaluation.softmax(test_logits)
keep = {"headline": test_rows["headline_test"].to_numpy()}
if record["protocol"] == "official":  # the published Testing folder, copies included
    keep["official"] = np.ones(len(test_rows), dtype=bool)
print(f"protocol: {record['protocol']}")
results = {
    split: (test_rows[rows], test_logits[rows], test_probs[rows]) for split, rows in keep.items()
}
for split, (rows, _, _) in results.items():
    print(f"{split}: {len(rows)} images")

# %% [markdown]
# ## Metrics with 95% confidence intervals
# The headline block is the result; an official block, where there is one, counts copies of training
# images as if they were new scans. The intervals come from a cluster bootstrap: the copies of one
# picture are resampled together, since they are one piece of evidence, not several.

# %%
settings = {  # the same for every block: intervals, calibration bins
    "n_resamples": cfg["bootstrap_resamples"],
    "seed": cfg["seed"],
    "n_bins": cfg["calibration_bins"],
}
blocks = {
    split: evaluation.evaluate_split(
        rows["label_index"].to_numpy(),
        probs,
        logits,
        rows["path"].tolist(),
        temperature=temperature,
        groups=sources.copy_clusters(rows),
        **settings,
    )  # fmt: skip
    for split, (rows, logits, probs) in results.items()
}
tables.headline_table(blocks)

# %% [markdown]
# Per class: recall is the sensitivity. A tumour class with low recall is the clinically costly
# error (a tumour called something else); the confusion matrices below show what it is taken for.

# %%
tables.per_class_table(blocks).round(4)

# %%
for split, b in blocks.items():
    fig = eplot.plot_ci_forest(b["ci"])
    fig.suptitle(f"95% intervals: {split} test")
    save_figure(fig, paths.figures_dir, f"eval_ci_{split}")

# %% [markdown]
# ## Confusion matrices
# Off-diagonal cells are mistakes; the row-normalised matrix reads as "of the true class, the share
# predicted as each class".

# %%
for split, b in blocks.items():
    fig = eplot.plot_confusion_matrices(b["summary"], CLASS_NAMES)
    fig.suptitle(f"{split} test")
    save_figure(fig, paths.figures_dir, f"eval_confusion_{split}")

# %% [markdown]
# ## ROC and precision-recall curves (one-vs-rest)
# Curves close to the top-left (ROC) and top-right (precision-recall) corners separate the class
# well at every threshold, not only at the arg-max.

# %%
for split, (rows, _, probs) in results.items():
    curves = evaluation.roc_pr_curves(rows["label_index"].to_numpy(), probs)
    fig = eplot.plot_roc_pr(curves, blocks[split]["summary"])
    fig.suptitle(f"{split} test")
    save_figure(fig, paths.figures_dir, f"eval_roc_pr_{split}")

# %% [markdown]
# ## Calibration: reliability before and after temperature scaling
# Bars on the diagonal mean a predicted 0.8 is right 80% of the time; a lower ECE after scaling
# means the temperature fitted on validation carried over to Testing.

# %%
for split, b in blocks.items():
    cal = b["calibration"]
    fig = eplot.plot_reliability(cal["reliability"], cal["scaled"]["reliability"])
    fig.suptitle(f"{split} test: before and after temperature scaling (T = {temperature:.2f})")
    save_figure(fig, paths.figures_dir, f"eval_reliability_{split}")
tables.calibration_table(blocks).round(4)

# %% [markdown]
# ## Guided against unguided, on the same images
# A lesion-guided run keeps the fine-tuned model its guided phase started from
# (`model_unguided.keras`): the same data, seed and epochs, only the guided phase differs. Both are
# scored on the headline images; McNemar's exact test asks whether the images only one of them gets
# right are more than chance would split unevenly (per class: on that class's images only; not
# corrected for four comparisons). An unguided run has nothing to compare and says so.

# %%
paired = None
unguided = run.unguided_model()  # None unless the run had a guided phase
if unguided is not None:
    rows, _, probs = results["headline"]
    headline_files = run.files(rows)
    u_val_logits, _ = mdl.predict_files(unguided, val_files, crop=crop)
    u_logits, u_probs = mdl.predict_files(unguided, headline_files, crop=crop)
    u_temperature = evaluation.fit_temperature(u_val_logits, val_rows["label_index"].to_numpy())
    blocks["unguided"] = evaluation.evaluate_split(
        rows["label_index"].to_numpy(), u_probs, u_logits, rows["path"].tolist(),
        temperature=u_temperature, groups=sources.copy_clusters(rows), **settings,
    )  # fmt: skip
    paired = evaluation.paired_comparison(
        rows["label_index"].to_numpy(), u_probs, probs, names=("unguided", "guided")
    )
    display(tables.p_values_as_text(tables.paired_table(paired).round(4)))
else:
    print("no guided phase in this run: nothing to pair")

# %% [markdown]
# ## Test-time augmentation (horizontal flip)
# Averaging each image with its mirror image: a gain of a few tenths of a point is typical; a large
# gain would mean the model is sensitive to left-right orientation.

# %%
tta_report = {}
if cfg["tta"]:
    _, test_probs_tta = mdl.predict_files(model, test_files, tta=True, crop=crop)
    for split, rows in keep.items():
        y = test_rows["label_index"].to_numpy()[rows]
        tta_report[split] = {
            "accuracy_without": blocks[split]["summary"]["accuracy"],
            "accuracy_with": float((test_probs_tta[rows].argmax(1) == y).mean()),
        }
    display(pd.DataFrame(tta_report))
else:
    print("test-time augmentation is off (tta: false)")

# %% [markdown]
# ## Out-of-distribution guard (for predicting new scans)
# `brainmri predict` flags a scan in layers. First an **input gate** looks at the scan's own
# pixels: a colour picture, a blank image, or one without a head of plausible size and shape on
# a dark background is refused, each with its reason; the plausible ranges are the training
# images' 0.1st to 99.9th percentiles. Then the **feature distance**: the distance of the
# model's pooled backbone features (L2-normalised) to their 10th nearest neighbour among the
# training subset's (Sun et al. 2022). Its threshold is chosen on **validation** so that
# the two layers together keep 95% of it; the fitted statistics go to `ood.npz` beside the model,
# which predict reads. The energy score of the logits (Liu et al. 2020) is kept as the fallback
# for a model without `ood.npz`.
#
# The guard is measured on foreign images made offline (`brainmri.ood.probes`): **far** kinds
# (photographs, logos, noise, blank and gradient images, X-ray-like drawings, CT and other
# modalities, terrain maps), **near** kinds (validation slices turned a quarter or inverted,
# MRI of another kind) and **stress** kinds built to slip past it (grey photographs, a photograph
# cut to a head-like ellipse, slices in another scanner-like contrast). For each: the AUROC
# against validation (1 = every foreign image scores above every validation slice) and the share
# flagged at the threshold. The headline test images choose nothing here; their flagged share is
# the false-alarm rate a user would see on new in-distribution scans.

# %%
train_rows = run.rows("train")
headline_rows, headline_logits = results["headline"][:2]
ood_record, guard_parts = ood.evaluate_guard(
    model,
    path=paths.ood,  # beside model.keras; the pipeline records its hash
    train_files=run.files(train_rows),
    train_labels=train_rows["label_index"].to_numpy(),
    val={"files": val_files, "features": val_features, "logits": val_logits},
    test={
        "files": run.files(headline_rows),
        "features": test_features[keep["headline"]],
        "logits": headline_logits,
    },
    crop=crop,
    model_sha256=file_sha256(paths.model),
    seed=cfg["seed"],
    provenance={"manifest_sha256": record.get("manifest_sha256", "")},
)
guard_record = ood_record["guard"]
fig = eplot.plot_guard_scores(guard_parts, guard_record["threshold"])
save_figure(fig, paths.figures_dir, "eval_ood")
print(
    f"validation kept {guard_record['validation']['kept']:.3f} "
    f"(the gate refused {guard_record['validation']['refused_by_gate']:.3f}); "
    f"headline test flagged {guard_record['headline_test']['flagged']:.3f}"
)
tables.ood_table(guard_record).round(3)

# %% [markdown]
# Read the table by group. A far kind flagged near 100% with an AUROC near 1 is caught; a near or
# stress kind flagged little is one the guard lets through, and its predictions are as unreliable
# as the image is foreign. `gate` is the share the input gate refused before the feature
# distance; `energy flagged` is what the fallback (gate and energy score, without `ood.npz`)
# would flag.

# %% [markdown]
# ## Error analysis
# The most confident mistakes and the least confident correct predictions, with their files.
# Confident mistakes are worth opening: they are often label noise or an unusual view.

# %%
rows, logits, probs = results["headline"]
errors = evaluation.error_analysis(
    rows["label_index"].to_numpy(), probs, rows["path"].tolist(), cfg["error_gallery_size"]
)
for kind, frame in errors.items():
    display(frame)
    if len(frame):
        images = run.images(frame["path"])
        titles = [
            f"{r.path}\ntrue {r.true} · pred {r.predicted} ({r.confidence:.2f})"
            for r in frame.itertuples()
        ]
        fig = plot_image_gallery(images, titles)
        fig.suptitle(kind.replace("_", " "))
        save_figure(fig, paths.figures_dir, f"eval_{kind}")

# %%
write_json(
    paths.stage_metrics(STAGE),
    {
        **blocks,
        "temperature": temperature,
        "paired": paired,
        "ood": ood_record,
        "tta": tta_report,
        "errors": {k: v.to_dict(orient="records") for k, v in errors.items()},
    },
)
print(", ".join(f"{s} accuracy {b['summary']['accuracy']:.4f}" for s, b in blocks.items()))
