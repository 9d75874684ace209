"""Grad-CAM family, localisation metrics, faithfulness and sanity checks on tiny models."""

from __future__ import annotations

import json

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers
from matplotlib.figure import Figure

from brainmri import config
from brainmri import explain as ex
from brainmri.plotting import explain as pex

K = len(config.CLASS_NAMES)


def _head(features, units: int = 0):
    """The contract head: global max pooling, optional Dense, logits, softmax."""
    x = layers.GlobalMaxPooling2D(name="global_max_pool")(features)
    if units:
        x = layers.Dense(units, activation="relu", name="head_dense1")(x)
        x = layers.Dropout(0.3, name="head_dropout1")(x)
    logits = layers.Dense(K, name=config.LOGITS_LAYER)(x)
    return layers.Activation("softmax", name="probs")(logits)


def _cnn(size: int = 32, seed: int = 0) -> keras.Model:
    """A small contract-following CNN with BatchNorm and a 'top_activation' feature map."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(1 / 255.0)(inp)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(8, 3, padding="same", name="conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.Activation("relu", name="top_activation")(x)
    return keras.Model(inp, _head(x, units=8))


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


def _finish(low: np.ndarray, size: int) -> np.ndarray:
    """Reference post-processing: ReLU, cv2 bilinear resize, divide by max."""
    up = cv2.resize(np.maximum(low, 0).astype(np.float32), (size, size))
    return up / up.max() if up.max() > 0 else up


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Random 0..255 float images."""
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def cnn() -> keras.Model:
    return _cnn()


@pytest.fixture(scope="module")
def linear() -> tuple[keras.Model, dict]:
    return _linear_gap()


# --- Grad-CAM correctness ---------------------------------------------------------------------


def test_gradcam_matches_analytic_cam_of_linear_gap_model(linear):
    model, w = linear
    x = _images(3, 12, seed=3)
    cls = np.array([0, 2, 3])
    maps = ex.gradcam(model, x, class_index=cls, layer_name="feat")
    feats = _np_features(x, w)
    for i in range(3):
        # d logit_c / d A_k(i,j) = W[k, c] / (h w): the pooled gradient is W[:, c] / (h w).
        low = feats[i] @ (w["dense"][:, cls[i]] / (12 * 12))
        np.testing.assert_allclose(maps[i], _finish(low, 12), atol=2e-5)
    assert maps.shape == (3, 12, 12) and maps.dtype == np.float32


def test_gradcam_plus_plus_matches_analytic_weights(linear):
    model, w = linear
    x = _images(2, 12, seed=4)
    maps = ex.gradcam_plus_plus(model, x, class_index=1, layer_name="feat")
    feats = _np_features(x, w)
    g = w["dense"][:, 1] / (12 * 12)  # constant gradient per channel
    for i in range(2):
        sums = feats[i].sum(axis=(0, 1))
        alpha = g**2 / (2 * g**2 + sums * g**3)
        weights = 12 * 12 * alpha * np.maximum(g, 0)
        np.testing.assert_allclose(maps[i], _finish(feats[i] @ weights, 12), atol=2e-5)


def _tape_gradcam(feature_and_logits: keras.Model, x: np.ndarray) -> np.ndarray:
    """Reference Grad-CAM of the predicted class, one image at a time."""
    out = []
    for image in x:
        with tf.GradientTape() as tape:
            fmap, logits = feature_and_logits(image[None], training=False)
            score = logits[0, int(np.argmax(logits.numpy()[0]))]
        grads = tape.gradient(score, fmap).numpy()[0]
        out.append(
            _finish(np.tensordot(fmap.numpy()[0], grads.mean(axis=(0, 1)), axes=1), x.shape[1])
        )
    return np.stack(out)


def test_gradcam_matches_hand_written_tape_on_max_pooling_model(cnn):
    x = _images(2, 32, seed=5)
    reference = keras.Model(
        cnn.inputs[0],
        [cnn.get_layer("top_activation").output, cnn.get_layer(config.LOGITS_LAYER).output],
    )
    np.testing.assert_allclose(ex.gradcam(cnn, x), _tape_gradcam(reference, x), atol=1e-5)


