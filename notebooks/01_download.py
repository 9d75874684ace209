# %% [markdown]
# # 1 · Data: source, validation, manifest and splits
#
# This stage finds the images, checks every file once, audits copies and writes the run's
# **manifest** (`manifest.csv`): one row per file with its split, class, size, mode, content hash,
# perceptual hash, status, copy group, the subset it is used in (train / val / test) and whether the
# headline accuracy is computed on it (`headline_test`).
#
# The data source is resolved in this order: `data_dir` holding the Kaggle layout
# (`Training|Testing/<class>/*.jpg`), then a Kaggle download (credentials from `KAGGLE_USERNAME`/`KAGGLE_KEY`
# or `kaggle.json`), then the synthetic **phantom set** with known tumour masks.

# %%
from brainmri import config, data, sources
from brainmri.io import write_csv, write_json

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
# ## Validation, copies and subsets
# Every file is decoded once. Unreadable, empty, truncated and non-image files are excluded and listed
# with the reason; hidden files and folders are ignored. Every pair of images is then compared as they
# are, mirrored left-right and cut to the head: copies form **copy groups**, and each group goes
# whole to one subset, so that no image in validation or the headline test has a copy of any kind in
# training. Under `protocol: grouped` Training and Testing are pooled and whole groups are held out
# for test (`test_fraction`) and validation (`val_fraction` of the rest); under `official` the
# published folders are kept and the headline is the Testing images without a copy in Training.
# The table counts images per official split, subset and class.

# %%
print(f"protocol: {cfg['protocol']}")
manifest, pairs = sources.build_manifest(source["root"], cfg)
data.write_manifest(manifest, paths.manifest)
write_csv(paths.copy_pairs, pairs)
manifest.groupby(["split", "subset", "label"]).size().unstack(fill_value=0)

# %% [markdown]
# Files excluded before anything else reads them, with the reason for each; an empty table means
# every file decoded.

# %%
excluded = manifest[manifest["status"] != "ok"][["path", "reason"]]
print(f"{len(excluded)} excluded files")
excluded

# %% [markdown]
# ## Copy audit and leak check (summary; the pairs themselves in the EDA report)
# `pairs_by_kind` says how many copy pairs each kind of comparison found first: an audit that compares
# images only as they are misses the mirrored and re-cut ones. `test_in_training` counts the official
# Testing images with a copy in Training: what the official accuracy counts as new scans. `leaks` must
# be all zero: validation and headline test images with a copy on the training side.

# %%
record = sources.data_record(
    source,
    manifest,
    paths.manifest,
    pairs,
    protocol=cfg["protocol"],
    min_correlation=cfg["near_dup_correlation"],
)
if any(record["leaks"].values()):  # cannot happen by construction; a broken split stops here
    raise RuntimeError(f"copies of training images in evaluation subsets: {record['leaks']}")
# Tumour masks (data.mask_dir): where 03 (lesion guidance) and 05 (localisation) find them
mask_root = sources.resolve_mask_root(cfg["mask_dir"], paths.root)
record["mask_root"] = None if mask_root is None else str(mask_root)
record["masks"] = sources.mask_counts(manifest, source["root"], mask_root)
write_json(paths.data_json, record)
write_json(paths.stage_metrics(STAGE), record)
for warning in record["warnings"]:  # also at the top of index.html
    print(f"WARNING: {warning}")
print("tumour images with a mask, per subset:", record["masks"])
print("headline test images per class:", record["headline_test"]["images"])
{k: v for k, v in record["audit"].items() if k != "threshold_pairs"}
