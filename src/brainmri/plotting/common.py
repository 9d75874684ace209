"""Figures shared by several notebooks: saving, training curves and image galleries."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def save_figure(fig: Figure, folder: Path, name: str, dpi: int = 110) -> Path:
    """Save a figure as folder/name.png (the report keeps it inline too) and return the path.

    The figure is left open, so a notebook still displays it.

    Args:
        fig: the figure to save.
        folder: the output folder, created when missing (usually ``Paths.figures_dir``).
        name: the file stem, without ".png".
        dpi: the resolution of the PNG in dots per inch.

    Returns:
        The path of the PNG written (cropped to the drawn content).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def plot_training_curves(history: pd.DataFrame) -> Figure:
    """Loss, accuracy and learning rate per epoch (training and validation).

    Args:
        history: the training history, one row per epoch (history.csv as Keras' CSVLogger
            writes it): a 0-based "epoch" column (drawn from 1), "loss" and "accuracy", and
            optionally "val_loss", "val_accuracy" and "learning_rate" (drawn on a log scale).

    Returns:
        A figure of three panels: loss, accuracy and learning rate against the epoch.
    """
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    epochs = history["epoch"] + 1
    for ax, metric in zip(axes[:2], ("loss", "accuracy"), strict=True):
        ax.plot(epochs, history[metric], marker="o", label="training")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend()
        ax.grid(alpha=0.3)
    if "learning_rate" in history:
        axes[2].plot(epochs, history["learning_rate"], marker="o", color="tab:green")
        axes[2].set_yscale("log")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("learning rate")
    axes[2].grid(alpha=0.3)
    fig.suptitle("Training curves")
    fig.tight_layout()
    return fig


def plot_image_gallery(
    images: Sequence[np.ndarray], titles: Sequence[str], ncols: int = 4, size: float = 3.0
) -> Figure:
    """A grid of images with a title above each.

    Args:
        images: the images, each (H, W) or (H, W, 3) with 0..255 values (cast to uint8; 2-D
            images are drawn in grey).
        titles: one title per image; titles beyond the number of images are not drawn.
        ncols: the most images per row (fewer when there are fewer images).
        size: the side of each panel in inches.

    Returns:
        The figure; panels without an image are left blank.
    """
    n = max(len(images), 1)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols, size * nrows + 0.4), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, title in zip(axes.ravel(), images, titles, strict=False):
        ax.imshow(np.asarray(image).astype(np.uint8), cmap="gray")
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig
