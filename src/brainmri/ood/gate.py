"""The input gate of the OOD guard: cheap checks of a scan's own pixels, before the model.

A brain MRI slice of this data set is grey (its three channels equal, up to JPEG noise), not
blank, and shows one head on dark air: a bright region (the head of ``data.brain_box``) of a
plausible size and a roughly elliptic shape, and a dark image border. Each check measures one
number (:func:`measure`); its plausible range is the range of the **training** images'
values (:func:`fit_gate`: their 0.1st to 99.9th percentiles by default), never tuned on
foreign images. A scan outside a range is refused with one short reason (:data:`REASONS`).

The colour and blank checks hold whatever the data; the head checks' ranges belong to the
run's training images and travel in its metrics (``evaluate.ood.gate``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from brainmri.data.images import head_region

MEASURES = ("colour", "contrast", "head_side", "head_fill", "border")
"""What :func:`measure` returns for a scan, in the order the checks refuse."""

REASONS = {
    "colour": "colour image, not a grey-level slice",
    "contrast": "blank or near-constant image",
    "head_side": "no head region of plausible size",
    "head_fill": "head region of implausible shape",
    "border": "bright border, not a slice on dark background",
}
"""The one-phrase reason of each check's refusal."""

SIDES = {
    "colour": ("high",),
    "contrast": ("low",),
    "head_side": ("low", "high"),
    "head_fill": ("low", "high"),
    "border": ("high",),
}
"""Which ends of each measure's training range refuse: more colour than any training slice,
less contrast, a head smaller or larger, filling its box less or more; a brighter border.

The head's aspect ratio is not checked: on the `cpu` run a held-out copy group of 46 narrow
notumor slices (width/height 0.50-0.55) lay below the training images' 0.1st percentile (0.565),
so a bound there refused 8% of validation; copy groups go whole to one subset, and the training
range understates the slices' variety."""

_BORDER = 0.04
"""The border strip's width, as a share of the image's shorter side."""


def measure(rgb: np.ndarray) -> dict[str, float]:
    """The gate's measures of one scan at its own size.

    Args:
        rgb: uint8 pixels, (H, W, 3) or (H, W).

    Returns:
        ``colour``: the mean over pixels of the largest difference between two channels
        (0 for a grey image); ``contrast``: the standard deviation of the grey levels;
        ``head_side``: the head's longer side over the image's longer side (0 without a head);
        ``head_fill``: the head's area over its bounding box's (an ellipse fills 0.79);
        ``border``: the mean grey level of the image's outer strip (4% of the shorter side).
    """
    rgb = np.asarray(rgb)
    if rgb.ndim == 3:
        channels = rgb.astype(np.int16)
        colour = float((channels.max(axis=2) - channels.min(axis=2)).mean())
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        colour, grey = 0.0, rgb
    height, width = grey.shape
    strip = max(1, round(_BORDER * min(height, width)))
    ring = np.ones_like(grey, bool)
    ring[strip:-strip, strip:-strip] = False
    values = {
        "colour": colour,
        "contrast": float(grey.std()),
        "head_side": 0.0,
        "head_fill": 0.0,
        "border": float(grey[ring].mean()),
    }
    region = head_region(grey)
    if region is not None:
        (_, _, w, h), area = region
        values.update(head_side=max(w, h) / max(height, width), head_fill=area / max(w * h, 1))
    return values


@dataclass
class GateBounds:
    """The plausible range of each measure: the training images' (:func:`fit_gate`)."""

    low: dict[str, float]
    high: dict[str, float]
    quantile: float
    """The training percentile each bound sits at (0.001: the 0.1st and 99.9th)."""
    n_images: int
    """How many training images the bounds come from."""

    def check(self, values: Mapping[str, float]) -> str | None:
        """The measure a scan fails first (:data:`MEASURES` order), or None where it passes."""
        for name in MEASURES:
            if name in self.low and values[name] < self.low[name]:
                return name
            if name in self.high and values[name] > self.high[name]:
                return name
        return None

    def reason(self, rgb: np.ndarray) -> str | None:
        """The refusal's one-phrase reason (:data:`REASONS`) for a scan, or None: it passes."""
        failed = self.check(measure(rgb))
        return None if failed is None else REASONS[failed]

    def to_json(self) -> dict[str, Any]:
        """The bounds for metrics.json (``evaluate.ood.gate``)."""
        return {
            "low": self.low,
            "high": self.high,
            "quantile": self.quantile,
            "n_images": self.n_images,
        }

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> GateBounds:
        """Bounds read back from metrics.json."""
        return cls(
            low={k: float(v) for k, v in record["low"].items()},
            high={k: float(v) for k, v in record["high"].items()},
            quantile=float(record["quantile"]),
            n_images=int(record["n_images"]),
        )


def fit_gate(measures: Iterable[Mapping[str, float]], *, quantile: float = 0.001) -> GateBounds:
    """The gate's bounds from the training images' measures.

    Args:
        measures: :func:`measure` of each training image (at its own size, as read).
        quantile: each bound sits at this percentile of the training values (and at
            ``1 - quantile``): about ``2 * quantile`` of in-distribution slices per measure fall
            outside, which the validation count of the guard then shows.

    Returns:
        The :class:`GateBounds`.
    """
    if not 0 <= quantile < 0.5:
        raise ValueError(f"quantile: expected a share in [0, 0.5), got {quantile!r}")
    measures = list(measures)
    table = {name: np.array([m[name] for m in measures], np.float64) for name in MEASURES}
    n = len(table["colour"])
    if n == 0:
        raise ValueError("no training images to fit the gate on")
    low = {
        name: float(np.quantile(v, quantile)) for name, v in table.items() if "low" in SIDES[name]
    }
    high = {
        name: float(np.quantile(v, 1 - quantile))
        for name, v in table.items()
        if "high" in SIDES[name]
    }
    return GateBounds(low=low, high=high, quantile=quantile, n_images=n)
