"""EfficientNet-Lite's variants: how many blocks, and what the Lite rules keep."""

from __future__ import annotations

import pytest

from brainmri import efficientnet_lite as el


@pytest.mark.parametrize(("variant", "blocks"), [("lite0", 16), ("lite1", 21), ("lite2", 21)])
def test_block_counts(variant, blocks):
    specs = el.block_specs(variant)
    assert len(specs) == blocks
    # Lite keeps the first and last groups at one block and the stem's 32 channels.
    assert [s.name for s in specs if s.name.startswith(("block1", "block7"))] == [
        "block1a",
        "block7a",
    ]
    assert specs[0].filters_in == 32


def test_unknown_variant_names_the_known_ones():
    with pytest.raises(ValueError, match=r"variant 'lite9': expected one of \['lite0'"):
        el.block_specs("lite9")
    assert [el.default_size(v) for v in sorted(el.VARIANTS)] == [224, 240, 260]
