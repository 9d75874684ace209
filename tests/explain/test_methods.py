"""Grad-CAM family and baselines on tiny models: correctness, the registry, layers and models."""

from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from brainmri import config
from brainmri import explain as ex

K = len(config.CLASS_NAMES)


def _linear_gap(size: int = 12, channels: int = 5, seed: int = 1) -> tuple[keras.Model, dict]:
    """A flat model Rescaling -> 1x1 Conv (linear) -> GAP -> logits, with known weights."""
    rng = np.random.default_rng(seed)
    inp = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 255.0)(inp)
    feat = layers.Conv2D(channels, 1, name="feat")(x)
    pooled = layers.GlobalAveragePooling2D()(feat)
    logits = layers.Dense(K, name=config.LOGITS_LAYER)(pooled)
    model = keras.Model(inp, layers.Activation("softmax", name="probs")(logits))
    w = {
        "kernel": rng.normal(size=(3, channels)).astype(np.float32),
        "bias": rng.normal(scale=0.1, size=channels).astype(np.float32),
        "dense": rng.normal(size=(channels, K)).astype(np.float32),
        "dense_bias": rng.normal(size=K).astype(np.float32),
    }
    model.get_layer("feat").set_weights([w["kernel"][None, None], w["bias"]])
    model.get_layer(config.LOGITS_LAYER).set_weights([w["dense"], w["dense_bias"]])
    return model, w


def _np_features(images: np.ndarray, w: dict) -> np.ndarray:
    """Activations of the linear GAP model's 1x1 conv, in numpy."""
    return (images / 255.0) @ w["kernel"] + w["bias"]


