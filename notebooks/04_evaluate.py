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
from brainmri.io import write_json
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
val_logits, _ = mdl.predict_files(model, val_files, crop=crop)
temperature = evaluation.fit_temperature(val_logits, val_rows["label_index"].to_numpy())
print(f"temperature fitted on validation: T = {temperature:.3f}")
# The headline images are a part of the test subset: predicted once, then sliced.
test_rows = run.rows("test")
test_files = run.files(test_rows)
test_logits, test_probs = mdl.predict_files(model, test_files, crop=crop)
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
    display(tables.paired_table(paired).round(4))
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
# ## Out-of-distribution flag (for predicting new scans)
# The energy score of the logits (Liu et al. 2020) is lower for images unlike the training data. The
# threshold keeps 95% of the **validation** images; `brainmri predict` flags any image below it.
# Foreign images made offline show what it catches: validation images turned a quarter, their
# negatives, and a photograph. A group mostly left of the line is flagged; one to its right would be
# classified silently.

# %%
val_images = run.images(val_rows.head(64))
ood_record, groups = ood.ood_summary(
    model, val_logits, val_images, {"headline test": results["headline"][1]}, keep=0.95
)
fig = eplot.plot_ood_scores(groups, ood_record["threshold"])
save_figure(fig, paths.figures_dir, "eval_ood")
pd.Series(ood_record["flagged"], name="share flagged").round(3)

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
