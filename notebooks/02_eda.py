# %% [markdown]
# # 2 · Exploratory data analysis
#
# Class balance, what the images look like, their sizes and modes, intensity distributions per class,
# the copy audit (as is, mirrored, re-cut) with its evidence, and the files that were excluded.

# %%
from IPython.display import display

from brainmri import config, runs
from brainmri.io import write_json
from brainmri.plotting import data as dplot
from brainmri.plotting.common import save_figure

# %% tags=["parameters"]
STAGE = "02_eda"
profile = "default"

# %%
cfg = config.notebook_config(STAGE, globals())  # validates the injected parameters
run = runs.open_run(profile, model=False)  # what 01_download recorded; no model yet
paths, record, manifest, data_root = run.paths, run.record, run.manifest, run.data_root

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
# ## Copy audit
# The data set holds many scans more than once: byte for byte, re-encoded or with another contrast,
# **mirrored left-right**, upside down, or cut and scaled differently. 01_download compared every
# pair of images in four views of their 64x64 grey thumbnails: as they are (`plain`), with one
# mirrored (`mirrored`), with one upside down or turned 180° (`flipped`), and both cut to the head
# (`recropped`); a pair is a copy when the rank correlation in some view reaches
# `near_dup_correlation`. The pairs that come closest without confirming are then registered one
# onto the other (`aligned`: re-scaled, slightly turned or re-contrasted copies). Training flips
# images left-right, so a mirrored copy of a training image is an image the model has trained on.
# Copies form groups (chains included), and each group lies in one subset. `pairs_by_kind` counts
# the pairs each kind found first; `groups` their sizes; `test_in_training` the official Testing
# images with a copy in Training.

# %%
audit = dict(record["audit"])  # computed once by 01_download
evidence = audit.pop("threshold_pairs", {})
display(audit)

# %% [markdown]
# The evidence for the threshold, for each kind of match: the least certain pairs each view
# **accepted** (just above the threshold) and the near misses it **rejected** (just below). Above,
# each pair should be one slice (mirrored, re-cut or re-encoded as the kind says); below,
# neighbouring slices of a series or other images.

# %%
for kind, sides in evidence.items():
    for side in ("above", "below"):
        if sides.get(side):
            fig = dplot.plot_duplicate_pairs(
                manifest,
                data_root,
                sides[side],
                value_name=f"{kind} correlation",
                title=f"{kind}: pairs just {side} {sides['threshold']}",
            )
            save_figure(fig, paths.figures_dir, f"eda_copies_{kind}_{side}")
conflicts = manifest[manifest["label_conflict"]]
print(f"{len(conflicts)} images have a copy filed under another label")
conflicts[["path", "split", "label", "copy_group", "closest_training"]].head(20)

# %% [markdown]
# ## Excluded files
# The files 01_download excluded, with the reason; none of them reaches training or evaluation.

# %%
excluded = manifest[manifest["status"] != "ok"][["path", "split", "label", "reason"]]
figures = sorted(p.name for p in paths.figures_dir.glob("eda_*.png"))
write_json(paths.stage_metrics(STAGE), {"excluded": int(len(excluded)), "figures": figures})
excluded if len(excluded) else print("no file was excluded")
