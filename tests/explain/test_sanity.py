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
