"""The parameter schema: every key of a profile, its type, range and meaning, and the validation
of a whole profile (rules across keys included), with messages that name the file and key."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from brainmri.config.constants import GUIDANCE_CELLS


class ParamError(ValueError):
    """A profile that fails validation; the message names the file, the key and what is allowed."""


PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""A profile is the plain name of a file in params/: no path, no dot, at most 64 characters."""


def check_profile_name(profile: str) -> str:
    """Return the profile name, or refuse one that could reach outside params/ or reports/.

    Every path of a run is built from this name (params/<name>.yaml, reports/<name>/, which
    `make clean` deletes), so ``..``, ``/`` or an absolute path must never get that far.

    Raises:
        ParamError: the name is not letters, digits, "_" and "-" starting with a letter or digit.
    """
    if not isinstance(profile, str) or not PROFILE_NAME.fullmatch(profile):
        raise ParamError(
            f"profile {profile!r} is not a profile name: expected the plain name of a file in "
            "params/ (letters, digits, '_' and '-', e.g. demo)"
        )
    return profile


# --- the schema -----------------------------------------------------------------------------
# Hand-written rather than a schema library: the messages must name the YAML file and the
# dotted key, and each Spec's help line documents the key (docs/profiles.md explains them).


@dataclass(frozen=True)
class Spec:
    """One parameter: its type, its allowed range or values, and a one-line meaning."""

    kind: str  # int | float | bool | str | choice | int_list | float_list | str_list
    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False

    def allowed(self) -> str:
        """Describe the allowed values in words."""
        if self.kind == "choice":
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.kind in ("int", "float"):
            noun = "an integer" if self.kind == "int" else "a number"
            text = f"{noun} in [{self.lo}, {self.hi}]"
        elif self.kind.endswith("_list"):
            inner = self.kind.removesuffix("_list")
            rng = f" in [{self.lo}, {self.hi}]" if self.lo is not None else ""
            text = f"a list of {inner}s{rng}"
        elif self.kind == "bool":
            text = "true or false"
        else:
            text = "a string"
        return text + (" or null" if self.nullable else "")

    def check(self, value: Any) -> Any:
        """Return the value (ints widened to float where a float is expected) or raise ValueError."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError(self.allowed())
        if self.kind == "choice":
            if value in self.choices:
                return value
            raise ValueError(self.allowed())
        if self.kind.endswith("_list"):
            if not isinstance(value, list) or not value:
                raise ValueError(self.allowed())
            inner = Spec(self.kind.removesuffix("_list"), self.help, self.lo, self.hi)
            try:
                return [inner.check(v) for v in value]
            except ValueError:
                raise ValueError(self.allowed()) from None
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise ValueError(self.allowed())
        if self.kind == "str":
            if isinstance(value, str):
                return value
            raise ValueError(self.allowed())
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(self.allowed())
        if self.kind == "int" and not isinstance(value, int):
            raise ValueError(self.allowed())
        if not (self.lo <= value <= self.hi):
            raise ValueError(self.allowed())
        return float(value) if self.kind == "float" else value


BACKBONES = (
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "compact_cnn",
)
CAM_METHODS = ("gradcam", "gradcampp", "scorecam", "random")
CAM_TITLES = {"gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "scorecam": "Score-CAM"}
"""How a page or a widget names each explanation method (the served page, the explorer)."""
STRATEGIES = ("none", "mirrored", "multi_worker")
"""The ``train.distribute`` settings (brainmri.devices.make_strategy)."""
PRECISIONS = ("auto", "float32", "mixed_float16")
"""The ``train.mixed_precision`` settings (brainmri.devices.resolve_precision)."""

SCHEMA: dict[str, dict[str, Spec]] = {
    "run": {
        "seed": Spec("int", "seeds Python, NumPy and TensorFlow", 0, 2**31 - 1),
        "deterministic": Spec("bool", "enable TensorFlow op determinism (slower)"),
    },
    "data": {
        "data_source": Spec(
            "choice",
            "where images come from; auto = data_dir, then Kaggle, then phantoms",
            choices=("auto", "data_dir", "kaggle", "phantom"),
        ),
        "data_dir": Spec(
            "str", "folder holding Training/ and Testing/ (DATA_DIR overrides)", nullable=True
        ),
        "mask_dir": Spec(
            "str",
            "tumour masks as <split>/<class>/<stem>.png (null = <data>/masks; MASK_DIR overrides)",
            nullable=True,
        ),
        "kaggle_dataset": Spec("str", "Kaggle dataset slug to download"),
        "phantom_train_per_class": Spec("int", "phantom Training images per class", 2, 100000),
        "phantom_test_per_class": Spec("int", "phantom Testing images per class", 2, 100000),
        "phantom_size": Spec("int", "side of the square phantom images in pixels", 32, 1024),
        "protocol": Spec(
            "choice",
            "evaluation protocol: grouped (pool Training and Testing, hold out whole copy "
            "groups) or official (the published Training/Testing folders)",
            choices=("grouped", "official"),
        ),
        "test_fraction": Spec(
            "float", "share of all images held out for test (protocol grouped only)", 0.05, 0.5
        ),
        "val_fraction": Spec(
            "float", "share of the training pool held out for validation", 0.02, 0.5
        ),
        "dedup": Spec(
            "choice",
            "which copies the train subset keeps: none, exact (one per byte copy), near "
            "(one per copy group)",
            choices=("none", "exact", "near"),
        ),
        "max_image_pixels": Spec(
            "int",
            "most pixels an image header may declare (larger: excluded, not decoded)",
            1,
            2**31,
        ),
        "near_dup_correlation": Spec(
            "float",
            "min thumbnail rank correlation (as is, mirrored or cut to the head) of a copy",
            0.5,
            1.0,
        ),
    },
    "eda": {
        "eda_samples_per_class": Spec("int", "sample images shown per class", 1, 32),
    },
    "model": {
        "backbone": Spec("choice", "feature extractor", choices=BACKBONES),
        "weights": Spec("str", "'imagenet', 'none' or a path to a local weights file"),
        "image_size": Spec("int", "input side in pixels (square)", 32, 1024),
        "crop_to_brain": Spec(
            "bool", "cut every image (and mask) to the square around the head before resizing"
        ),
        "dense_units": Spec("int_list", "units of the head's Dense layers", 1, 8192),
        "dropout": Spec("float", "dropout after each head Dense layer", 0.0, 0.95),
        "cnn_filters": Spec("int_list", "filters per block of the compact CNN", 1, 1024),
        "cnn_convs": Spec("int", "3x3 convolutions per block of the compact CNN", 1, 4),
        "cnn_norm": Spec(
            "choice", "normalisation in the compact CNN", choices=("batch", "group", "none")
        ),
        "cnn_activity_l1": Spec(
            "float",
            "L1 penalty on the compact CNN's last feature map, per image (0 = off)",
            0.0,
            1.0,
        ),
        "bn_momentum": Spec(
            "float", "batch-norm momentum of the compact CNN (lower for few steps)", 0.0, 0.999
        ),
        "trainable": Spec(
            "choice",
            "which backbone layers train",
            choices=("all", "freeze", "finetune_top_n"),
        ),
        "finetune_top_n": Spec("int", "backbone blocks unfrozen by finetune_top_n", 1, 100),
    },
    "train": {
        "batch_size": Spec("int", "images per batch", 1, 4096),
        "epochs": Spec("int", "maximum epochs (fine-tuning phase)", 1, 1000),
        "learning_rate": Spec("float", "Adam learning rate", 1e-7, 1.0),
        "label_smoothing": Spec("float", "categorical cross-entropy label smoothing", 0.0, 0.5),
        "jit_compile": Spec(
            "choice",
            "XLA-compile the training step (auto: Keras decides; always; never)",
            choices=("auto", "always", "never"),
        ),
        "distribute": Spec(
            "choice",
            "tf.distribute strategy: none, mirrored (local GPUs) or multi_worker (TF_CONFIG)",
            choices=STRATEGIES,
        ),
        "mixed_precision": Spec(
            "choice",
            "dtype policy: auto (mixed_float16 on capable GPUs), float32 or mixed_float16",
            choices=PRECISIONS,
        ),
        "warmup_epochs": Spec("int", "head-only epochs before fine-tuning (0 = one phase)", 0, 100),
        "warmup_learning_rate": Spec("float", "learning rate of the warm-up phase", 1e-7, 1.0),
        "early_stopping_patience": Spec("int", "epochs without val gain before stopping", 1, 1000),
        "reduce_lr_factor": Spec("float", "ReduceLROnPlateau factor", 0.01, 0.99),
        "reduce_lr_patience": Spec("int", "ReduceLROnPlateau patience", 1, 1000),
        "cache": Spec("choice", "decoded-image cache", choices=("memory", "disk", "none")),
        "lesion_guidance": Spec(
            "float",
            "weight of the Grad-CAM energy outside the tumour mask in the guided phase (0 = off)",
            0.0,
            100.0,
        ),
        "guidance_epochs": Spec(
            "int",
            "epochs of the guided phase after fine-tuning (with lesion_guidance > 0)",
            0,
            1000,
        ),
        "guidance_learning_rate": Spec("float", "learning rate of the guided phase", 1e-8, 1.0),
        "guidance_margin": Spec(
            "float",
            "slack around each mask, a fraction of the image side, where Grad-CAM energy is not "
            "penalised (15/224 = the pointing game's tolerance)",
            0.0,
            0.5,
        ),
        "guidance_cells": Spec(
            "choice",
            "how a Grad-CAM cell counts as on the lesion: the share of it the mask covers (area) "
            "or whether the mask covers its centre, where the upsampled map's peak sits (centre)",
            choices=GUIDANCE_CELLS,
        ),
        "guidance_distillation": Spec(
            "float",
            "weight of the guided phase's divergence from the fine-tuned model's predictions "
            "(brainmri.guidance.distillation, Learning without Forgetting; 0 = off)",
            0.0,
            100.0,
        ),
        "aug_rotation": Spec("float", "max random rotation in degrees", 0.0, 180.0),
        "aug_width_shift": Spec("float", "max horizontal shift (fraction of width)", 0.0, 0.5),
        "aug_height_shift": Spec("float", "max vertical shift (fraction of height)", 0.0, 0.5),
        "aug_shear": Spec("float", "max shear angle in degrees (as ImageDataGenerator)", 0.0, 45.0),
        "aug_zoom": Spec("float", "max zoom in/out (fraction)", 0.0, 0.9),
        "aug_horizontal_flip": Spec("bool", "random left-right flips"),
        "aug_fill_mode": Spec(
            "choice",
            "how pixels outside the image are filled",
            choices=("nearest", "reflect", "wrap", "constant"),
        ),
    },
    "evaluate": {
        "bootstrap_resamples": Spec("int", "bootstrap resamples for 95% CIs", 10, 100000),
        "tta": Spec("bool", "also report test-time augmentation (flip average)"),
        "calibration_bins": Spec("int", "bins of the reliability diagram and ECE", 2, 100),
        "error_gallery_size": Spec("int", "images per error-analysis gallery", 1, 64),
    },
    "gradcam": {
        "cam_method": Spec("choice", "explanation method of the galleries", choices=CAM_METHODS),
        "cam_methods_compare": Spec("str_list", "methods compared side by side and scored"),
        "cam_layer": Spec("str", "layer to explain (null = last conv activation)", nullable=True),
        "interpolant": Spec("float", "overlay transparency (0 = image only)", 0.0, 1.0),
        "cam_images_per_class": Spec("int", "images per class in the galleries", 1, 64),
        "cam_eval_images": Spec(
            "int", "tumour images per class scored for localisation (max)", 1, 100000
        ),
        "faithfulness_steps": Spec("int", "steps of the deletion/insertion curves", 2, 256),
        "faithfulness_images": Spec(
            "int",
            "of the images scored for localisation, how many per class also get deletion/"
            "insertion curves, the costly part (null = all)",
            1,
            100000,
            nullable=True,
        ),
        "scorecam_max_channels": Spec(
            "int",
            "Score-CAM's channel cap (null = every channel, as Wang et al.)",
            1,
            100000,
            nullable=True,
        ),
        "pointing_tolerance": Spec(
            "float", "pointing-game slack as a fraction of the image side (15/224 standard)", 0, 0.5
        ),
    },
}

ALL_KEYS: dict[str, str] = {k: s for s, specs in SCHEMA.items() for k in specs}
"""Every parameter name mapped to its section; names are unique across sections."""
assert len(ALL_KEYS) == sum(len(v) for v in SCHEMA.values()), "duplicate parameter names"

TOP_LEVEL_EXTRAS = {"description": Spec("str", "one line saying what the profile is for")}


def _brief(value: Any, limit: int = 80) -> str:
    """The value's repr, cut to limit characters: an error message stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_value(spec: Spec, value: Any, *, where: str, key: str) -> Any:
    """One value checked against its spec, or the project's one-line parameter error.

    Args:
        spec: the key's :class:`Spec`.
        value: the value given.
        where: the origin the message names (a profile's file, a notebook).
        key: the key as the message shows it, e.g. ``"train.epochs"``.

    Returns:
        The value normalised (ints widened to float where a float is expected).

    Raises:
        ParamError: the value is not allowed; the message names where, the key, the value and
            what is expected.
    """
    try:
        return spec.check(value)
    except ValueError as exc:
        raise ParamError(
            f"{where}: '{key}' = {_brief(value)} is not allowed: expected {exc}"
        ) from None


