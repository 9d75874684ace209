"""The EfficientNet-Lite network: layer names and grouping, scaling, batch norm, padding."""

from __future__ import annotations

import itertools
import re

import keras
import numpy as np
import pytest
from keras import layers

from brainmri import efficientnet_lite as el


def test_backbone_layers_are_named_and_grouped_like_keras_efficientnet():
    model = el.efficientnet_lite("lite0", weights=None)
    names = [layer.name for layer in model.layers]
    for name in (
        "rescaling",
        "stem_conv",
        "stem_bn",
        "stem_activation",
        "block1a_dwconv",
        "block1a_bn",
        "block1a_project_bn",
        "block2a_expand_conv",
        "block2a_project_bn",
        "block2b_add",
        "top_conv",
        "top_bn",
        "top_activation",
    ):
        assert name in names
    assert model.output.shape[1:] == (7, 7, 1280)
    assert model.layers[-1].name == "top_activation"
    # The prefix model.backbone_blocks groups by: stem, 16 MBConv blocks, top.
    block = re.compile(r"^(block_?\d+[a-z]?|top)")
    prefixes = [m.group(1) if (m := block.match(n)) else None for n in names[1:]]
    groups = [k for k, _ in itertools.groupby(prefixes)]
    assert groups[0] is None and groups[-1] == "top"
    assert groups[1:-1] == [s.name for s in el.block_specs("lite0")]
    # The last 4-D output (what Grad-CAM targets) is the head activation.
    four_d = [layer.name for layer in model.layers if len(layer.output.shape) == 4]
    assert four_d[-1] == "top_activation"


def test_layers_sit_at_the_top_level_of_an_outer_model():
    inputs = keras.Input((64, 64, 3), name="image")
    backbone = el.efficientnet_lite("lite1", input_tensor=inputs, weights=None)
    x = layers.GlobalMaxPooling2D(name="global_max_pool")(backbone.output)
    outer = keras.Model(inputs, layers.Dense(4, name="logits")(x))
    names = [layer.name for layer in outer.layers]
    assert "block6e_project_conv" in names and "top_activation" in names
    assert not any(isinstance(layer, keras.Model) for layer in outer.layers)
    assert backbone.output.shape[1:] == (2, 2, 1280)


def test_inputs_are_scaled_inside_the_model():
    model = el.efficientnet_lite("lite0", weights=None)
    scale = model.get_layer("rescaling")
    out = keras.ops.convert_to_numpy(scale(np.array([[0.0, 127.0, 255.0]], np.float32)))
    np.testing.assert_allclose(out, [[-127 / 128, 0.0, 1.0]], atol=1e-6)


def test_batch_norm_matches_the_reference():
    model = el.efficientnet_lite("lite0", weights=None)
    norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    assert len(norms) == 2 + 3 * 16 - 1  # stem, top, three per block, block1a has no expansion
    assert {(n.epsilon, n.momentum) for n in norms} == {(1e-3, 0.99)}


@pytest.mark.parametrize(("kernel", "pad"), [(3, (0, 1)), (5, (1, 2))])
def test_stride_two_padding_is_tensorflow_same(kernel, pad):
    # The weights come from TF (and lukemelas' Conv2dStaticSamePadding): on an even input a
    # stride-2 convolution pads pad//2 before and the rest after, not k//2 on both sides.
    x = np.random.default_rng(0).normal(size=(1, 12, 12, 2)).astype(np.float32)
    same = layers.DepthwiseConv2D(kernel, strides=2, padding="same", use_bias=False)
    explicit = layers.DepthwiseConv2D(kernel, strides=2, padding="valid", use_bias=False)
    same.build(x.shape)
    explicit.build((1, 12 + sum(pad), 12 + sum(pad), 2))
    explicit.set_weights(same.get_weights())
    padded = np.pad(x, ((0, 0), pad, pad, (0, 0)))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(same(x)),
        keras.ops.convert_to_numpy(explicit(padded)),
        atol=1e-5,
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"variant 'lite9': expected one of"):
        el.efficientnet_lite("lite9")
    with pytest.raises(ValueError, match=r"weights = 'noisy-student': expected None or 'imagenet'"):
        el.efficientnet_lite("lite0", weights="noisy-student")
    with pytest.raises(ValueError, match=r"RGB"):
        el.efficientnet_lite("lite0", input_tensor=keras.Input((32, 32, 1)))