def _np_probs(images: np.ndarray, w: dict) -> np.ndarray:
    """Softmax output of the linear GAP model, in numpy."""
    z = _np_features(images, w).mean(axis=(1, 2)) @ w["dense"] + w["dense_bias"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _upsample_and_normalise(low: np.ndarray, size: int) -> np.ndarray:
    """Reference post-processing: ReLU, cv2 bilinear resize, divide by max."""
    up = cv2.resize(np.maximum(low, 0).astype(np.float32), (size, size))
    return up / up.max() if up.max() > 0 else up


@pytest.fixture(scope="module")
def linear() -> tuple[keras.Model, dict]:
    return _linear_gap()


# --- Grad-CAM correctness ---------------------------------------------------------------------


def test_gradcam_matches_analytic_cam_of_linear_gap_model(linear, random_images):
    model, w = linear
    x = random_images(3, 12, seed=3)
    cls = np.array([0, 2, 3])
    maps = ex.gradcam(model, x, class_index=cls, layer_name="feat")
    feats = _np_features(x, w)
    for i in range(3):
        # d logit_c / d A_k(i,j) = W[k, c] / (h w): the pooled gradient is W[:, c] / (h w).
        low = feats[i] @ (w["dense"][:, cls[i]] / (12 * 12))
        np.testing.assert_allclose(maps[i], _upsample_and_normalise(low, 12), atol=2e-5)
    assert maps.shape == (3, 12, 12) and maps.dtype == np.float32


def test_gradcam_plus_plus_matches_analytic_weights(linear, random_images):
    model, w = linear
    x = random_images(2, 12, seed=4)
    maps = ex.gradcam_plus_plus(model, x, class_index=1, layer_name="feat")
    feats = _np_features(x, w)
    g = w["dense"][:, 1] / (12 * 12)  # constant gradient per channel
    for i in range(2):
        sums = feats[i].sum(axis=(0, 1))
        alpha = g**2 / (2 * g**2 + sums * g**3)
        weights = 12 * 12 * alpha * np.maximum(g, 0)
        np.testing.assert_allclose(
            maps[i], _upsample_and_normalise(feats[i] @ weights, 12), atol=2e-5
        )


def _tape_gradcam(feature_and_logits: keras.Model, x: np.ndarray) -> np.ndarray:
    """Reference Grad-CAM of the predicted class, one image at a time."""
    out = []
    for image in x:
        with tf.GradientTape() as tape:
            fmap, logits = feature_and_logits(image[None], training=False)
            score = logits[0, int(np.argmax(logits.numpy()[0]))]
        grads = tape.gradient(score, fmap).numpy()[0]
        low = np.tensordot(fmap.numpy()[0], grads.mean(axis=(0, 1)), axes=1)
        out.append(_upsample_and_normalise(low, x.shape[1]))
    return np.stack(out)


def test_gradcam_matches_hand_written_tape_on_max_pooling_model(cnn, random_images):
    x = random_images(2, 32, seed=5)
    reference = keras.Model(
        cnn.inputs[0],
        [cnn.get_layer("top_activation").output, cnn.get_layer(config.LOGITS_LAYER).output],
    )
    np.testing.assert_allclose(ex.gradcam(cnn, x), _tape_gradcam(reference, x), atol=1e-5)


def test_gradcam_on_a_nested_backbone_uses_its_outer_output(head, random_images):
    keras.utils.set_random_seed(5)
    inner_in = keras.Input((16, 16, 3))
    inner_out = layers.Conv2D(4, 3, activation="relu", name="inner_conv")(
        layers.Rescaling(1 / 255.0)(inner_in)
    )
    backbone = keras.Model(inner_in, inner_out, name="backbone")
    inp = keras.Input((16, 16, 3))
    features = backbone(inp)
    model = keras.Model(inp, head(features))
    assert ex.find_target_layer(model) == "backbone"
    reference = keras.Model(inp, [features, model.get_layer(config.LOGITS_LAYER).output])
    x = random_images(2, 16, seed=14)
    np.testing.assert_allclose(ex.gradcam(model, x), _tape_gradcam(reference, x), atol=1e-5)


def test_batch_maps_equal_single_image_maps(cnn, random_images):
    x = random_images(3, 32, seed=6)
    for fn in (ex.gradcam, ex.gradcam_plus_plus):
        batched = fn(cnn, x, batch_size=2)
        single = np.concatenate([fn(cnn, x[i : i + 1]) for i in range(3)])
        np.testing.assert_allclose(batched, single, atol=1e-5)


def test_class_index_selects_the_explained_class(linear, random_images):
    model, _ = linear
    x = random_images(2, 12, seed=7)
    by_class = [ex.gradcam(model, x, class_index=c) for c in range(K)]
    assert not np.allclose(by_class[0], by_class[1], atol=1e-3)
    mixed = ex.gradcam(model, x, class_index=np.array([0, 1]))
    np.testing.assert_allclose(mixed[0], by_class[0][0], atol=1e-6)
    np.testing.assert_allclose(mixed[1], by_class[1][1], atol=1e-6)
    predicted = np.argmax(model.predict(x, verbose=0), axis=1)
    np.testing.assert_allclose(
        ex.gradcam(model, x), ex.gradcam(model, x, class_index=predicted), atol=1e-6
    )
    with pytest.raises(ValueError, match="class_index"):
        ex.gradcam(model, x, class_index=K)
    with pytest.raises(ValueError, match="class_index"):
        ex.gradcam(model, x, class_index=np.array([0, 1, 2]))


def test_all_zero_feature_map_gives_zero_maps_without_nan(random_images):
    model, _ = _linear_gap(seed=2)
    feat = model.get_layer("feat")
    feat.set_weights([np.zeros_like(v) for v in feat.get_weights()])
    x = random_images(2, 12, seed=8)
    for method in ex.REAL_METHODS:
        maps = ex.explain(method, model, x, layer_name="feat")
        assert np.isfinite(maps).all()
        assert np.all(maps == 0), method


# --- the registry and explain() ---------------------------------------------------------------


def test_registry_names_exactly_the_configured_methods(linear, random_images):
    assert tuple(ex.METHODS) == config.CAM_METHODS
    model, _ = linear
    x = random_images(2, 12, seed=15)
    direct = {
        "gradcam": ex.gradcam(model, x, class_index=1),
        "gradcampp": ex.gradcam_plus_plus(model, x, class_index=1),
        "scorecam": ex.scorecam(model, x, class_index=1, max_channels=2),
        "random": ex.random_map(x, 3),
    }
    for method in config.CAM_METHODS:
        got = ex.explain(method, model, x, class_index=1, seed=3, max_channels=2)
        np.testing.assert_array_equal(got, direct[method], err_msg=method)


def test_methods_produce_unit_range_maps_of_the_input_shape(cnn, random_images):
    x = random_images(2, 32, seed=9)
    for method in config.CAM_METHODS:
        maps = ex.explain(method, cnn, x, max_channels=4)
        assert maps.shape == (2, 32, 32) and maps.dtype == np.float32, method
        assert maps.min() >= 0 and maps.max() <= 1, method
        assert np.isclose(maps.max(), 1.0), method
    with pytest.raises(ValueError, match="method='bogus'"):
        ex.explain("bogus", cnn, x)


def test_scorecam_matches_a_numpy_reference(linear, random_images):
    model, w = linear
    x = random_images(1, 12, seed=10)
    got = ex.scorecam(model, x, class_index=2, layer_name="feat", max_channels=None)
    feats = _np_features(x, w)[0]
    base = _np_probs(np.zeros_like(x), w)[0, 2]
    weights = []
    for k in range(feats.shape[-1]):
        a = feats[..., k]  # 1x1 conv at full resolution: no upsampling needed
        m = (a - a.min()) / (a.max() - a.min())
        weights.append(_np_probs(x * m[None, ..., None], w)[0, 2] - base)
    np.testing.assert_allclose(
        got[0], _upsample_and_normalise(feats @ np.array(weights), 12), atol=1e-4
    )
    # keeping one channel keeps the one with the highest mean activation
    top = int(np.argmax(feats.mean(axis=(0, 1))))
    one = ex.scorecam(model, x, class_index=2, layer_name="feat", max_channels=1)
    w_top = (
        _np_probs(
            x
            * ((feats[..., top] - feats[..., top].min()) / np.ptp(feats[..., top]))[
                None, ..., None
            ],
            w,
        )[0, 2]
        - base
    )
    np.testing.assert_allclose(
        one[0], _upsample_and_normalise(feats[..., top] * w_top, 12), atol=1e-4
    )


# --- layers and models ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("constructor", "expected"),
    [
        (keras.applications.MobileNetV2, "out_relu"),
        (keras.applications.EfficientNetB0, "top_activation"),
    ],
)
def test_find_target_layer_on_keras_applications(constructor, expected, head):
    inp = keras.Input((64, 64, 3))
    backbone = constructor(include_top=False, weights=None, input_tensor=inp)
    model = keras.Model(inp, head(backbone.output, units=4))
    assert ex.find_target_layer(model) == expected
    assert ex.cam_model(model).outputs[0].shape[1:3] == (2, 2)


