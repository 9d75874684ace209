"""EfficientNet-Lite's weight mapping: every state-dict tensor used once, mismatches named."""

from __future__ import annotations

import collections

import keras
import numpy as np
import pytest

from brainmri import efficientnet_lite as el
from brainmri.torchfile import read_state_dict

VARIANTS = sorted(el.VARIANTS)


def _weights_by_path(model: keras.Model) -> dict[str, np.ndarray]:
    return {
        f"{layer.name}/{w.name}": keras.ops.convert_to_numpy(w)
        for layer in model.layers
        for w in layer.weights
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_tensor_is_mapped_exactly_once(variant, classifier, require):
    require(variant)
    source = el.imagenet_state_dict_path(variant)
    state_dict = read_state_dict(source)
    maps = el.weight_mappings(variant)
    uses = collections.Counter(m.key for m in maps)
    assert set(uses) == set(state_dict) and set(uses.values()) == {1}
    targets = [m.target for m in maps if m.target is not None]
    assert len(targets) == len(set(targets))
    ignored = {m.key for m in maps if m.target is None}
    assert all(k.endswith("num_batches_tracked") for k in ignored)

    converted = el.convert_state_dict(state_dict, variant, source=str(source))
    model = classifier(variant)
    weights = _weights_by_path(model)
    # Every Keras weight was set, from the tensor mapped to it, with the same shape.
    assert set(weights) == set(converted)
    for path, array in converted.items():
        assert weights[path].shape == array.shape, path
        np.testing.assert_array_equal(weights[path], array, err_msg=path)
    assert model.count_params() == sum(a.size for k, a in state_dict.items() if k not in ignored)


def test_conversion_names_missing_and_unexpected_keys(require):
    require("lite1")
    state_dict = read_state_dict(el.imagenet_state_dict_path("lite1"))
    del state_dict["_blocks.7._bn1.running_var"]
    state_dict["_blocks.7._se_reduce.weight"] = np.zeros((1,), np.float32)
    with pytest.raises(ValueError) as info:
        el.convert_state_dict(state_dict, "lite1", source="x.pth")
    message = str(info.value)
    assert message.startswith("x.pth: not an EfficientNet-Lite1 state dict")
    assert "_blocks.7._bn1.running_var" in message and "_blocks.7._se_reduce.weight" in message
