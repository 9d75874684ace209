# %% [markdown]
# # 1 · Data: source, validation, manifest and splits
#
# This stage finds the images, checks every file once, audits duplicates and writes the run's
# **manifest** (`manifest.csv`): one row per file with its split, class, size, mode, content hash,
# perceptual hash, status, and the subset it is used in (train / val / test).
#
# The data source is resolved in this order: `data_dir` holding the Kaggle layout
# (`Training|Testing/<class>/*.jpg`), then a Kaggle download (credentials from `KAGGLE_USERNAME`/`KAGGLE_KEY`
# or `kaggle.json`), then the synthetic **phantom set** with known tumour masks.

# %%
from brainmri import config, data, sources
from brainmri.io import write_json

# %% tags=["parameters"]
STAGE = "01_download"
profile = "default"

# %%
cfg = config.notebook_config(STAGE, globals())  # validates the injected parameters
paths = config.paths(profile)

# %% [markdown]
# ## Where the images come from
# The record below says which source was used and why; `phantom` means no real data was found.

# %%
source = sources.resolve_source(cfg, paths)
source

# %% [markdown]
# ## Validation and manifest
# Every file is decoded once. Unreadable, empty, truncated and non-image files are excluded and listed
# with the reason; hidden files and folders are ignored. Validation is a stratified, seeded carve-out of
# Training that keeps every duplicate cluster on one side; Testing is used only by the evaluation stage.
# The table counts images per split, subset and class: the classes should be roughly balanced in
# every subset, and `val` should hold about `val_fraction` of Training.

# %%
manifest = sources.build_manifest(source["root"], cfg)
data.write_manifest(manifest, paths.manifest)
manifest.groupby(["split", "subset", "label"]).size().unstack(fill_value=0)

# %% [markdown]
# Files excluded before anything else reads them, with the reason for each; an empty table means
# every file decoded.

# %%
excluded = manifest[manifest["status"] != "ok"][["path", "reason"]]
print(f"{len(excluded)} excluded files")
excluded

# %% [markdown]
# ## Duplicate and leakage audit (summary; details in the EDA report)
# Testing images with an exact or pixel-confirmed near copy in Training are what separates the
# official accuracy from the leakage-free ("clean") one in 04_evaluate: the more there are, the
# more the official number flatters. `clean_testing` is what is left of each class.

# %%
record = sources.data_record(
    source, manifest, paths.manifest, min_correlation=cfg["near_dup_correlation"]
)
# Tumour masks (data.mask_dir): where 03 (lesion guidance) and 05 (localisation) find them
mask_root = sources.resolve_mask_root(cfg["mask_dir"], paths.root)
record["mask_root"] = None if mask_root is None else str(mask_root)
record["masks"] = sources.mask_counts(manifest, source["root"], mask_root)
write_json(paths.data_json, record)
write_json(paths.stage_metrics(STAGE), record)
for warning in record["warnings"]:  # also at the top of index.html
    print(f"WARNING: {warning}")
print("tumour images with a mask, per subset:", record["masks"])
{k: v for k, v in record["audit"].items() if k != "threshold_pairs"}
