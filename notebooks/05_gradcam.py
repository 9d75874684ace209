# %% [markdown]
# # 5 · Explainability: Grad-CAM
#
# Grad-CAM weighs the last convolutional feature map by the gradient of the chosen class's
# **pre-softmax** score. This report shows the reference view (original, heatmap, overlay, class
# probabilities), galleries per class, the mistakes and several methods side by side on Testing;
# then, on the validation images that have tumour masks (the phantom set's, or expert masks such as
# BRISC 2025's via `data.mask_dir`), how well each map localises the lesion compared with random
# and centre-prior baselines and how faithful it is (deletion/insertion); and the model-parameter
# randomisation sanity checks.

# %%
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import display

from brainmri import config, explain, inputs, phantom, predict, sources
from brainmri import model as mdl
from brainmri.config import CLASS_NAMES, TUMOUR_CLASSES
from brainmri.io import write_json
from brainmri.plotting import explain as xplot
from brainmri.plotting.common import save_figure

# %% tags=["parameters"]
STAGE = "05_gradcam"
profile = "default"

# %%
cfg = config.notebook_config(STAGE, globals())  # validates the injected parameters
paths = config.paths(profile)
record, manifest = sources.load_run_data(paths)
data_root = Path(record["root"])
model = mdl.load_model(paths.model)
image_size = model.input_shape[1]
# the images prepared as training prepared them: cut to the head where model.crop_to_brain was on
crop = predict.run_info(paths.model, paths.run_dir).crop_to_brain
layer = cfg["cam_layer"] or explain.find_target_layer(model)
print(f"explaining layer '{layer}' of {model.name}")
test, files, _ = sources.subset_files(manifest, data_root, "test")
test = test.reset_index(drop=True)
_, probs = mdl.predict_files(model, files, crop=crop)
test["predicted"] = probs.argmax(1)
test["correct"] = test["predicted"] == test["label_index"]

# %% [markdown]
# ## The reference view
# Original, Grad-CAM heatmap, overlay and class probabilities for one correctly classified tumour
# image: the warm region should sit on the lesion, not on the skull or the background.

# %%
candidates = test[test["correct"] & (test["label"] != "notumor")]
first = (candidates if len(candidates) else test).iloc[0]
print(f"{first['path']}: true {first['label']}, predicted {CLASS_NAMES[first['predicted']]}")
image = inputs.load_batch([data_root / first["path"]], image_size, crop=crop)[0]
viz = explain.VizGradCAM(
    model, image, interpolant=cfg["interpolant"], plot_results=True, layer_name=layer
)
overlay, heatmap = viz  # the reference API: the overlay and the Grad-CAM map in [0, 1]
save_figure(viz.figure, paths.figures_dir, "cam_reference_view")

# %% [markdown]
# ## Galleries: correct predictions per class, and the mistakes
# Maps of the same class should agree on where they look; in the mistakes, a map on the wrong
# structure tells why the model was misled.

# %%
method, per_class = cfg["cam_method"], cfg["cam_images_per_class"]
galleries = {}
for label in CLASS_NAMES:
    rows = test[test["correct"] & (test["label"] == label)]
    rows = rows.sample(min(len(rows), per_class), random_state=cfg["seed"])
    galleries[f"cam_gallery_{label}"] = (f"{method}: correct {label}", rows)
mistakes = test[~test["correct"]].head(max(per_class, 4))
galleries["cam_gallery_mistakes"] = (f"{method}: mistakes", mistakes)
for name, (title, rows) in galleries.items():
    if rows.empty:
        print(f"{title}: none")
        continue
    batch = inputs.load_batch([data_root / p for p in rows["path"]], image_size, crop=crop)
    titles = [f"{r.label} -> {CLASS_NAMES[r.predicted]}" for r in rows.itertuples()]
    fig = explain.cam_gallery(
        model, batch, titles, method=method, layer_name=layer, interpolant=cfg["interpolant"]
    )
    fig.suptitle(title)
    save_figure(fig, paths.figures_dir, name)

# %% [markdown]
# ## Methods side by side
# One tumour image per class under every compared method (with the mask outlined where the data
# set has masks); methods that agree make the explanation more credible than any one of them.

