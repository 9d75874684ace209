"""Figures shared by several notebooks: saving, training curves and image galleries."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def save_figure(fig: Figure, folder: Path, name: str, *, dpi: int = 110) -> None:
    """Save a figure as folder/name.png, show that PNG in the notebook, and close the figure.

    One call does both jobs of a report figure. The PNG shown is the file written, so the
    notebook, its HTML and figures/ hold the same picture, whatever matplotlib backend the
    kernel runs (the pipeline runs kernels with the non-interactive Agg backend, which never
    displays anything by itself). The output carries the name as its "alt" text, which the
    HTML reports keep. Outside IPython (a script) nothing is shown. Closing the figure keeps
    an interactive inline backend from drawing it a second time at the end of the cell.

    Args:
        fig: the figure to save.
        folder: the output folder, created when missing (usually ``Paths.figures_dir``).
        name: the file stem, without ".png"; also the figure's alt text.
        dpi: the resolution of the PNG in dots per inch.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    _display_png(path, alt=name)


def _display_png(path: Path, alt: str) -> None:
    """Display a PNG file as an image/png output when running in an IPython kernel."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # no IPython: a plain script, nothing to display on
        return
    if get_ipython() is None:
        return
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    display(
        {"image/png": data, "text/plain": f"<figure {alt}>"},
        raw=True,
        metadata={"image/png": {"alt": alt}},
    )


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
