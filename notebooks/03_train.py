# %% [markdown]
# # 3 · Training
#
# Builds the configured model (reference: EfficientNetB1 at 240x240, global max pooling, two
# Dense+Dropout layers and a 4-way softmax), trains it with Adam and categorical cross-entropy on the
# training subset with the reference augmentation, and selects the checkpoint with the best
# **validation** accuracy (Testing is never looked at here). A run killed mid-training resumes from its
# last finished epoch when the pipeline runs again.

# %%
from brainmri import config, devices, inputs, runs, sources, training
from brainmri import model as mdl
from brainmri.io import file_sha256, write_json
from brainmri.plotting.common import plot_training_curves, save_figure

# %% tags=["parameters"]
STAGE = "03_train"
profile = "default"

# %%
cfg = config.notebook_config(STAGE, globals())  # validates the injected parameters
# The strategy first: MultiWorkerMirroredStrategy must exist before any other TensorFlow work.
strategy = devices.make_strategy(cfg["distribute"])
policy = devices.set_precision(cfg["mixed_precision"])
print(devices.describe(strategy, policy))
run = runs.open_run(profile, model=False)  # the data record and manifest of 01_download
paths, record, manifest = run.paths, run.record, run.manifest
started = training.now()
training.seed_everything(cfg["seed"], cfg["deterministic"])

# %% [markdown]
# ## Model
# The summary lists which layers train: with a pretrained backbone, a frozen one shows most
# parameters as non-trainable.

# %%
with strategy.scope():  # the variables live on every replica
    model = mdl.build_model(cfg, paths.root)
counts = mdl.parameter_counts(model)
print(f"{model.name}: {counts['total']:,} parameters ({counts['trainable']:,} trainable)")
model.summary(line_length=110, expand_nested=False, show_trainable=True)

# %% [markdown]
# ## Input pipeline
# Images are decoded once and cached; augmentation (rotation, shifts, shear, zoom, flips) is applied
# to the training batches only. `batch_size` is per replica: a batch of the pipeline holds one
# batch for each replica of the strategy, which splits it.

#
# With `train.lesion_guidance` on, each training image also carries its expert tumour mask (the
# fourth channel of the cache, moved by the same augmentation), and the loss gains the share of
# its Grad-CAM energy outside the lesion (`brainmri.guidance`). Only **training** images lend
# their masks: the validation masks stay unseen, for 05's localisation scores (and no validation
# image has a copy in train, mirrored or re-cut, so not even a mirror image of one is seen).

# %%
train_rows, val_rows = run.rows("train"), run.rows("val")
train_files, train_labels = run.files(train_rows), train_rows["label_index"].tolist()
val_files, val_labels = run.files(val_rows), val_rows["label_index"].tolist()
print(f"train: {len(train_files)} images, validation: {len(val_files)} images")
guide_masks = sources.guidance_masks(train_rows, record, cfg["lesion_guidance"])
if guide_masks is None:
    cfg["lesion_guidance"] = cfg["guidance_epochs"] = 0  # off, or no masks (warned above)
else:
    print(f"lesion guidance: {sum(map(bool, guide_masks))} training images with a mask")
global_batch = cfg["batch_size"] * strategy.num_replicas_in_sync
cache_args = {
    "cache": cfg["cache"],
    "cache_dir": paths.cache_dir,
    "cache_tag": record["manifest_sha256"],
}
train_ds = inputs.make_dataset(
    train_files,
    train_labels,
    cfg["image_size"],
    global_batch,
    shuffle=True,
    seed=cfg["seed"],
    augment=inputs.augmentation(cfg, cfg["seed"]),
    masks=guide_masks,
    crop=cfg["crop_to_brain"],
    **cache_args,
)
val_ds = inputs.make_dataset(
    val_files,
    val_labels,
    cfg["image_size"],
    global_batch,
    crop=cfg["crop_to_brain"],
    **cache_args,
)

# %% [markdown]
# ## Training (one line per epoch)
# Early stopping watches validation accuracy; the model kept is the best epoch's, not the last. On a
# cluster (`train.distribute: multi_worker`) every worker runs this; only the chief writes the model.

# %%
model, history, status = training.train_or_resume(
    model,
    train_ds,
    val_ds,
    cfg,
    manifest_sha256=record["manifest_sha256"],
    model_path=paths.model,
    history_path=paths.history,
    state_dir=paths.state_dir / "train",
    unguided_path=paths.unguided_model,
)
best = training.best_epoch(history)
print(
    f"best epoch {best.get('epoch')}: validation accuracy {best.get('val_accuracy', float('nan')):.4f}"
)

# %% [markdown]
# ## Training curves
# Training accuracy far above validation accuracy means over-fitting; a validation curve that jumps
# from epoch to epoch means the selected epoch is partly luck.

# %%
fig = plot_training_curves(history)
save_figure(fig, paths.figures_dir, "train_curves")
history.round(4)

# %% [markdown]
# ## Run metadata (`run.json`)
# Everything needed to say which model this is: parameters, data hash, versions, commit and timings.

# %%
run = training.run_metadata(
    cfg,
    model,
    history,
    manifest_sha256=record["manifest_sha256"],
    root=paths.root,
    started=started,
    status=status,
)
# `brainmri predict` checks the model against this; a cluster's other workers write no model
run["model_sha256"] = file_sha256(paths.model) if devices.is_chief() else None
# a guided run also keeps the fine-tuned model it started from: 04 and 05 compare the two
guided = devices.is_chief() and training.had_guided_phase(history)
run["unguided_model_sha256"] = file_sha256(paths.unguided_model) if guided else None
write_json(paths.run_json, run)
write_json(paths.stage_metrics(STAGE), run["summary"])
run["summary"]
