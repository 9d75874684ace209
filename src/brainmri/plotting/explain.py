"""Figures of the explanations: the reference Grad-CAM view, galleries and localisation scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "plot_cam_gallery",
    "plot_localisation_summary",
    "plot_methods_side_by_side",
    "plot_viz_gradcam",
]


def _show_image(ax: Any, image: Any) -> None:
    """Draw a 0..255 grey or RGB image without axes."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    img = np.clip(img, 0, 255).astype(np.uint8)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
    ax.axis("off")


def plot_viz_gradcam(
    image: np.ndarray,
    heatmap: np.ndarray,
    overlay: np.ndarray,
    probs: Sequence[float],
    class_names: Sequence[str],
) -> Figure:
    """The reference 1x4 view: original, Grad-CAM heatmap, overlay and class probabilities.

    Args:
        image: the original, (H, W), (H, W, 1) or (H, W, 3) with 0..255 values.
        heatmap: the map, (H, W) in [0, 1] (drawn with the jet colour map), or an image
            already coloured (drawn as it is).
        overlay: the heatmap blended onto the image, an RGB image.
        probs: one probability per class name; the highest is drawn in red.
        class_names: the names labelling the probability bars.

    Returns:
        A figure of four panels, the last titled with the predicted class and its
        probability.

    Raises:
        ValueError: probs does not hold one value per class name.
    """
    p = np.asarray(probs, dtype=float)
    if p.shape != (len(class_names),):
        raise ValueError(
            f"probs: expected one probability per class name ({len(class_names)}), got {p.shape}"
        )
    fig, axes = plt.subplots(1, 4, figsize=(16, 4), constrained_layout=True)
    _show_image(axes[0], image)
    axes[0].set_title("Original")
    hm = np.asarray(heatmap)
    if hm.ndim == 2:
        axes[1].imshow(hm, cmap="jet", vmin=0.0, vmax=1.0)
    else:
        axes[1].imshow(hm)
    axes[1].axis("off")
    axes[1].set_title("Grad-CAM heatmap")
    axes[2].imshow(np.asarray(overlay))
    axes[2].axis("off")
    axes[2].set_title("Overlay")
    top = int(np.argmax(p))
    colours = ["tab:red" if i == top else "tab:blue" for i in range(len(p))]
    positions = np.arange(len(p))
    axes[3].barh(positions, p, color=colours)
    axes[3].set_yticks(positions, list(class_names))
    axes[3].invert_yaxis()
    axes[3].set_xlim(0, 1)
    axes[3].set_xlabel("probability")
    axes[3].set_title(f"Predicted: {class_names[top]} ({p[top]:.2f})")
    for y, value in zip(positions, p, strict=True):
        axes[3].text(min(value + 0.02, 0.85), y, f"{value:.2f}", va="center", fontsize=9)
    return fig


def plot_cam_gallery(
    images: Sequence[np.ndarray] | None,
    overlays: Sequence[np.ndarray],
    titles: Sequence[str],
    ncols: int = 4,
) -> Figure:
    """A grid of overlays, each beside its original image when images are given.

    Args:
        images: the originals, each (H, W), (H, W, 1) or (H, W, 3) with 0..255 values, one per
            overlay; None draws the overlays alone.
        overlays: the RGB overlays (e.g. from ``brainmri.explain.overlay``); at least one.
        titles: one title per overlay; with images it goes above the original and the
            overlay is titled "Grad-CAM".
        ncols: the most items per row (fewer when there are fewer overlays); with images
            each item takes two panels.

    Returns:
        The figure; panels without an item are left blank.

    Raises:
        ValueError: there are no overlays, or titles (or images) do not number one per
            overlay.
    """
    n = len(overlays)
    if n == 0:
        raise ValueError("overlays: expected at least one overlay")
    if len(titles) != n or (images is not None and len(images) != n):
        raise ValueError(
            f"titles/images: expected {n} of each (one per overlay), got {len(titles)} titles"
            + ("" if images is None else f" and {len(images)} images")
        )
    ncols = max(1, min(int(ncols), n))
    nrows = int(np.ceil(n / ncols))
    per_item = 1 if images is None else 2
    fig, axes = plt.subplots(
        nrows,
        ncols * per_item,
        figsize=(2.6 * ncols * per_item, 2.8 * nrows),
        squeeze=False,
        constrained_layout=True,
    )
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        row, col = divmod(i, ncols)
        if images is not None:
            _show_image(axes[row, col * 2], images[i])
            axes[row, col * 2].set_title(titles[i], fontsize=8)
            axes[row, col * 2 + 1].imshow(np.asarray(overlays[i]))
            axes[row, col * 2 + 1].set_title("Grad-CAM", fontsize=8)
        else:
            axes[row, col].imshow(np.asarray(overlays[i]))
            axes[row, col].set_title(titles[i], fontsize=8)
    return fig