# %%
picks = test[test["label"].isin(TUMOUR_CLASSES)].groupby("label").head(1)
batch = inputs.load_batch([data_root / p for p in picks["path"]], image_size, crop=crop)
cap = cfg["scorecam_max_channels"]
maps = {
    explain.method_label(m, cap): explain.explain(
        m, model, batch, layer_name=layer, seed=cfg["seed"], max_channels=cap
    )
    for m in cfg["cam_methods_compare"]
}
masks = [phantom.load_mask(data_root / p, data_root, image_size, crop=crop) for p in picks["path"]]
fig = xplot.plot_methods_side_by_side(
    batch, maps, masks if all(m is not None for m in masks) else None
)
save_figure(fig, paths.figures_dir, "cam_methods")

# %% [markdown]
# ## Localisation against the tumour masks, on validation images
# Scored on the **validation** images that have a tumour mask (the phantom set's own, or expert masks
# such as BRISC 2025's for the real Training images, `data.mask_dir`), never on Testing.
# Pointing game (a hit when the map's maximum lies within `pointing_tolerance` of the image side of
# the mask, the standard 15 px at 224 px; `pointing_rate_strict` allows no slack), energy share inside
# the mask (and its ratio to the mask's area fraction), IoU of the Otsu-thresholded map, and
# deletion/insertion AUC. Each has a chance level: for the strict pointing game the mask's area, for
# the tolerant one the area of the mask grown by the tolerance (several times larger for a small
# lesion), 1 for the energy ratio; a random smooth map and a centred Gaussian prior are scored on
# every metric, deletion and insertion included. A method is only worth its name where it beats both
# baselines clearly. Deletion and insertion cost two forward passes per step for every image and map,
# so `faithfulness_images` may limit them to the first images of each class (their count is in the
# summary, `n_faithfulness`); the other metrics cover every scored image.
#
# A model trained with lesion guidance (`train.lesion_guidance`, see `run.json`) was trained to put
# its Grad-CAM on the masks of the *training* images. These validation masks were never seen, so
# the scores say how well that generalises; whether the decision itself rests on the lesion is for
# the erasure test below, which uses no explanation.

# %%
val_rows, _, _ = sources.subset_files(manifest, data_root, "val")
scored, masks = sources.images_with_masks(
    val_rows,
    data_root,
    image_size,
    mask_root=record.get("mask_root"),
    per_class=cfg["cam_eval_images"],
    crop=crop,
)
print("validation images with a mask, per class:", scored["label"].value_counts().to_dict())
localisation = {}
if scored.empty:
    print("no validation image has a tumour mask: localisation is not scored (see data.mask_dir)")
else:
    batch = inputs.load_batch([data_root / p for p in scored["path"]], image_size, crop=crop)
    report = explain.localisation_report(
        model,
        batch,
        masks,
        scored["label"].tolist(),
        methods=cfg["cam_methods_compare"],
        seed=cfg["seed"],
        steps=cfg["faithfulness_steps"],
        faithfulness_images=cfg["faithfulness_images"],
        layer_name=layer,
        tolerance=cfg["pointing_tolerance"] * image_size,
        max_channels=cfg["scorecam_max_channels"],
    )
    localisation = explain.summarise_localisation(report)
    fig = xplot.plot_localisation_summary(localisation)
    save_figure(fig, paths.figures_dir, "cam_localisation")
    # one row per class and method: the mean over its images (the image index is not a score)
    scores = report.drop(columns="image").groupby(["label", "method"])
    display(scores.mean(numeric_only=True).round(3))

# %% [markdown]
# ## Does the model use the lesion? The erasure test
# A map that misses the tumour may be a wrong explanation or a model that decides from something
# else. This asks the model directly, with no explanation method: each masked validation image is
# shown with its lesion inpainted away, and with a control region of the same shape and area
# inpainted elsewhere in the brain whose erasure changes the image as much (`pixel_change_lesion`
# and `pixel_change_control`, mean grey levels; the mirrored lesion first, else the first seeded
# place within 10%, else one that changes more, blended down; images with none count under
# `no_control`). A model that uses the lesion loses far more confidence in the true class
# (`drop_lesion`) than when the control is erased (`drop_control`): `lesion_minus_control` is the
# paired difference with its 95% bootstrap interval over images (`_low`, `_high`), and
# `lesion_costs_more` the share of images where it does.

