"""Dataset figures: class balance, sample images, sizes and modes, intensities, the head's share
of the frame, duplicates."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from brainmri.config import CLASS_NAMES, SPLITS
from brainmri.data import SCAN_COLUMNS, brain_box, crop_square, load_image

__all__ = [
    "plot_class_counts",
    "plot_duplicate_pairs",
    "plot_head_fill",
    "plot_intensity_histograms",
    "plot_sample_grid",
    "plot_size_mode",
]

_THUMB = 160  # side of the images drawn in galleries, in pixels
_COLOURS = dict(zip(CLASS_NAMES, plt.get_cmap("tab10").colors, strict=False))


def _ok_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """The usable rows of a manifest, after checking it is one."""
    missing = [c for c in SCAN_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest: missing column(s) {missing}; expected {list(SCAN_COLUMNS)}")
    return manifest[manifest["status"] == "ok"]


def _sample(rows: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Up to n rows drawn without replacement, reproducibly."""
    return rows.sample(n=min(n, len(rows)), random_state=seed) if n > 0 else rows.iloc[:0]


def _empty(fig: Figure, ax, text: str) -> Figure:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.axis("off")
    return fig


def plot_class_counts(manifest: pd.DataFrame) -> Figure:
    """Bars of usable images per class, one bar per split, with the counts written on them.

    Args:
        manifest: the data set manifest (columns ``SCAN_COLUMNS``); only rows with status
            "ok" are used.

    Returns:
        A figure with one group of bars per class of ``CLASS_NAMES``.

    Raises:
        ValueError: the manifest lacks a column of ``SCAN_COLUMNS``.
    """
    ok = _ok_rows(manifest)
    counts = (
        ok.groupby(["label", "split"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=list(CLASS_NAMES), columns=list(SPLITS), fill_value=0)
    )
    fig, ax = plt.subplots(figsize=(8, 4.2), constrained_layout=True)
    width = 0.8 / len(SPLITS)
    x = np.arange(len(CLASS_NAMES))
    for i, split in enumerate(SPLITS):
        bars = ax.bar(x + (i - (len(SPLITS) - 1) / 2) * width, counts[split], width, label=split)
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(x, CLASS_NAMES)
    ax.set(xlabel="class", ylabel="images (status ok)", title="Images per class and split")
    ax.legend(title="split")
    ax.margins(y=0.12)
    return fig


def plot_sample_grid(manifest: pd.DataFrame, root: Path | str, per_class: int, seed: int) -> Figure:
    """A grid of randomly drawn images, one row per class, as decoded (load_image, uncropped).

    Args:
        manifest: the data set manifest (columns ``SCAN_COLUMNS``); only rows with status
            "ok" are used.
        root: the data root the manifest's "path" values are relative to.
        per_class: images drawn per class (columns of the grid; at least 1); a class with
            fewer images leaves the rest of its row empty.
        seed: the seed of the draw, so a rerun shows the same images.

    Returns:
        A figure with one row per class of ``CLASS_NAMES``, each image titled with its split
        and file name.

    Raises:
        ValueError: the manifest lacks a column of ``SCAN_COLUMNS``, or an image cannot be
            read (see ``load_image``).
    """
    ok = _ok_rows(manifest)
    per_class = max(int(per_class), 1)
    fig, axes = plt.subplots(
        len(CLASS_NAMES),
        per_class,
        figsize=(1.9 * per_class, 2.0 * len(CLASS_NAMES)),
        squeeze=False,
        constrained_layout=True,
    )
    for row, label in enumerate(CLASS_NAMES):
        chosen = _sample(ok[ok["label"] == label], per_class, seed)
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(label, fontsize=11)
            if col >= len(chosen):
                ax.set_frame_on(False)
                continue
            item = chosen.iloc[col]
            ax.imshow(load_image(Path(root) / item["path"], _THUMB))
            ax.set_title(f"{item['split']} · {Path(item['path']).name}", fontsize=6)
    fig.suptitle(f"Random images per class (seed {seed})")
    return fig


def plot_size_mode(manifest: pd.DataFrame) -> Figure:
    """Image dimensions, colour modes per split, and file sizes per class.

    Args:
        manifest: the manifest; as in :func:`plot_class_counts`, excluded rows are ignored.

    Returns:
        A figure of three panels: the ten most common width x height sizes, the number of
        images per colour mode and split, and histograms of the file size (KiB) per class.
        Without usable rows it says "no usable images" instead.

    Raises:
        ValueError: the manifest lacks a column of ``SCAN_COLUMNS``.
    """
    ok = _ok_rows(manifest)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    if ok.empty:
        for ax in axes[1:]:
            ax.axis("off")
        return _empty(fig, axes[0], "no usable images")
    sizes = (ok["width"].astype(str) + "x" + ok["height"].astype(str)).value_counts()
    top = sizes.iloc[:10][::-1]
    axes[0].barh(top.index, top.to_numpy(), color="tab:gray")
    axes[0].set(xlabel="images", title=f"Image size (width x height), {len(sizes)} distinct")

    modes = ok.groupby(["mode", "split"]).size().unstack(fill_value=0)
    modes = modes.reindex(columns=[s for s in SPLITS if s in modes.columns])
    y = np.arange(len(modes))
    height = 0.8 / max(len(modes.columns), 1)
    for i, split in enumerate(modes.columns):
        bars = axes[1].barh(y + i * height, modes[split], height, label=split)
        axes[1].bar_label(bars, fontsize=8)
    axes[1].set_yticks(y + height * (len(modes.columns) - 1) / 2, modes.index)
    axes[1].set(xlabel="images", title="Colour mode per split")
    axes[1].legend(title="split")

    for label in CLASS_NAMES:
        kib = ok.loc[ok["label"] == label, "bytes"] / 1024
        if len(kib):
            axes[2].hist(kib, bins=40, histtype="step", color=_COLOURS[label], label=label)
    axes[2].set(xlabel="file size (KiB)", ylabel="images", title="File size per class")
    axes[2].legend()
    return fig


def plot_intensity_histograms(
    manifest: pd.DataFrame, root: Path | str, per_class_limit: int, seed: int
) -> Figure:
    """Grey-level histograms per class and the spread of per-image mean intensity.

    Images are read with ``load_image`` at 160 x 160 pixels and converted to grey.

    Args:
        manifest: the data set manifest (columns ``SCAN_COLUMNS``); only rows with status
            "ok" are used.
        root: the data root the manifest's "path" values are relative to.
        per_class_limit: the most images drawn per class.
        seed: the seed of the draw.

    Returns:
        A figure of two panels: the normalised grey-level histogram of each class (log
        scale) and box plots of the per-image mean grey level per class. Classes without
        usable images are left out; with none at all it says "no usable images".

    Raises:
        ValueError: the manifest lacks a column of ``SCAN_COLUMNS``, or an image cannot be
            read (see ``load_image``).
    """
    ok = _ok_rows(manifest)
    fig, (ax_hist, ax_mean) = plt.subplots(1, 2, figsize=(13, 4.2), constrained_layout=True)
    means: dict[str, np.ndarray] = {}
    for label in CLASS_NAMES:
        chosen = _sample(ok[ok["label"] == label], int(per_class_limit), seed)
        if chosen.empty:
            continue
        hist = np.zeros(256, dtype=np.float64)
        label_means = []
        for rel in chosen["path"]:
            image = load_image(Path(root) / rel, _THUMB)
            grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            hist += np.bincount(grey.ravel(), minlength=256)
            label_means.append(grey.mean())
        means[label] = np.asarray(label_means)
        ax_hist.plot(
            np.arange(256),
            hist / hist.sum(),
            color=_COLOURS[label],
            label=f"{label} (n={len(chosen)})",
        )
    ax_hist.set_yscale("log")
    ax_hist.set(
        xlabel="grey level (after load_image)",
        ylabel="fraction of pixels (log)",
        title=f"Grey-level histograms (up to {per_class_limit} images per class)",
    )
    if not means:
        ax_mean.axis("off")
        return _empty(fig, ax_hist, "no usable images")
    ax_hist.legend()
    box = ax_mean.boxplot(list(means.values()), patch_artist=True)
    for patch, label in zip(box["boxes"], means, strict=True):
        patch.set_facecolor(_COLOURS[label])
        patch.set_alpha(0.5)
    ax_mean.set_xticks(np.arange(1, len(means) + 1), list(means))
    ax_mean.set(ylabel="mean grey level per image", title="Per-image mean intensity")
    return fig


def plot_head_fill(
    manifest: pd.DataFrame, root: Path | str, per_class_limit: int, seed: int
) -> Figure:
    """How much of the frame the head fills, per class, and what ``model.crop_to_brain`` cuts.

    The head's square is :func:`brainmri.data.brain_box`; its side over the image side is 1 for
    a head that fills the frame and small for one in wide black margins. Classes whose images
    come from different collections can differ here, a cue a model can learn instead of the
    anatomy (and Grad-CAM then points at the margins).

    Args:
        manifest: the manifest (see ``brainmri.data.scan_dataset``); rows with status "ok" used.
        root: the data root the manifest's "path" values are relative to.
        per_class_limit: the most images drawn per class.
        seed: the seed of the draw.

    Returns:
        A figure: box plots of the head's share of the image side per class (with each class's
        median), and one drawn image per class with its square, next to the crop.

    Raises:
        ValueError: the manifest lacks a column of ``SCAN_COLUMNS``, or an image cannot be read.
    """
    ok = _ok_rows(manifest)
    shares: dict[str, np.ndarray] = {}
    examples: dict[str, tuple[np.ndarray, tuple[int, int, int]]] = {}
    for label in CLASS_NAMES:
        chosen = _sample(ok[ok["label"] == label], int(per_class_limit), seed)
        values = []
        for rel in chosen["path"]:
            image = load_image(Path(root) / rel, _THUMB)
            box = brain_box(image)
            values.append(box[2] / _THUMB)
            examples.setdefault(label, (image, box))
        if values:
            shares[label] = np.asarray(values)
    fig = plt.figure(figsize=(13, 4.6), constrained_layout=True)
    grid = fig.add_gridspec(2, 1 + len(CLASS_NAMES), width_ratios=[3] + [1] * len(CLASS_NAMES))
    ax = fig.add_subplot(grid[:, 0])
    if not shares:
        return _empty(fig, ax, "no usable images")
    box_plot = ax.boxplot(list(shares.values()), patch_artist=True)
    for patch, label in zip(box_plot["boxes"], shares, strict=True):
        patch.set_facecolor(_COLOURS[label])
        patch.set_alpha(0.5)
    ax.set_xticks(
        np.arange(1, len(shares) + 1),
        [f"{k}\nmedian {np.median(v):.2f}" for k, v in shares.items()],
    )
    ax.set(
        ylabel="head square side / image side",
        title=f"The head's share of the frame (up to {per_class_limit} images per class)",
    )
    for col, (label, (image, (x0, y0, side))) in enumerate(examples.items(), start=1):
        top, bottom = fig.add_subplot(grid[0, col]), fig.add_subplot(grid[1, col])
        top.imshow(image)
        top.add_patch(plt.Rectangle((x0, y0), side, side, fill=False, edgecolor="yellow", lw=1.5))
        top.set_title(label, fontsize=9)
        bottom.imshow(crop_square(image, (x0, y0, side)))
        bottom.set_title("cropped", fontsize=9)
        for a in (top, bottom):
            a.axis("off")
    return fig


def plot_duplicate_pairs(
    manifest: pd.DataFrame,
    root: Path | str,
    pairs: Sequence[Sequence],
    *,
    value_name: str = "pixel correlation",
    title: str = "Duplicate pairs",
) -> Figure:
    """Image pairs side by side with split, class and the value that paired them.

    Args:
        manifest: the data set manifest (columns ``SCAN_COLUMNS``); only rows with status
            "ok" are used.
        root: the data root the manifest's "path" values are relative to.
        pairs: ``(path_a, path_b, value)`` triples, paths as in the manifest's "path"
            column (e.g. the audit's "threshold_pairs").
        value_name: what the value is, written beside each pair.
        title: the figure's title.

    Returns:
        A figure with one row per pair; a pair whose labels differ is marked "LABELS
        DIFFER" in red. Without pairs it says "no duplicate pairs" instead.

    Raises:
        ValueError: the manifest lacks a column of ``SCAN_COLUMNS``, a pair's path is not a
            usable row of the manifest, or an image cannot be read (see ``load_image``).
    """
    rows = _ok_rows(manifest).set_index("path")
    pairs = [tuple(p) for p in pairs]
    fig, axes = plt.subplots(
        max(len(pairs), 1),
        2,
        figsize=(5.2, 2.7 * max(len(pairs), 1)),
        squeeze=False,
        constrained_layout=True,
    )
    if not pairs:
        axes[0, 1].axis("off")
        return _empty(fig, axes[0, 0], "no duplicate pairs")
    for (path_a, path_b, distance), (ax_a, ax_b) in zip(pairs, axes, strict=True):
        for ax, rel in ((ax_a, path_a), (ax_b, path_b)):
            if rel not in rows.index:
                raise ValueError(f"pair path {rel!r} is not a usable row of the manifest")
            item = rows.loc[rel]
            ax.imshow(load_image(Path(root) / rel, _THUMB))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{item['split']}/{item['label']}\n{Path(rel).name}", fontsize=7)
        same = rows.loc[path_a, "label"] == rows.loc[path_b, "label"]
        ax_a.set_ylabel(
            f"{value_name} {distance:g}" + ("" if same else "\nLABELS DIFFER"),
            fontsize=8,
            color="black" if same else "red",
        )
    fig.suptitle(title, fontsize=9)
    return fig
