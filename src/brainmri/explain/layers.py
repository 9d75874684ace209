"""Which feature map Grad-CAM should explain: the candidate layers of a model, their localisation
per tumour class, and issue 18's localisation goals.

Grad-CAM's default layer (:func:`find_target_layer`) is the backbone's last feature map: the most
class-specific but the coarsest (6x6 cells at 192 px for the `cpu` model, each a sixth of the
image wide, where a small lesion and the skull next to it share a cell). Earlier maps are finer
but their gradients say less about the class (Selvaraju et al. 2017, sec. 3; Jiang et al. 2021,
LayerCAM). :func:`score_layers` puts numbers on that trade-off against tumour masks;
:func:`study_parser` gives the command-line tools that score a trained run (tools/
cam_layer_study.py, tools/guidance_study.py) their common arguments.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from brainmri.config import TUMOUR_CLASSES
from brainmri.explain._plumbing import find_target_layer
from brainmri.explain.report import localisation_report, summarise_localisation

__all__ = [
    "MIN_ENERGY_RATIO",
    "MIN_POINTING",
    "candidate_layers",
    "meets_goals",
    "score_layers",
    "study_parser",
]

MIN_POINTING: float = 0.80
"""Issue 18's goal for every tumour class: Grad-CAM's tolerant pointing rate at least this."""
MIN_ENERGY_RATIO: float = 3.0
"""Issue 18's goal for every tumour class: the energy ratio (the map's energy density on the
lesion over the image's) at least this."""


def meets_goals(scores: Mapping[str, Any]) -> bool:
    """Whether one tumour class's Grad-CAM scores meet issue 18's localisation goals.

    Args:
        scores: the class's ``pointing_rate`` (tolerant), ``energy_ratio`` and
            ``centre_pointing_rate`` (the centre prior's tolerant pointing rate), as
            :func:`score_layers` gives them.

    Returns:
        True when the pointing rate is at least :data:`MIN_POINTING` and above the centre
        prior's, and the energy ratio at least :data:`MIN_ENERGY_RATIO`; False when any of the
        three is missing (None: no mean, e.g. no image).
    """
    pointing, ratio = scores.get("pointing_rate"), scores.get("energy_ratio")
    centre = scores.get("centre_pointing_rate")
    if pointing is None or ratio is None or centre is None:
        return False
    return bool(pointing >= MIN_POINTING and ratio >= MIN_ENERGY_RATIO and pointing > centre)


def candidate_layers(model: keras.Model, *, finest: int = 4) -> list[str]:
    """The output of each finer grid's last block, after Grad-CAM's default layer.

    Args:
        model: a classifier following the model contract (see `brainmri.explain`).
        finest: how many times finer than the default layer's grid a candidate may be.

    Returns:
        Layer names, the default layer (:func:`find_target_layer`) first, then for each finer
        grid, coarse to fine, its last residual sum (``keras.layers.Add``, a block's output in
        EfficientNet) or, in a model without any, its last 4-D layer. (The last layer of a grid
        is otherwise the expansion inside the next block, which only that block reads.)
    """
    default = find_target_layer(model)
    coarsest = model.get_layer(default).output.shape[1]
    residual = any(isinstance(layer, keras.layers.Add) for layer in model.layers)
    last_of: dict[int, str] = {}
    for layer in model.layers:
        shape = getattr(getattr(layer, "output", None), "shape", None)
        if shape is None or len(shape) != 4 or shape[1] is None:
            continue
        if residual and not isinstance(layer, keras.layers.Add):
            continue
        if coarsest < shape[1] <= coarsest * finest:
            last_of[shape[1]] = layer.name  # later layers of the same grid replace earlier ones
    return [default, *(last_of[side] for side in sorted(last_of))]


def score_layers(
    model: keras.Model,
    images: np.ndarray,
    masks: np.ndarray,
    labels: Sequence[str],
    layers: Sequence[str],
    *,
    tolerance: float,
) -> list[dict[str, Any]]:
    """Grad-CAM's localisation per tumour class at each layer, with the centre prior's pointing.

    Args:
        model: a classifier following the model contract (see `brainmri.explain`).
        images: float 0..255 tumour images (N, H, W, 3).
        masks: their boolean tumour masks (N, H, W), none empty.
        labels: their class names (of ``config.TUMOUR_CLASSES``).
        layers: the 4-D layers to explain, by name.
        tolerance: the pointing game's slack in pixels.

    Returns:
        One dict per layer, in the order given: ``layer``, ``grid`` (the map's side), for each
        tumour class among the labels a dict of ``n`` (images), ``pointing_rate``,
        ``pointing_rate_strict``, ``energy_ratio`` and ``centre_pointing_rate``, and
        ``meets_goals``: every class present meets the goals (:func:`meets_goals`).
    """
    results = []
    for layer in layers:
        report = localisation_report(
            model,
            images,
            masks,
            labels,
            methods=["gradcam"],
            steps=None,  # faithfulness is not part of this score
            layer_name=layer,
            tolerance=tolerance,
        )
        classes = summarise_localisation(report)["classes"]
        result: dict[str, Any] = {
            "layer": layer,
            "grid": int(model.get_layer(layer).output.shape[1]),
        }
        for label in TUMOUR_CLASSES:
            if label not in classes:
                continue
            block = classes[label]
            cam, centre = block["methods"]["gradcam"], block["methods"]["centre"]
            result[label] = {
                "n": block["n_images"],
                "pointing_rate": cam["pointing_rate"],
                "pointing_rate_strict": cam["pointing_rate_strict"],
                "energy_ratio": cam["energy_ratio"],
                "centre_pointing_rate": centre["pointing_rate"],
            }
        scored = [result[label] for label in TUMOUR_CLASSES if label in result]
        result["meets_goals"] = all(meets_goals(scores) for scores in scored)
        results.append(result)
    return results


def study_parser(description: str, *, root: Path) -> argparse.ArgumentParser:
    """A command-line parser with the arguments that name a trained run, its masks and how many
    of its validation lesions to score, for the tools that score Grad-CAM of one.

    Args:
        description: the tool's description.
        root: the default of ``--root`` (the project the tool belongs to).

    Returns:
        A parser with ``--profile``, ``--root``, ``--mask-dir`` and ``--per-class``; the tool
        adds its own arguments.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--profile", default="cpu", help="a profile whose run has trained (03)")
    parser.add_argument("--root", type=Path, default=root, help="the project the run lives in")
    parser.add_argument(
        "--mask-dir", help="the masks tree (default: the run's data.mask_dir, or the set's own)"
    )
    parser.add_argument(
        "--per-class",
        type=int,
        default=100_000,
        help="most validation images per tumour class to score (default: all with a mask)",
    )
    return parser