def test_gradcam_on_a_nested_backbone_uses_its_outer_output():
    keras.utils.set_random_seed(5)
    inner_in = keras.Input((16, 16, 3))
    inner_out = layers.Conv2D(4, 3, activation="relu", name="inner_conv")(
        layers.Rescaling(1 / 255.0)(inner_in)
    )
    backbone = keras.Model(inner_in, inner_out, name="backbone")
    inp = keras.Input((16, 16, 3))
    features = backbone(inp)
    model = keras.Model(inp, _head(features))
    assert ex.find_target_layer(model) == "backbone"
    reference = keras.Model(inp, [features, model.get_layer(config.LOGITS_LAYER).output])
    x = _images(2, 16, seed=14)
    np.testing.assert_allclose(ex.gradcam(model, x), _tape_gradcam(reference, x), atol=1e-5)


def test_batch_maps_equal_single_image_maps(cnn):
    x = _images(3, 32, seed=6)
    for fn in (ex.gradcam, ex.gradcam_plus_plus):
        batched = fn(cnn, x, batch_size=2)
        single = np.concatenate([fn(cnn, x[i : i + 1]) for i in range(3)])
        np.testing.assert_allclose(batched, single, atol=1e-5)


def test_class_index_selects_the_explained_class(linear):
    model, _ = linear
    x = _images(2, 12, seed=7)
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


def test_all_zero_feature_map_gives_zero_maps_without_nan():
    model, _ = _linear_gap(seed=2)
    feat = model.get_layer("feat")
    feat.set_weights([np.zeros_like(v) for v in feat.get_weights()])
    x = _images(2, 12, seed=8)
    for method in ex.REAL_METHODS:
        maps = ex.explain(method, model, x, layer_name="feat")
        assert np.isfinite(maps).all()
        assert np.all(maps == 0), method


def test_methods_produce_unit_range_maps_of_the_input_shape(cnn):
    x = _images(2, 32, seed=9)
    for method in config.CAM_METHODS:
        maps = ex.explain(method, cnn, x, max_channels=4)
        assert maps.shape == (2, 32, 32) and maps.dtype == np.float32, method
        assert maps.min() >= 0 and maps.max() <= 1, method
        assert np.isclose(maps.max(), 1.0), method
    with pytest.raises(ValueError, match="method='bogus'"):
        ex.explain("bogus", cnn, x)


def test_scorecam_matches_a_numpy_reference(linear):
    model, w = linear
    x = _images(1, 12, seed=10)
    got = ex.scorecam(model, x, class_index=2, layer_name="feat", max_channels=None)
    feats = _np_features(x, w)[0]
    base = _np_probs(np.zeros_like(x), w)[0, 2]
    weights = []
    for k in range(feats.shape[-1]):
        a = feats[..., k]  # 1x1 conv at full resolution: no upsampling needed
        m = (a - a.min()) / (a.max() - a.min())
        weights.append(_np_probs(x * m[None, ..., None], w)[0, 2] - base)
    np.testing.assert_allclose(got[0], _finish(feats @ np.array(weights), 12), atol=1e-4)
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
    np.testing.assert_allclose(one[0], _finish(feats[..., top] * w_top, 12), atol=1e-4)


# --- layers and models ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("constructor", "expected"),
    [
        (keras.applications.MobileNetV2, "out_relu"),
        (keras.applications.EfficientNetB0, "top_activation"),
    ],
)
def test_find_target_layer_on_keras_applications(constructor, expected):
    inp = keras.Input((64, 64, 3))
    backbone = constructor(include_top=False, weights=None, input_tensor=inp)
    model = keras.Model(inp, _head(backbone.output, units=4))
    assert ex.find_target_layer(model) == expected
    assert ex.cam_model(model).outputs[0].shape[1:3] == (2, 2)


def test_find_target_layer_and_layer_errors(cnn):
    assert ex.find_target_layer(cnn) == "top_activation"
    inp = keras.Input((4,))
    flat = keras.Model(inp, layers.Dense(K, name=config.LOGITS_LAYER)(inp))
    with pytest.raises(ValueError, match="no 4-D feature map"):
        ex.find_target_layer(flat)
    x = _images(1, 32)
    with pytest.raises(ValueError, match="no such layer"):
        ex.gradcam(cnn, x, layer_name="nope")
    with pytest.raises(ValueError, match="not a 4-D"):
        ex.gradcam(cnn, x, layer_name="head_dense1")
    with pytest.raises(ValueError, match="expects input shape"):
        ex.gradcam(cnn, _images(1, 16))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        ex.gradcam(cnn, x[0])


