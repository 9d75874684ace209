# %% [markdown]
# # 2 · Exploratory data analysis
#
# Class balance, what the images look like, their sizes and modes, intensity distributions per class,
# the duplicate and leakage audit, and the files that were excluded.

# %%
from pathlib import Path

from IPython.display import display

from brainmri import config, sources
from brainmri.io import write_json
from brainmri.plotting import data as dplot
from brainmri.plotting.common import save_figure

# %% tags=["parameters"]
STAGE = "02_eda"
profile = "default"

# %%
cfg = config.notebook_config(STAGE, globals())  # validates the injected parameters
paths = config.paths(profile)
record, manifest = sources.load_run_data(paths)
data_root = Path(record["root"])

# %% [markdown]
# ## Class counts per split
# A class far smaller than the others would bias the model towards the rest; here they should be
# within a factor of about 1.3 of each other.

# %%
ok = manifest[manifest["status"] == "ok"]
counts = ok.groupby(["label", "split"]).size().unstack(fill_value=0)
display(counts)
fig = dplot.plot_class_counts(manifest)
save_figure(fig, paths.figures_dir, "eda_class_counts")

# %% [markdown]
# ## Sample images per class
# Drawn at random, as decoded (before any crop to the head): look for labels that do not match what
# you see, and for views (axial, coronal, sagittal) that differ between classes.

# %%
fig = dplot.plot_sample_grid(manifest, data_root, cfg["eda_samples_per_class"], cfg["seed"])
save_figure(fig, paths.figures_dir, "eda_samples")

# %% [markdown]
# ## Image sizes and modes
# Every image is resized to the model's input, so mixed sizes are fine; a size or colour mode found in
# one class only would be a shortcut the model could learn instead of the anatomy.

# %%
display(ok.groupby(["mode", "width", "height"]).size().rename("files").to_frame())
fig = dplot.plot_size_mode(manifest)
save_figure(fig, paths.figures_dir, "eda_size_mode")

# %% [markdown]
# ## Intensity histograms per class
# Classes whose grey-level distributions differ strongly could be told apart by brightness alone.

# %%
fig = dplot.plot_intensity_histograms(manifest, data_root, 200, cfg["seed"])
save_figure(fig, paths.figures_dir, "eda_intensity")

# %% [markdown]
# ## How much of the frame the head fills
# The classes were gathered from different collections, and their framing differs: how wide the
# black margins are, how much of the image the head takes. A model can tell the classes apart by
# that alone, and its Grad-CAM then lights the margins rather than the tumour. `model.crop_to_brain`
# cuts every image to the square around the head (the yellow box) before resizing, which removes
# the cue; the box plots show how strong it is in this data.

# %%
fig = dplot.plot_head_fill(manifest, data_root, 200, cfg["seed"])
save_figure(fig, paths.figures_dir, "eda_head_fill")

# %% [markdown]
# ## Duplicate and leakage audit
# Exact duplicates share a content hash. A near copy is a pair whose perceptual hashes are close
# (Testing is compared with all of Training) *and* whose pixels confirm it: the rank correlation of
# their 64x64 grey thumbnails reaches `near_dup_correlation` (a perceptual hash alone pairs different
# pictures). Testing images with a copy in Training inflate the official accuracy, so 04_evaluate
# leads with the clean split, which leaves them out. A copy filed under another label is label noise.

# %%
audit = dict(record["audit"])  # computed once by 01_download
evidence = audit.pop("threshold_pairs", {})
display(audit)

# %% [markdown]
# The evidence for the threshold: Testing images and their most similar Training image just
# **below** it (kept in the clean split) and just **above** it (removed). Above, the pairs should be
# one slice (re-encoded, rescaled or with another contrast); below, neighbouring slices or other
# images.

# %%
threshold = audit["min_correlation"]
for side in ("below", "above"):
    if evidence.get(side):
        fig = dplot.plot_duplicate_pairs(
            manifest,
            data_root,
            evidence[side],
            title=f"Closest Training image, pixel correlation just {side} {threshold}",
        )
        save_figure(fig, paths.figures_dir, f"eda_copies_{side}_threshold")
conflicts = manifest[manifest["label_conflict"]]
print(f"{len(conflicts)} images have a copy filed under another label")
conflicts[["path", "split", "label", "exact_group", "closest_training"]].head(20)

# %% [markdown]
# ## Excluded files
# The files 01_download excluded, with the reason; none of them reaches training or evaluation.

# %%
excluded = manifest[manifest["status"] != "ok"][["path", "split", "label", "reason"]]
figures = sorted(p.name for p in paths.figures_dir.glob("eda_*.png"))
write_json(paths.stage_metrics(STAGE), {"excluded": int(len(excluded)), "figures": figures})
excluded if len(excluded) else print("no file was excluded")