def test_find_target_layer_and_layer_errors(cnn, random_images):
    assert ex.find_target_layer(cnn) == "top_activation"
    inp = keras.Input((4,))
    flat = keras.Model(inp, layers.Dense(K, name=config.LOGITS_LAYER)(inp))
    with pytest.raises(ValueError, match="no 4-D feature map"):
        ex.find_target_layer(flat)
    x = random_images(1, 32)
    with pytest.raises(ValueError, match="no such layer"):
        ex.gradcam(cnn, x, layer_name="nope")
    with pytest.raises(ValueError, match="not a 4-D"):
        ex.gradcam(cnn, x, layer_name="head_dense1")
    with pytest.raises(ValueError, match="expects input shape"):
        ex.gradcam(cnn, random_images(1, 16))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        ex.gradcam(cnn, x[0])


def test_cam_model_is_built_once_and_maps_feature_and_logits(cnn, random_images):
    cm = ex.cam_model(cnn, None)
    assert cm is ex.cam_model(cnn, "top_activation")
    fmap, logits = cm(random_images(1, 32), training=False)
    assert fmap.shape == (1, 16, 16, 8) and logits.shape == (1, K)


def test_functions_work_on_a_saved_and_reloaded_model(cnn, tmp_path, random_images):
    path = tmp_path / "model.keras"
    cnn.save(path)
    loaded = keras.models.load_model(path)
    x = random_images(2, 32, seed=11)
    np.testing.assert_allclose(ex.gradcam(loaded, x), ex.gradcam(cnn, x), atol=1e-5)
    np.testing.assert_allclose(
        ex.gradcam_plus_plus(loaded, x), ex.gradcam_plus_plus(cnn, x), atol=1e-5
    )
    assert ex.scorecam(loaded, x, max_channels=2).shape == (2, 32, 32)
    assert ex.randomize_weights(loaded, seed=0).count_params() == loaded.count_params()


# --- baselines --------------------------------------------------------------------------------


def test_random_map_and_centre_prior(random_images):
    x = random_images(2, 40)
    a, b = ex.random_map(x, seed=1), ex.random_map(x, seed=1)
    assert np.array_equal(a, b) and a.shape == (2, 40, 40)
    assert a.min() == 0 and a.max() == 1
    assert not np.allclose(a, ex.random_map(x, seed=2))
    # smooth: neighbouring pixels differ far less than the map's range
    assert np.abs(np.diff(a, axis=2)).max() < 0.2
    prior = ex.centre_prior((30, 40))
    assert prior.shape == (30, 40) and np.isclose(prior.max(), 1)
    assert prior[15, 20] > prior[0, 0] and np.allclose(prior, prior[::-1, ::-1])