def test_cam_model_is_built_once_and_maps_feature_and_logits(cnn):
    cm = ex.cam_model(cnn, None)
    assert cm is ex.cam_model(cnn, "top_activation")
    fmap, logits = cm(_images(1, 32), training=False)
    assert fmap.shape == (1, 16, 16, 8) and logits.shape == (1, K)


def test_functions_work_on_a_saved_and_reloaded_model(cnn, tmp_path):
    path = tmp_path / "model.keras"
    cnn.save(path)
    loaded = keras.models.load_model(path)
    x = _images(2, 32, seed=11)
    np.testing.assert_allclose(ex.gradcam(loaded, x), ex.gradcam(cnn, x), atol=1e-5)
    np.testing.assert_allclose(
        ex.gradcam_plus_plus(loaded, x), ex.gradcam_plus_plus(cnn, x), atol=1e-5
    )
    assert ex.scorecam(loaded, x, max_channels=2).shape == (2, 32, 32)
    assert ex.randomize_weights(loaded, seed=0).count_params() == loaded.count_params()


# --- overlays and the reference view ----------------------------------------------------------


def test_overlay_blends_heatmap_and_image():
    image = np.full((8, 8, 3), 100, np.uint8)
    cam = np.zeros((8, 8), np.float32)
    cam[2:4, 2:4] = 1.0
    assert np.array_equal(ex.overlay(image, cam, interpolant=0.0), image)
    heat = cv2.cvtColor(cv2.applyColorMap(np.uint8(cam * 255), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    assert np.array_equal(ex.overlay(image, cam, interpolant=1.0), heat)
    half = ex.overlay(image, cam, 0.5)
    assert half.dtype == np.uint8 and half.shape == (8, 8, 3)
    assert np.abs(half.astype(int) - (heat.astype(int) + 100) / 2).max() <= 1
    with pytest.raises(ValueError, match="interpolant"):
        ex.overlay(image, cam, 1.5)


def test_viz_gradcam_returns_overlay_heatmap_and_four_panel_figure(cnn):
    image = _images(1, 32, seed=12)[0]
    result = ex.VizGradCAM(cnn, image, interpolant=0.4)
    overlay, heatmap = result
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    assert heatmap.shape == image.shape[:2] and 0 <= heatmap.min() <= heatmap.max() <= 1
    assert isinstance(result.figure, Figure) and len(result.figure.axes) == 4
    np.testing.assert_allclose(heatmap, ex.gradcam(cnn, image[None])[0], atol=1e-6)
    assert ex.VizGradCAM(cnn, image, plot_results=False).figure is None


def test_gradcam_overlays_batch(cnn):
    x = _images(3, 32, seed=13)
    overlays, maps, probs = ex.gradcam_overlays(cnn, x, 0.5)
    assert overlays.shape == (3, 32, 32, 3) and overlays.dtype == np.uint8
    np.testing.assert_allclose(maps, ex.gradcam(cnn, x), atol=1e-6)
    np.testing.assert_allclose(probs, cnn.predict(x, verbose=0), atol=1e-5)


# --- baselines and localisation metrics -------------------------------------------------------


def test_random_map_and_centre_prior():
    x = _images(2, 40)
    a, b = ex.random_map(x, seed=1), ex.random_map(x, seed=1)
    assert np.array_equal(a, b) and a.shape == (2, 40, 40)
    assert a.min() == 0 and a.max() == 1
    assert not np.allclose(a, ex.random_map(x, seed=2))
    # smooth: neighbouring pixels differ far less than the map's range
    assert np.abs(np.diff(a, axis=2)).max() < 0.2
    prior = ex.centre_prior((30, 40))
    assert prior.shape == (30, 40) and np.isclose(prior.max(), 1)
    assert prior[15, 20] > prior[0, 0] and np.allclose(prior, prior[::-1, ::-1])


def test_pointing_game():
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    assert not ex.pointing_game(np.full((8, 8), 0.7), mask)  # flat map: a miss
    assert not ex.pointing_game(np.zeros((8, 8)), mask)
    hit = np.zeros((8, 8))
    hit[3, 3] = 1.0
    assert ex.pointing_game(hit, mask)
    miss = np.zeros((8, 8))
    miss[7, 0] = 1.0
    assert not ex.pointing_game(miss, mask)
    with pytest.raises(ValueError, match="mask"):
        ex.pointing_game(hit, mask[:4])


def test_energy_and_iou_on_hand_made_maps():
    mask = np.zeros((8, 8), bool)
    mask[:4, :4] = True  # 16 of 64 pixels
    cam = np.full((8, 8), 0.5)
    cam[:4, :4] = 1.0
    assert np.isclose(ex.energy_pointing(cam, mask), 16 / (16 + 48 * 0.5))
    assert np.isclose(ex.energy_ratio(cam, mask), (16 / 40) / (16 / 64))
    assert ex.energy_pointing(np.zeros((8, 8)), mask) == 0.0
    assert np.isclose(ex.energy_ratio(np.ones((8, 8)), mask), 1.0)  # uniform = chance
    block = np.zeros((8, 8))
    block[2:6, :4] = 0.9  # overlaps rows 2-3 of the mask: 8 shared, 24 in the union
    assert np.isclose(ex.otsu_iou(block, mask), 8 / 24)
    assert np.isclose(ex.otsu_iou(cam, mask), 1.0)
    with pytest.raises(ValueError, match="at least one True"):
        ex.energy_ratio(cam, np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match="finite"):
        ex.energy_pointing(-cam, mask)


# --- faithfulness and sanity ------------------------------------------------------------------


def _region_model(size: int = 32) -> keras.Model:
    """Class 0's logit grows with the mean brightness of rows/cols 12..19 only."""
    inp = keras.Input((size, size, 3))
    gray = layers.Conv2D(1, 1, use_bias=False, name="gray")(layers.Rescaling(1 / 255.0)(inp))
    region = layers.Cropping2D(((12, size - 20), (12, size - 20)))(gray)
    pooled = layers.GlobalAveragePooling2D()(region)
    logits = layers.Dense(K, name=config.LOGITS_LAYER)(pooled)
    model = keras.Model(inp, layers.Activation("softmax", name="probs")(logits))
    model.get_layer("gray").set_weights([np.full((1, 1, 3, 1), 1 / 3, np.float32)])
    slope = np.zeros((1, K), np.float32)
    slope[0, 0] = 20.0
    bias = np.zeros(K, np.float32)
    bias[0] = -15.0  # p(class 0) high only when the region is bright
    model.get_layer(config.LOGITS_LAYER).set_weights([slope, bias])
    return model


def test_deletion_auc_below_insertion_auc_for_a_cam_on_the_evidence():
    model = _region_model()
    image = np.zeros((32, 32, 3), np.float32)
    image[12:20, 12:20] = 255.0
    cam = np.zeros((32, 32), np.float32)
    cam[12:20, 12:20] = 1.0
    good = ex.deletion_insertion(model, image, cam, class_index=0, steps=16)
    assert good["deletion_auc"] < 0.2 < 0.8 < good["insertion_auc"]
    assert len(good["deletion_curve"]) == 17
    assert good["deletion_curve"][0] == pytest.approx(good["insertion_curve"][-1], abs=1e-6)
    bad = ex.deletion_insertion(model, image, 1.0 - cam, class_index=0, steps=16)
    assert bad["deletion_auc"] > good["deletion_auc"]
    assert bad["insertion_auc"] < good["insertion_auc"]


def _square_data(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise images; class 1 (odd indices) holds a bright square at a random place."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 60, (n, size, size, 3)).astype(np.float32)
    y = np.arange(n) % 2
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        r, c = rng.integers(2, size - 12, 2)
        masks[i, r : r + 10, c : c + 10] = True
        if y[i]:
            x[i][masks[i]] = 230.0
    return x, y, masks


def test_randomize_weights_refuses_a_learned_weight_without_initialiser():
    class Scale(layers.Layer):
        def build(self, input_shape):
            self.factor = self.add_weight(shape=(), initializer="ones", name="factor")

        def call(self, x):
            return x * self.factor

    inp = keras.Input((16, 16, 3))
    x = Scale(name="scale")(layers.Conv2D(4, 3, padding="same", name="top_activation")(inp))
    model = keras.Model(inp, _head(x))
    with pytest.raises(ValueError, match="'scale'.*'factor'"):
        ex.randomize_weights(model, seed=0)


def test_randomisation_check_reports_json_safe_per_image_correlations():
    model = _cnn(seed=3)
    x, y, _ = _square_data(64, 32, seed=0)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    probe = x[:8]
    maps = ex.gradcam(model, probe)
    assert np.allclose(ex.rank_correlation(maps, maps), 1.0)
    trained, randomised = ex.randomization_maps(model, probe, seed=0)
    assert np.allclose(trained, maps) and randomised.shape == maps.shape
    check = ex.randomization_check(trained, randomised)
    json.dumps(check, allow_nan=False)
    assert check["n_images"] == len(check["spearman_per_image"]) == 8
    assert check["n_undefined"] == sum(r is None for r in check["spearman_per_image"])
    assert check["passed"] == (
        check["spearman_mean"] < 0.5 if check["spearman_mean"] is not None else True
    )


def test_randomisation_lowers_the_map_correlation(trained_phantom):
    """Maps of a model trained on phantoms do not survive re-initialising its weights."""
    from brainmri import inputs as inp

    model, root, size, _ = trained_phantom
    files = [
        f for c in config.CLASS_NAMES for f in sorted((root / "Testing" / c).glob("*.jpg"))[:2]
    ]
    maps = ex.randomization_maps(model, inp.load_batch(files, size), seed=0)
    check = ex.randomization_check(*maps)
    assert check["n_undefined"] < check["n_images"] / 2
    assert check["spearman_mean"] < 0.5 and check["passed"]
    # A threshold no correlation can undercut fails it: the verdict is not a constant.
    assert not ex.randomization_check(*maps, max_correlation=-1)["passed"]


def test_randomize_weights_reinitialises_every_learned_weight():
    model = _cnn(seed=4)
    for w in model.trainable_weights:  # stand-in for training: move every weight off its init
        w.assign(w.numpy() + 0.5)
    bn = model.get_layer("bn2")
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 8))
    model.get_layer("conv1").trainable = False
    clone = ex.randomize_weights(model, seed=0)
    again = ex.randomize_weights(model, seed=0)
    other = ex.randomize_weights(model, seed=1)
    kernel = model.get_layer("conv1").kernel.numpy()
    new = clone.get_layer("conv1").kernel.numpy()
    assert not np.allclose(new, kernel)
    limit = np.sqrt(6 / (3 * 3 * 3 + 3 * 3 * 8))  # Glorot uniform, the layer's initialiser
    assert np.abs(new).max() <= limit and new.std() > limit / 3
    assert np.array_equal(new, again.get_layer("conv1").kernel.numpy())
    assert not np.array_equal(new, other.get_layer("conv1").kernel.numpy())
    # Constant initialisers give their constants back: biases 0, BatchNorm gamma 1 and beta 0,
    # and the moving statistics (learned from data too) those of a fresh layer.
    assert np.all(clone.get_layer("conv1").bias.numpy() == 0)
    assert np.all(clone.get_layer("bn2").gamma.numpy() == 1)
    assert np.all(clone.get_layer("bn2").beta.numpy() == 0)
    assert np.all(clone.get_layer("bn2").moving_variance.numpy() == 1)
    assert np.allclose(bn.moving_variance.numpy(), np.linspace(0.5, 2.0, 8))  # original kept
    assert not model.get_layer("conv1").trainable  # the original is untouched


# --- reports and figures ----------------------------------------------------------------------


def test_localisation_report_and_summary(cnn):
    x, _, masks = _square_data(4, 32, seed=1)
    labels = ["glioma", "meningioma", "glioma", "pituitary"]
    df = ex.localisation_report(cnn, x, masks, labels, methods=["gradcam"], seed=0, steps=4)
    assert len(df) == 4 * 3
    assert list(dict.fromkeys(df["method"])) == ["gradcam", "random", "centre"]
    real = df[df["method"] == "gradcam"]
    assert real[["deletion_auc", "insertion_auc"]].notna().all().all()
    assert df[df["method"] != "gradcam"][["deletion_auc", "insertion_auc"]].isna().all().all()
    maps = ex.gradcam(cnn, x, class_index=np.array([0, 1, 0, 3]))
    assert list(real["energy"]) == pytest.approx(
        [ex.energy_pointing(maps[i], masks[i]) for i in range(4)]
    )
    summary = ex.summarise_localisation(df)
    json.dumps(summary, allow_nan=False)
    glioma = summary["classes"]["glioma"]
    assert glioma["n_images"] == 2
    assert glioma["mask_area_fraction"] == pytest.approx(masks[[0, 2]].mean())
    assert glioma["methods"]["gradcam"]["pointing_rate"] == pytest.approx(
        df[(df.label == "glioma") & (df.method == "gradcam")]["pointing"].mean()
    )
    assert summary["classes"]["meningioma"]["methods"]["random"]["deletion_auc"] is None
    assert set(summary["overall"]["methods"]) == {"gradcam", "random", "centre"}
    fig = pex.plot_localisation_summary(summary)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    with pytest.raises(ValueError, match="empty mask"):
        ex.localisation_report(cnn, x, np.zeros_like(masks), labels, methods=["gradcam"])
    with pytest.raises(ValueError, match="labels"):
        ex.localisation_report(cnn, x, masks, ["tumour"] * 4, methods=["gradcam"])


def test_gallery_and_side_by_side_figures(cnn):
    x, _, masks = _square_data(3, 32, seed=2)
    overlays, maps, _ = ex.gradcam_overlays(cnn, x)
    fig = pex.plot_cam_gallery(x, overlays, ["a", "b", "c"], ncols=2)
    assert len(fig.axes) == 2 * 4
    assert len(pex.plot_cam_gallery(None, overlays, ["a", "b", "c"], ncols=3).axes) == 3
    side = pex.plot_methods_side_by_side(
        x, {"gradcam": maps, "random": ex.random_map(x, 0)}, masks=masks
    )
    assert len(side.axes) == 3 * 3
    with pytest.raises(ValueError, match="maps_by_method"):
        pex.plot_methods_side_by_side(x, {"gradcam": maps[:2]})


def test_gradcam_points_at_the_lesion_of_a_model_trained_on_phantoms(trained_phantom):
    """Grad-CAM's maximum lies inside the lesion for 90% or more of the tumour test images, and
    within the standard tolerance (15 px at 224 px) for 90% or more of each tumour class."""
    from brainmri import inputs as inp
    from brainmri.config import TUMOUR_CLASSES, load_profile
    from brainmri.phantom import load_mask

    model, root, size, _ = trained_phantom
    tolerance = load_profile("default")["gradcam"]["pointing_tolerance"] * size
    strict_hits = []
    for label in TUMOUR_CLASSES:
        files = sorted((root / "Testing" / label).glob("*.jpg"))
        images = inp.load_batch(files, size)
        masks = [load_mask(f, root, size) for f in files]
        maps = ex.gradcam(model, images, class_index=config.CLASS_NAMES.index(label))
        hits = [ex.pointing_game(m, k, tolerance) for m, k in zip(maps, masks, strict=True)]
        assert np.mean(hits) >= 0.9, label
        strict_hits += [ex.pointing_game(m, k) for m, k in zip(maps, masks, strict=True)]
        # A random map of the same images points far less often.
        random_hits = [
            ex.pointing_game(m, k, tolerance)
            for m, k in zip(ex.random_map(images, 0), masks, strict=True)
        ]
        assert np.mean(random_hits) < np.mean(hits) - 0.3, label
    assert np.mean(strict_hits) >= 0.9


def test_pointing_tolerance_counts_near_misses():
    mask = np.zeros((32, 32), bool)
    mask[10:14, 10:14] = True
    cam = np.zeros((32, 32), np.float32)
    cam[10, 17] = 1.0  # 4 px right of the mask's edge
    assert not ex.pointing_game(cam, mask)
    assert not ex.pointing_game(cam, mask, tolerance=3.0)
    assert ex.pointing_game(cam, mask, tolerance=4.0)