# %%
erasure = {}
if not scored.empty:
    erased_table, erased = explain.erasure_test(
        model, batch, masks, scored["label_index"].tolist(), seed=cfg["seed"]
    )
    erasure = explain.summarise_erasure(erased_table)
    display(pd.DataFrame(erasure).T.round(3))
    first = np.flatnonzero(~erased_table["label"].duplicated().to_numpy())  # one per class
    fig = xplot.plot_erasure_examples(batch, erased, erased_table, first)
    save_figure(fig, paths.figures_dir, "cam_erasure")

# %% [markdown]
# ## Cues outside the brain?
# The classes of this data set come from different image collections, so margins, the head's
# silhouette and size, text and scanner marks can tell them apart without any tissue. On validation
# images of every class, the model sees each image as it is, the **brain only** (everything outside
# the head's silhouette black) and the **outside only** (the silhouette filled with its own mean
# grey). A model that reads the tissue keeps its accuracy on the brain-only view and falls to chance
# (0.25) on the outside-only view; accuracy well above chance there is a shortcut the model uses.

# %%
context_rows = val_rows.groupby("label", sort=False).head(cfg["cam_eval_images"])
context_table = explain.context_test(
    model,
    inputs.load_batch([data_root / p for p in context_rows["path"]], image_size, crop=crop),
    context_rows["label_index"].tolist(),
)
context = explain.summarise_context(context_table)
display(pd.DataFrame(context).T.round(3))

# %% [markdown]
# ## Sanity check: model-parameter randomisation
# Maps of a trained model should change when its weights are re-initialised (Adebayo et al. 2018).
# The cascading test re-initialises the layers from the output down, one block more at each step;
# the independent test one block at a time. A correlation that stays high down to the input means
# the map reflects the image, not what the model learned. A flat map (no ranks) scores 0: it has
# changed completely. The re-initialised BatchNorm layers' statistics are re-estimated on these
# images, so the randomised network is a working one. The verdict passes when at least
# `min_share_changed` of the maps changed (correlation below `max_correlation`); the logit spread
# of the randomised network (std over images, mean over classes) shows whether it is degenerate.

# %%
sample = test.groupby("label").head(4)
batch = inputs.load_batch([data_root / p for p in sample["path"]], image_size, crop=crop)
cascade = explain.cascading_randomization(model, batch, cfg["seed"], layer_name=layer)
sanity = {"seed": cfg["seed"], **cascade}
print(
    f"maps changed by re-initialising every weight: {sanity['n_changed']} of "
    f"{sanity['n_images']} (Spearman below {sanity['max_correlation']}, flat maps scoring 0: "
    f"{sanity['n_flat']} flat); mean correlation {sanity['spearman_mean']:.3f}; "
    f"{'passes' if sanity['passed'] else 'FAILS'} ({sanity['min_share_changed']:.0%} required)\n"
    f"logit spread: trained {sanity['logit_spread_trained']:.3f}, randomised "
    f"{sanity['logit_spread_randomised']:.3f}{' (degenerate)' if sanity['degenerate'] else ''}"
)
fig = xplot.plot_randomization_curve(cascade)
save_figure(fig, paths.figures_dir, "cam_randomization_curve")

# %% [markdown]
# The maps themselves, trained and fully re-initialised, one image per class.

# %%
trained_maps, random_maps = explain.randomization_maps(model, batch, cfg["seed"], layer_name=layer)
first = np.flatnonzero(~sample["label"].duplicated().to_numpy())  # one image per class
fig = xplot.plot_methods_side_by_side(
    batch[first], {"trained": trained_maps[first], "re-initialised": random_maps[first]}
)
save_figure(fig, paths.figures_dir, "cam_randomization")
write_json(
    paths.stage_metrics(STAGE),
    {
        "layer": layer,
        "method": method,
        "localisation": localisation,
        "erasure": erasure,
        "context": context,
        "randomization": sanity,
    },
)
print(f"Grad-CAM metrics written to {paths.stage_metrics(STAGE).relative_to(paths.root)}")
