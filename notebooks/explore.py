# %% [markdown]
# # Explore a finished run
#
# Browse the predictions of a run that `make all` finished, and look at what each explanation
# points at. The list holds the run's **validation** and **test** images with the class the model
# predicts, its calibrated confidence (the temperature fitted on validation in 04) and the
# out-of-distribution flag; filter it by true class, predicted class, right or wrong, confidence
# and the flag, or click a cell of the confusion matrix. Selecting an image shows the scan, its
# raw and calibrated class probabilities, and an explanation: Grad-CAM, Grad-CAM++ or Score-CAM,
# of the predicted class or any other, at the default feature map or a finer one, with the
# overlay's strength. Where the image has a tumour mask (expert masks with `MASK_DIR`, phantom
# masks in the demo) it is outlined in green, and the pointing game and the map's energy inside
# the mask are given. A new scan (JPEG, PNG, BMP, TIFF or DICOM) can be uploaded: it is read,
# cut, predicted and flagged exactly as `brainmri predict` does it.
#
# Everything here calls `brainmri.explore`; nothing is written except a cache of the run's
# predictions in `reports/<profile>/.cache/`. Research software, not a medical device.

# %%
from brainmri.explore import Explorer
from brainmri.explore.widgets import ExplorerApp

# %% [markdown]
# `PROFILE` names the run (`reports/<PROFILE>/`); `None` opens the most recently finished one.

# %% tags=["parameters"]
PROFILE = None

# %% [markdown]
# The first opening predicts every validation and test image once (one to two minutes for the
# `cpu` run's 1,966 images on two cores); the result is cached under the model's hash, so the
# next opening reads it back in seconds.

# %%
explorer = Explorer.open(PROFILE)
print(
    f"run {explorer.run.paths.profile}: {len(explorer.table)} validation and test images, "
    f"model input {explorer.size} px, temperature {explorer.info.temperature:.3f}"
)
for warning in explorer.info.warnings:
    print("WARNING:", warning)
# each method explains one image now, so that no click waits for TensorFlow to trace its steps
traced = explorer.warm_up()
print("methods ready:", ", ".join(f"{m} {s:.1f} s" for m, s in traced.items()))

# %% [markdown]
# ## The explorer
# Left: the filters, the list (least confident first by default) and the confusion matrix of the
# chosen images (rows: true class; a click lists the cell). Right: the selected image, the scan
# beside its explanation, the class probabilities and the localisation numbers; below, the upload.

# %%
app = ExplorerApp(explorer)
app.widget