def validate(params: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Check every key against the schema; return the params with values normalised.

    Args:
        params: the nested parameters (sections, plus the top-level extras such as
            "description").
        source: what the message names as their origin, e.g. the profile's file.

    Returns:
        The checked parameters, ints widened to float where a float is expected.

    Raises:
        ParamError: a key is missing or unknown, or a value (the extras' included) is not
            allowed, alone or with another key.
    """
    out: dict[str, Any] = {}
    for key, spec in TOP_LEVEL_EXTRAS.items():  # checked like every other key
        if key in params:
            out[key] = check_value(spec, params[key], where=source, key=key)
    for section, specs in SCHEMA.items():
        values = params.get(section, {})
        out[section] = {}
        for key, spec in specs.items():
            if key not in values:
                raise ParamError(f"{source}: missing key '{section}.{key}' ({spec.allowed()})")
            out[section][key] = check_value(spec, values[key], where=source, key=f"{section}.{key}")
    for extra in set(params) - set(SCHEMA) - set(TOP_LEVEL_EXTRAS):
        raise ParamError(f"{source}: unknown section '{extra}'")
    # Rules across keys, checked here with the others so a bad combination stops before any work.
    model = out["model"]
    if model["backbone"] == "compact_cnn" and model["weights"] != "none":
        raise ParamError(
            f"{source}: 'model.weights' = {model['weights']!r} is not allowed with "
            "'model.backbone' = 'compact_cnn': expected none (it has no pretrained weights)"
        )
    train = out["train"]
    if (train["lesion_guidance"] > 0) != (train["guidance_epochs"] > 0):
        raise ParamError(
            f"{source}: 'train.lesion_guidance' = {train['lesion_guidance']} and "
            f"'train.guidance_epochs' = {train['guidance_epochs']} do not go together: expected "
            "both above 0 (a guided phase after fine-tuning) or both 0 (no guided phase)"
        )
    if train["guidance_distillation"] > 0 and train["lesion_guidance"] <= 0:
        raise ParamError(
            f"{source}: 'train.guidance_distillation' = {train['guidance_distillation']} needs "
            "a guided phase: expected 'train.lesion_guidance' above 0, or distillation 0"
        )
    unknown = set(out["gradcam"]["cam_methods_compare"]) - set(CAM_METHODS)
    if unknown:
        raise ParamError(
            f"{source}: 'gradcam.cam_methods_compare' has {sorted(unknown)}: "
            f"expected methods from {list(CAM_METHODS)}"
        )
    return out
