"""The EfficientNet-Lite variants: their scaling coefficients and MBConv blocks.

The numbers are those of the TPU repository's ``efficientnet_lite_builder.py``; the Lite rules
(the stem, the head and the first and last block groups keep their size) are applied here, so
:mod:`brainmri.efficientnet_lite.network` builds and :mod:`brainmri.efficientnet_lite.conversion`
maps exactly these blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# (width coefficient, depth coefficient, resolution, dropout before the classifier), from the
# TPU repository's efficientnet_lite_builder.py.
VARIANTS: dict[str, tuple[float, float, int, float]] = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
}

# The seven MBConv groups of EfficientNet-B0 / Lite0:
# (kernel size, repeats, first stride, expansion ratio, input filters, output filters).
BASE_BLOCKS = (
    (3, 1, 1, 1, 32, 16),
    (3, 2, 2, 6, 16, 24),
    (5, 2, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (5, 3, 1, 6, 80, 112),
    (5, 4, 2, 6, 112, 192),
    (3, 1, 1, 6, 192, 320),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000

# Batch norm as in the reference models: TF momentum 0.99 (= PyTorch momentum 0.01), eps 1e-3.
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3


@dataclass(frozen=True)
class BlockSpec:
    """One MBConv block of a built variant.

    Attributes:
        name: the Keras layer-name prefix, e.g. "block2a".
        index: the block's position in the PyTorch model's ``_blocks`` list.
        kernel: the depthwise kernel size.
        stride: the depthwise stride.
        expand: the expansion ratio (1: no expansion convolution).
        filters_in: the block's input channels.
        filters_out: the block's output channels.
    """

    name: str
    index: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int

    @property
    def residual(self) -> bool:
        """Whether the block adds its input to its output (same shape in and out)."""
        return self.stride == 1 and self.filters_in == self.filters_out


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a filter count by ``width`` to a multiple of ``divisor``, as the reference does."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:  # never round down by more than 10%
        rounded += divisor
    return int(rounded)


def block_specs(variant: str) -> list[BlockSpec]:
    """The MBConv blocks of a variant, in order.

    Args:
        variant: "lite0", "lite1" or "lite2".

    Returns:
        One :class:`BlockSpec` per block (16 for Lite0, 21 for Lite1 and Lite2).
    """
    width, depth, _, _ = coefficients(variant)
    specs: list[BlockSpec] = []
    last = len(BASE_BLOCKS) - 1
    for group, (kernel, repeats, stride, expand, f_in, f_out) in enumerate(BASE_BLOCKS):
        # Lite keeps the stem's width, so the first group reads 32 channels whatever the width;
        # and it keeps the first and last groups' depth.
        f_in = STEM_FILTERS if group == 0 else _round_filters(f_in, width)
        f_out = _round_filters(f_out, width)
        if group not in (0, last):
            repeats = int(math.ceil(depth * repeats))
        for r in range(repeats):
            specs.append(
                BlockSpec(
                    name=f"block{group + 1}{chr(ord('a') + r)}",
                    index=len(specs),
                    kernel=kernel,
                    stride=stride if r == 0 else 1,
                    expand=expand,
                    filters_in=f_in if r == 0 else f_out,
                    filters_out=f_out,
                )
            )
    return specs


def coefficients(variant: str) -> tuple[float, float, int, float]:
    """A variant's (width, depth, resolution, dropout) from :data:`VARIANTS`.

    Raises:
        ValueError: an unknown variant, naming the known ones.
    """
    try:
        return VARIANTS[variant]
    except KeyError:
        raise ValueError(
            f"EfficientNet-Lite variant {variant!r}: expected one of {sorted(VARIANTS)}"
        ) from None


def default_size(variant: str) -> int:
    """The input resolution a variant was trained at (224, 240 or 260 pixels)."""
    return coefficients(variant)[2]
