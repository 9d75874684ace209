"""Localisation reports: one row per image and method against the tumour masks, with the
model-free baselines for comparison, and their JSON-ready summary per class."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cv2
import keras
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from brainmri import config
from brainmri.explain._plumbing import _as_batch, _nan_to_none
from brainmri.explain.methods import centre_prior, explain, method_label
from brainmri.explain.metrics import (
    deletion_insertion,
    energy_pointing,
    energy_ratio,
    otsu_iou,
    pointing_game,
)

__all__ = [
    "BASELINES",
    "METRICS",
    "localisation_report",
    "paired_pointing",
    "summarise_localisation",
]

BASELINES: tuple[str, ...] = ("random", "centre")
"""Model-free maps every localisation report includes for comparison."""
METRICS: tuple[str, ...] = (
    "pointing",
    "pointing_strict",
    "energy",
    "energy_ratio",
    "iou",
    "deletion_auc",
    "insertion_auc",
)
"""The metric columns of a localisation report."""


def _label_indices(labels: Iterable[Any], n: int) -> np.ndarray:
    """Class indices from class names or integers."""
    out = []
    for label in labels:
        if isinstance(label, str):
            if label not in config.CLASS_NAMES:
                raise ValueError(f"labels: {label!r} is not one of {list(config.CLASS_NAMES)}")
            out.append(config.CLASS_NAMES.index(label))
        else:
            out.append(int(label))
    idx = np.asarray(out, dtype=np.int64)
    if idx.shape != (n,):
        raise ValueError(f"labels: expected one label per image ({n}), got {len(idx)}")
    if len(idx) and (idx.min() < 0 or idx.max() >= len(config.CLASS_NAMES)):
        raise ValueError(f"labels: expected class indices in [0, {len(config.CLASS_NAMES)})")
    return idx


def localisation_report(
    model: keras.Model,
    images: ArrayLike,
    masks: ArrayLike,
    labels: Sequence[Any],
    *,
    methods: Sequence[str] = ("gradcam",),
    seed: int = 0,
    steps: int | None = 20,
    layer_name: str | None = None,
    batch_size: int = 32,
    tolerance: float = 0.0,
    max_channels: int | None = None,
    faithfulness_images: int | None = None,
) -> pd.DataFrame:
    """One row per image x method (plus random and centre baselines) of localisation metrics.

    `pointing` allows `tolerance` pixels (the pointing game's standard slack); `pointing_strict`
    allows none. Their chance levels differ: a random point hits the mask with probability
    `mask_area`, and lands within the tolerance with probability `tolerant_area` (the area of
    the mask grown by the tolerance, several times larger for a small lesion).

    Each map explains the image's labelled class. Faithfulness (deletion/insertion AUC) is
    computed for every map, the baselines included, which gives the methods' AUCs their
    reference point; it is skipped entirely when steps is None. It costs ``2 (steps + 1)``
    forward passes per image and map, where the other metrics cost none: `faithfulness_images`
    limits it to the first images of each class, so that the cheap metrics can be scored on
    every image with a mask.

    Args:
        model: a classifier following the model contract (see `brainmri.explain`).
        images: a float batch (N, H, W, 3) of 0..255 pixels of tumour images.
        masks: their boolean tumour masks (N, H, W), none of them empty.
        labels: their classes, as names of config.CLASS_NAMES or indices.
        methods: names of config.CAM_METHODS; the `BASELINES` are added.
        seed: the seed of the random baseline.
        steps: the steps of `deletion_insertion`, or None to skip faithfulness.
        layer_name: the 4-D feature-map layer explained; None finds it (`find_target_layer`).
        batch_size: images per forward (and backward) pass.
        tolerance: the pointing game's slack in pixels.
        max_channels: Score-CAM's channel cap (None: every channel); a capped Score-CAM is
            labelled as such (`method_label`).
        faithfulness_images: deletion/insertion for the first this many images of each class
            (in the order given), NaN for the rest; None: every image.

    Returns:
        A DataFrame with columns image, label, method, the `METRICS`, mask_area (the mask's
        area fraction) and tolerant_area (the area fraction within `tolerance` of the mask);
        the AUCs are NaN where not computed.
    """
    x = _as_batch(images, model)
    n, height, width = x.shape[:3]
    mask_arr = np.asarray(masks).astype(bool)
    if mask_arr.shape != (n, height, width):
        raise ValueError(f"masks: expected shape {(n, height, width)}, got {mask_arr.shape}")
    empty = np.flatnonzero(~mask_arr.any(axis=(1, 2)))
    if empty.size:
        raise ValueError(f"masks: images {empty.tolist()} have an empty mask; expected tumours")
    label_idx = _label_indices(labels, n)
    if faithfulness_images is not None and faithfulness_images < 1:
        raise ValueError(f"faithfulness_images: expected None or >= 1, got {faithfulness_images}")
    # each image's rank within its class: faithfulness for the first faithfulness_images
    rank = pd.Series(label_idx).groupby(label_idx).cumcount().to_numpy()
    faithful = rank < (faithfulness_images or n)
    unknown = [m for m in methods if m not in config.CAM_METHODS]
    if unknown:
        raise ValueError(f"methods: {unknown} unknown; expected from {list(config.CAM_METHODS)}")
    all_methods = list(dict.fromkeys([*methods, *BASELINES]))
    tolerant = [
        float(
            (
                cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
                <= tolerance
            ).mean()
        )
        for m in mask_arr
    ]
    rows = []
    for method in all_methods:
        if method == "centre":
            maps = np.broadcast_to(centre_prior((height, width)), (n, height, width))
        else:
            maps = explain(
                method,
                model,
                x,
                class_index=label_idx,
                layer_name=layer_name,
                batch_size=batch_size,
                seed=seed,
                max_channels=max_channels,
            )
        for i in range(n):
            row: dict[str, Any] = {
                "image": i,
                "label": config.CLASS_NAMES[label_idx[i]],
                "method": method_label(method, max_channels),
                "pointing": pointing_game(maps[i], mask_arr[i], tolerance),
                "pointing_strict": pointing_game(maps[i], mask_arr[i]),
                "energy": energy_pointing(maps[i], mask_arr[i]),
                "energy_ratio": energy_ratio(maps[i], mask_arr[i]),
                "iou": otsu_iou(maps[i], mask_arr[i]),
                "deletion_auc": np.nan,
                "insertion_auc": np.nan,
                "mask_area": float(mask_arr[i].mean()),
                "tolerant_area": tolerant[i],
            }
            if steps is not None and faithful[i]:
                faith = deletion_insertion(
                    model, x[i], maps[i], class_index=int(label_idx[i]), steps=steps
                )
                row["deletion_auc"] = faith["deletion_auc"]
                row["insertion_auc"] = faith["insertion_auc"]
            rows.append(row)
    return pd.DataFrame(rows)


def _method_means(df: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Mean of each metric per method (pointing as a rate)."""
    out = {}
    for method, group in df.groupby("method", sort=False):
        means = {
            (f"{metric.replace('pointing', 'pointing_rate')}"): _nan_to_none(
                float(group[metric].astype(float).mean())
            )
            for metric in METRICS
        }
        out[str(method)] = means
    return out


def summarise_localisation(df: pd.DataFrame) -> dict[str, Any]:
    """JSON-ready means per class and method (and overall), with each class's mask area fraction.

    Args:
        df: a table of `localisation_report`.

    Returns:
        {"methods": [names in table order], "classes": {class: block}, "overall": block}, each
        block {"n_images", "n_faithfulness" (of them, those with deletion/insertion AUCs; the
        AUC means are over these), "mask_area_fraction" (chance of the strict pointing game),
        "tolerant_area_fraction" (chance of the tolerant one), "methods": {method: {metric mean, with
        pointing as "pointing_rate" and "pointing_rate_strict"}}}; None where a mean is NaN.
    """
    needed = ["image", "label", "method", *METRICS, "mask_area", "tolerant_area"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"localisation table: missing column(s) {missing}; expected {needed}")

    def block(part: pd.DataFrame) -> dict[str, Any]:
        per_image = part.drop_duplicates("image")
        return {
            "n_images": int(len(per_image)),
            # deletion/insertion may cover fewer (localisation_report's faithfulness_images)
            "n_faithfulness": int(per_image["deletion_auc"].notna().sum()),
            "mask_area_fraction": _nan_to_none(float(per_image["mask_area"].mean())),
            "tolerant_area_fraction": _nan_to_none(float(per_image["tolerant_area"].mean())),
            "methods": _method_means(part),
        }

    classes = {str(c): block(g) for c, g in df.groupby("label", sort=True)}
    return {
        "methods": list(dict.fromkeys(df["method"].astype(str))),
        "classes": classes,
        "overall": block(df),
    }


def paired_pointing(
    reports: Mapping[str, pd.DataFrame], *, method: str = "gradcam"
) -> dict[str, Any]:
    """Tolerant pointing of two models' maps on the same lesions, per class, with McNemar's
    exact test on the lesions only one of them hits (a guided model against its unguided start).

    Args:
        reports: two named :func:`localisation_report` tables of the same images, in order
            (e.g. ``{"unguided": ..., "guided": ...}``).
        method: the method whose maps are compared.

    Returns:
        ``{"names", "method", "classes": {class: entry}, "overall": entry}``, each entry
        ``{"n", "pointing_rate": {name: rate}, "centre_prior": rate, "mcnemar": {...}}``
        (see ``brainmri.evaluation.mcnemar_test``); the centre prior is the first report's
        centre baseline on the same lesions, the bar both must clear.

    Raises:
        ValueError: not two reports, or they do not hold the same images and labels.
    """
    from brainmri.evaluation import mcnemar_test  # evaluation does not import explain

    if len(reports) != 2:
        raise ValueError(f"reports: expected two named tables, got {len(reports)}")
    (name_a, a), (name_b, b) = reports.items()
    hits = {}
    for name, table in ((name_a, a), (name_b, b)):
        rows = table[table["method"] == method].sort_values("image")
        if rows.empty:
            raise ValueError(f"reports[{name!r}]: no rows for method {method!r}")
        hits[name] = rows
    if not np.array_equal(hits[name_a][["image", "label"]], hits[name_b][["image", "label"]]):
        raise ValueError(f"reports {name_a!r} and {name_b!r} do not hold the same images")
    centre = a[a["method"] == "centre"].sort_values("image")["pointing"].to_numpy(dtype=bool)
    labels = hits[name_a]["label"].to_numpy()

    def entry(keep: np.ndarray) -> dict[str, Any]:
        got = {k: v["pointing"].to_numpy(dtype=bool)[keep] for k, v in hits.items()}
        return {
            "n": int(keep.sum()),
            "pointing_rate": {
                k: _nan_to_none(float(v.mean()) if len(v) else np.nan) for k, v in got.items()
            },  # fmt: skip
            "centre_prior": _nan_to_none(float(centre[keep].mean()) if keep.any() else np.nan),
            "mcnemar": mcnemar_test(got[name_a], got[name_b]),
        }

    return {
        "names": [name_a, name_b],
        "method": method,
        "classes": {str(c): entry(labels == c) for c in sorted(set(labels))},
        "overall": entry(np.ones(len(labels), dtype=bool)),
    }
