"""The model-parameter randomisation check: re-initialised weights and map correlations."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from keras import layers

from brainmri import config
from brainmri import explain as ex


def test_randomize_weights_refuses_a_learned_weight_without_initialiser(head):
    class Scale(layers.Layer):
        def build(self, input_shape):
            self.factor = self.add_weight(shape=(), initializer="ones", name="factor")

        def call(self, x):
            return x * self.factor

    inp = keras.Input((16, 16, 3))
    x = Scale(name="scale")(layers.Conv2D(4, 3, padding="same", name="top_activation")(inp))
    model = keras.Model(inp, head(x))
    with pytest.raises(ValueError, match="'scale'.*'factor'"):
        ex.randomize_weights(model, seed=0)


def test_randomisation_check_reports_json_safe_per_image_correlations(make_cnn, square_data):
    model = make_cnn(seed=3)
    x, y, _ = square_data(64, 32, seed=0)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    probe = x[:8]
    maps = ex.gradcam(model, probe)
    # A map with no positive evidence is all zeros after Grad-CAM's ReLU; its rank correlation is
    # undefined (NaN) by design. Which probe images get one depends on CPU training's float order.
    rho = ex.rank_correlation(maps, maps)
    flat = np.ptp(maps, axis=(1, 2)) == 0
    assert (~flat).any(), "every probe map is flat: the check below would test nothing"
    assert np.array_equal(np.isnan(rho), flat) and np.allclose(rho[~flat], 1.0)
    trained, randomised = ex.randomization_maps(model, probe, seed=0)
    assert np.allclose(trained, maps) and randomised.shape == maps.shape
    check = ex.randomization_check(trained, randomised)
    json.dumps(check, allow_nan=False)
    assert check["n_images"] == len(check["spearman_per_image"]) == 8
    assert check["n_undefined"] == sum(r is None for r in check["spearman_per_image"])
    assert check["passed"] == (check["spearman_mean"] is not None and check["spearman_mean"] < 0.5)


def test_flat_randomised_maps_fail_the_check():
    """No correlation is no evidence: all-flat randomised maps are a failure, not a pass."""
    trained = np.random.default_rng(0).random((4, 8, 8))
    check = ex.randomization_check(trained, np.zeros_like(trained))
    assert check["n_undefined"] == 4 and check["spearman_mean"] is None
    assert not check["passed"]


def test_layer_groups_run_from_the_output_to_the_input(make_cnn):
    groups = ex.layer_groups(make_cnn(seed=1))
    assert groups == [
        ("logits", ["logits"]),
        ("head_dense1", ["head_dense1"]),
        ("conv2", ["conv2", "bn2"]),
        ("conv1", ["conv1"]),
    ]


def test_cascading_randomization_ends_in_the_full_check(make_cnn, square_data):
    model = make_cnn(seed=3)
    x, y, _ = square_data(64, 32, seed=0)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    result = ex.cascading_randomization(model, x[:8], seed=0)
    json.dumps(result, allow_nan=False)
    assert [s["layer"] for s in result["steps"]] == [g for g, _ in ex.layer_groups(model)]
    for step in result["steps"]:
        for key in ("cascading", "independent"):
            assert step[key] is None or -1.0 <= step[key] <= 1.0
            assert 0 <= step[f"{key}_flat"] <= 8
    # The last cascading step re-initialises everything: the plain check's randomised model.
    full = ex.randomization_check(*ex.randomization_maps(model, x[:8], seed=0))
    assert result["steps"][-1]["cascading"] == pytest.approx(full["spearman_mean"])
    assert result["spearman_mean"] == pytest.approx(full["spearman_mean"])
    assert result["passed"] == full["passed"] and result["method"] == "gradcam"
    # Randomising one group alone is the cascade's first step when it is the top group.
    assert result["steps"][0]["independent"] == pytest.approx(result["steps"][0]["cascading"])


@pytest.mark.slow
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


def test_randomize_weights_reinitialises_every_learned_weight(make_cnn):
    model = make_cnn(seed=4)
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