def plot_methods_side_by_side(
    images: Sequence[np.ndarray],
    maps_by_method: Mapping[str, Sequence[np.ndarray]],
    masks: Sequence[np.ndarray] | None = None,
    alpha: float = 0.5,
) -> Figure:
    """Rows of images, columns of methods: each map over its image, mask contour if given.

    Args:
        images: the images, each (H, W), (H, W, 1) or (H, W, 3) with 0..255 values.
        maps_by_method: per method name, one map per image, each (H, W) in [0, 1] at the
            image's resolution (drawn with the jet colour map).
        masks: one lesion mask (H, W) per image, outlined in white where it is not empty;
            None draws no outlines.
        alpha: the opacity of the maps over the images, in [0, 1].

    Returns:
        A figure with one row per image: the image alone, then one column per method in
        the order of maps_by_method, with the column titles on the first row.

    Raises:
        ValueError: there is no image or no method, or a method's maps or the masks do not
            number one per image.
    """
    n = len(images)
    if n == 0 or not maps_by_method:
        raise ValueError("images/maps_by_method: expected at least one image and one method")
    for method, maps in maps_by_method.items():
        if len(maps) != n:
            raise ValueError(f"maps_by_method[{method!r}]: expected {n} maps, got {len(maps)}")
    if masks is not None and len(masks) != n:
        raise ValueError(f"masks: expected {n} masks, got {len(masks)}")
    methods = list(maps_by_method)
    fig, axes = plt.subplots(
        n,
        len(methods) + 1,
        figsize=(2.6 * (len(methods) + 1), 2.6 * n),
        squeeze=False,
        constrained_layout=True,
    )
    for i in range(n):
        panels = [("image", None), *((m, maps_by_method[m][i]) for m in methods)]
        for ax, (title, cam) in zip(axes[i], panels, strict=True):
            _show_image(ax, images[i])
            if cam is not None:
                ax.imshow(np.asarray(cam), cmap="jet", vmin=0.0, vmax=1.0, alpha=alpha)
            if masks is not None:
                mask = np.asarray(masks[i], dtype=float)
                if mask.any():
                    ax.contour(mask, levels=[0.5], colors="white", linewidths=1.0)
            if i == 0:
                ax.set_title(title)
    return fig


def plot_localisation_summary(summary: Mapping[str, Any]) -> Figure:
    """Grouped bars of both pointing games and the energy ratio, each against its chance level.

    Args:
        summary: the output of ``summarise_localisation``: "methods" (the method names),
            "classes" (per class: "mask_area_fraction", "tolerant_area_fraction" and per
            method the mean "pointing_rate", "pointing_rate_strict" and "energy_ratio") and
            "overall" (the same over all classes).

    Returns:
        A figure of three panels with one group of bars per class and one for "all": the
        tolerant pointing-game hit rate, with the area fraction within the tolerance of the
        mask as its chance level; the strict one, with the mask's area fraction as its chance
        level; and the energy ratio, with chance (1) as a dashed line. Missing values leave a
        gap.

    Raises:
        ValueError: summary lacks "classes", "overall" or "methods".
    """
    for key in ("classes", "overall", "methods"):
        if key not in summary:
            raise ValueError(
                f"summary: missing key {key!r}; expected the output of summarise_localisation"
            )
    groups = {**summary["classes"], "all": summary["overall"]}
    methods = list(summary["methods"])
    # (metric, title, chance per group or a constant): a random point hits the mask with
    # probability equal to its area, and lands within the tolerance of it with probability
    # equal to the area of the mask grown by the tolerance.
    panels = [
        ("pointing_rate", "Pointing game (standard tolerance)", "tolerant_area_fraction"),
        ("pointing_rate_strict", "Pointing game (strict: inside the mask)", "mask_area_fraction"),
        ("energy_ratio", "Energy ratio (1 = chance)", 1.0),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2), constrained_layout=True)
    positions = np.arange(len(groups))
    width = 0.8 / max(len(methods), 1)
    for ax, (metric, title, chance) in zip(axes, panels, strict=True):
        for j, method in enumerate(methods):
            values = [groups[g]["methods"].get(method, {}).get(metric) for g in groups]
            heights = [np.nan if v is None else v for v in values]
            ax.bar(positions + (j - (len(methods) - 1) / 2) * width, heights, width, label=method)
        if isinstance(chance, float):
            ax.axhline(chance, color="black", linestyle="--", linewidth=1, label="chance")
        else:
            levels = [groups[g].get(chance) for g in groups]
            ax.scatter(
                positions,
                [np.nan if v is None else v for v in levels],
                marker="_",
                s=500,
                linewidths=2,
                color="black",
                zorder=3,
                label="chance",
            )
            ax.set_ylim(0, 1)
        ax.set_xticks(positions, list(groups))
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    # one legend for the three panels, under them: inside a panel it hid the bars
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8)
    return fig


