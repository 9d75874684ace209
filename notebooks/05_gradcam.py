# %% [markdown]
# # 5 · Explainability: Grad-CAM
#
# Grad-CAM weighs the last convolutional feature map by the gradient of the chosen class's
# **pre-softmax** score. This report shows the reference view (original, heatmap, overlay, class
# probabilities), galleries per class, the mistakes and several methods side by side on Testing;
# then, on the validation images that have tumour masks (the phantom set's, or expert masks such as
# BRISC 2025's via `data.mask_dir`), how well each map localises the lesion compared with random
# and centre-prior baselines and how faithful it is (deletion/insertion); the same scores once on
# the headline test lesions; for a lesion-guided run, its maps against those of the model it
# started from, on the same lesions; and the model-parameter randomisation sanity checks. No
# validation or headline test image has a copy (as is, mirrored or re-cut) in train, so none of
# these masks, nor a mirror image of one, was seen by lesion-guided training.

# %%
import numpy as np
import pandas as pd
from IPython.display import display

from brainmri import config, explain, phantom, runs
from brainmri import model as mdl
from brainmri.config import CLASS_NAMES, TUMOUR_CLASSES
from brainmri.io import write_json
from brainmri.plotting import explain as xplot
from brainmri.plotting.common import save_figure
from brainmri.reports import tables

# %% tags=["parameters"]
STAGE = "05_gradcam"
profile = "default"

# %%
cfg = config.notebook_config(STAGE, globals())  # validates the injected parameters
run = runs.open_run(profile)  # records, manifest, model; images prepared as training prepared them
paths, data_root = run.paths, run.data_root
model, image_size = run.model, run.image_size
layer = cfg["cam_layer"] or explain.find_target_layer(model)
print(f"explaining layer '{layer}' of {model.name}")
scoring = {  # how every localisation table below is scored
    "seed": cfg["seed"],
    "layer_name": layer,
    "tolerance": cfg["pointing_tolerance"] * image_size,
    "max_channels": cfg["scorecam_max_channels"],
}
test = run.rows("test").reset_index(drop=True)
_, probs = mdl.predict_files(model, run.files(test), crop=run.crop)
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
image = run.images([first["path"]])[0]
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
    batch = run.images(rows)
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
batch = run.images(picks)
cap = cfg["scorecam_max_channels"]
maps = {
    explain.method_label(m, cap): explain.explain(
        m, model, batch, layer_name=layer, seed=cfg["seed"], max_channels=cap
    )
    for m in cfg["cam_methods_compare"]
}
masks = [
    phantom.load_mask(data_root / p, data_root, image_size, crop=run.crop) for p in picks["path"]
]
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
# its Grad-CAM on the masks of the *training* images. No validation image has a copy in train (as
# it is, mirrored or re-cut: whole copy groups are held out), so these masks, and their mirror
# images, were never seen: the scores say how well guidance generalises. Whether the decision itself
# rests on the lesion is for the erasure test below, which uses no explanation.

# %%
val_rows = run.rows("val")
scored, masks = run.lesions(val_rows, per_class=cfg["cam_eval_images"])
print("validation images with a mask, per class:", scored["label"].value_counts().to_dict())
localisation = {}
if scored.empty:
    print("no validation image has a tumour mask: localisation is not scored (see data.mask_dir)")
else:
    batch = run.images(scored)
    report = explain.localisation_report(
        model, batch, masks, scored["label"].tolist(), methods=cfg["cam_methods_compare"],
        steps=cfg["faithfulness_steps"], faithfulness_images=cfg["faithfulness_images"], **scoring,
    )  # fmt: skip
    localisation = explain.summarise_localisation(report)
    fig = xplot.plot_localisation_summary(localisation)
    save_figure(fig, paths.figures_dir, "cam_localisation")
    # one row per class and method: the mean over its images (the image index is not a score)
    scores = report.drop(columns="image").groupby(["label", "method"])
    display(scores.mean(numeric_only=True).round(3))

# %% [markdown]
# ## The same scores on the headline test lesions, read once
# Under `protocol: grouped`, test images that came from Kaggle's Training folder bring their expert
# masks with them. They are scored here once, after every choice was made on validation, without
# deletion/insertion (the costly part, already measured on validation).

# %%
test_scored, test_masks = run.lesions(run.rows("headline"), per_class=cfg["cam_eval_images"])
print("headline test images with a mask, per class:", test_scored["label"].value_counts().to_dict())
localisation_test, reports = {}, {}
if not scored.empty:
    reports["val"] = (report, batch, masks, scored)
if test_scored.empty:
    print("no headline test image has a mask: nothing to score here")
else:
    test_batch = run.images(test_scored)
    test_report = explain.localisation_report(
        model, test_batch, test_masks, test_scored["label"].tolist(),
        methods=cfg["cam_methods_compare"], steps=None, **scoring,
    )  # fmt: skip
    localisation_test = explain.summarise_localisation(test_report)
    reports["test"] = (test_report, test_batch, test_masks, test_scored)
    display(
        test_report.drop(columns="image")
        .groupby(["label", "method"])
        .mean(numeric_only=True)
        .round(3)
    )

# %% [markdown]
# ## Guided against unguided, on the same lesions
# A lesion-guided run keeps the model its guided phase started from (`model_unguided.keras`). Both
# are scored with Grad-CAM on the same lesions: tolerant pointing per class, the centre prior both
# must clear, and McNemar's exact test on the lesions only one of them points at. This is the
# comparison that says what guidance did; comparing separate runs would mix in their other
# differences.

# %%
paired_localisation = {}
unguided = run.unguided_model()  # None unless the run had a guided phase
if unguided is not None and reports:
    for scope, (guided_report, scope_batch, scope_masks, scope_rows) in reports.items():
        unguided_report = explain.localisation_report(
            unguided,
            scope_batch,
            scope_masks,
            scope_rows["label"].tolist(),
            methods=["gradcam"],
            seed=cfg["seed"],
            steps=None,
            layer_name=cfg["cam_layer"] or explain.find_target_layer(unguided),
            tolerance=cfg["pointing_tolerance"] * image_size,
        )
        paired_localisation[scope] = explain.paired_pointing(
            {"unguided": unguided_report, "guided": guided_report}
        )
    display(tables.pointing_pairs_table(paired_localisation))
else:
    print("no guided phase in this run (or no masks): nothing to pair")

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
    run.images(context_rows),
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
batch = run.images(sample)
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
        "localisation_test": localisation_test,
        "paired_localisation": paired_localisation,
        "erasure": erasure,
        "context": context,
        "randomization": sanity,
    },
)
print(f"Grad-CAM metrics written to {paths.stage_metrics(STAGE).relative_to(paths.root)}")