def plot_randomization_curve(result: Mapping[str, Any]) -> Figure:
    """The cascading and independent randomisation tests as curves (Adebayo et al. 2018, Fig. 2).

    Args:
        result: the output of ``cascading_randomization``: "steps" (top layer first), each
            with "layer", "cascading", "independent" and the flat-map counts, plus
            "n_images", "max_correlation" and "method".

    Returns:
        A figure with the mean rank correlation between the trained model's maps and the
        randomised model's per step, for both tests, the verdict's threshold as a dashed line,
        and a cross where every map of a step was flat (no correlation defined).
    """
    steps = result.get("steps") or []
    if not steps:
        raise ValueError("result: no steps; expected the output of cascading_randomization")
    x = np.arange(len(steps))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.32 * len(steps) + 3), 4.2), constrained_layout=True)
    for key, label, colour in (
        ("cascading", "cascading (top down, cumulative)", "tab:red"),
        ("independent", "independent (one group at a time)", "tab:blue"),
    ):
        values = np.array([np.nan if s[key] is None else s[key] for s in steps], dtype=float)
        ax.plot(x, values, marker="o", color=colour, label=label)
        flat = [i for i, s in enumerate(steps) if s[key] is None]
        if flat:
            ax.scatter(flat, np.zeros(len(flat)), marker="x", s=60, color=colour, zorder=3)
    ax.axhline(result.get("max_correlation", 0.5), color="black", linestyle="--", linewidth=1)
    ax.set_xticks(x, [s["layer"] for s in steps], rotation=60, ha="right", fontsize=7)
    ax.set_ylim(-0.2, 1.05)
    ax.set_xlabel("layer group re-initialised (from the output towards the input)")
    ax.set_ylabel("mean Spearman correlation with the trained map")
    ax.set_title(
        f"Model-parameter randomisation of {result.get('method', 'the method')} over "
        f"{result.get('n_images', '?')} images (x: every map flat)"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_erasure_examples(
    images: Sequence[np.ndarray],
    erased: Mapping[str, Sequence[np.ndarray]],
    table: Any,
    picks: Sequence[int],
) -> Figure:
    """Rows of images: as given, lesion erased, control erased, each titled with p(true class).

    Args:
        images: the original images (H, W, 3), 0..255.
        erased: {"lesion": images, "control": images} from ``explain.erasure.erasure_test``.
        table: its per-image table (``label``, ``p_original``, ``p_lesion_erased``,
            ``p_control_erased``).
        picks: the row indices to draw.

    Returns:
        A figure with one row per pick and three columns.
    """
    if len(picks) == 0:
        raise ValueError("picks: expected at least one image index")
    fig, axes = plt.subplots(
        len(picks), 3, figsize=(7.8, 2.6 * len(picks)), squeeze=False, constrained_layout=True
    )
    columns = (
        ("original", images, "p_original"),
        ("lesion erased", erased["lesion"], "p_lesion_erased"),
        ("control erased", erased["control"], "p_control_erased"),
    )
    for row, i in zip(axes, picks, strict=True):
        for ax, (name, batch, column) in zip(row, columns, strict=True):
            _show_image(ax, batch[i])
            label = table["label"].iloc[i]
            ax.set_title(f"{name}\np({label}) = {table[column].iloc[i]:.2f}", fontsize=9)
    return fig
