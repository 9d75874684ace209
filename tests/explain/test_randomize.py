"""Re-initialising learned weights: every weight redrawn, BatchNorm statistics re-estimated."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from brainmri import config
from brainmri import explain as ex
from brainmri.explain import randomize


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


def _dead_when_reinitialised(head) -> keras.Model:
    """A net whose BatchNorm learned to centre a conv biased far below zero (bias -50).

    Re-initialised with fresh statistics (mean 0, variance 1), its BatchNorm passes on about
    -50, the ReLU outputs zeros, and the randomised net is dead: flat maps and constant logits.
    """
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = layers.Rescaling(1 / 255.0)(inp)
    conv = layers.Conv2D(
        8, 3, padding="same", bias_initializer=keras.initializers.Constant(-50.0), name="conv1"
    )
    x = layers.BatchNormalization(name="bn1")(conv(x))
    model = keras.Model(inp, head(layers.Activation("relu", name="top_activation")(x)))
    model.get_layer("bn1").moving_mean.assign(np.full(8, -50.0, np.float32))  # "learned"
    return model


def test_reestimated_batchnorm_statistics_are_the_images_moments(head, random_images):
    model = _dead_when_reinitialised(head)
    x = random_images(7, 16, seed=2)
    clone = ex.randomize_weights(model, seed=0, images=x, batch_size=3)  # chunks of 3, 3 and 1
    conv_out = keras.Model(clone.inputs[0], clone.get_layer("conv1").output)(x).numpy()
    bn = clone.get_layer("bn1")
    np.testing.assert_allclose(bn.moving_mean.numpy(), conv_out.mean(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), conv_out.var(axis=(0, 1, 2)), rtol=1e-3)
    assert bn.momentum == 0.99 and bn.trainable  # the pass's settings are undone
    assert np.all(model.get_layer("bn1").moving_mean.numpy() == -50.0)  # the original kept
    # the re-initialised conv is random, not trained: the statistics are the clone's own
    assert not np.allclose(
        clone.get_layer("conv1").kernel.numpy(), model.get_layer("conv1").kernel.numpy()
    )
    assert ex.randomize_weights(model, seed=0).get_layer("bn1").moving_variance.numpy().max() == 1


def _logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The model's pre-softmax outputs."""
    return keras.Model(model.inputs[0], model.get_layer(config.LOGITS_LAYER).output)(x).numpy()


def test_reestimation_keeps_the_randomised_network_alive(head, random_images):
    model = _dead_when_reinitialised(head)
    x = random_images(6, 16, seed=3)
    trained_logits = _logits(model, x)
    for reestimate, dead in ((False, True), (True, False)):
        trained, randomised = ex.randomization_maps(model, x, seed=0, reestimate_bn=reestimate)
        clone = ex.randomize_weights(model, seed=0, images=x if reestimate else None)
        check = ex.randomization_check(
            trained,
            randomised,
            trained_logits=trained_logits,
            randomised_logits=_logits(clone, x),
        )
        assert check["n_flat_trained"] == 0  # the trained net is alive
        assert (check["n_flat_randomised"] == 6) == dead
        assert (check["logit_spread_randomised"] == 0.0) == dead
        assert check["degenerate"] is dead
        assert check["passed"]  # flat or not, the maps changed


def test_reestimation_silences_dropout_and_leaves_other_batchnorm_layers_alone(head, random_images):
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = layers.Conv2D(4, 3, padding="same", name="conv_a")(layers.Rescaling(1 / 255.0)(inp))
    x = layers.BatchNormalization(name="bn_a")(layers.Dropout(0.5, name="drop")(x))
    x = layers.Conv2D(4, 3, padding="same", name="conv_b")(x)
    x = layers.BatchNormalization(name="bn_b")(x)  # a trained layer: trainable, not chosen
    model = keras.Model(inp, head(layers.Activation("relu", name="top_activation")(x)))
    kept = np.linspace(-1, 1, 4).astype(np.float32)
    model.get_layer("bn_b").moving_mean.assign(kept)
    images = random_images(5, 16, seed=4)
    assert randomize.reestimate_batchnorm(model, images, layers=["bn_a", "conv_b"]) == ["bn_a"]
    # inference-mode moments of bn_a's input: dropout (training mode) would double the variance
    before = keras.Model(model.inputs[0], model.get_layer("drop").output)(images).numpy()
    bn_a = model.get_layer("bn_a")
    np.testing.assert_allclose(bn_a.moving_mean.numpy(), before.mean(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(bn_a.moving_variance.numpy(), before.var(axis=(0, 1, 2)), rtol=1e-3)
    np.testing.assert_array_equal(model.get_layer("bn_b").moving_mean.numpy(), kept)
    assert model.get_layer("bn_b").trainable and model.get_layer("drop").rate == 0.5
    assert randomize.reestimate_batchnorm(model, images, layers=["conv_a"]) == []  # no BatchNorm


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


def test_randomize_weights_into_a_clone_resets_it_first(make_cnn):
    model = make_cnn(seed=5)
    work = keras.models.clone_model(model)
    top = ex.randomize_weights(model, seed=0, layers={"logits"}, into=work)
    assert top is work
    # only the named layer was redrawn: the rest holds the trained weights again
    np.testing.assert_array_equal(
        work.get_layer("conv1").kernel.numpy(), model.get_layer("conv1").kernel.numpy()
    )
    assert not np.allclose(
        work.get_layer("logits").kernel.numpy(), model.get_layer("logits").kernel.numpy()
    )
    everything = ex.randomize_weights(model, seed=0, into=work)
    fresh = ex.randomize_weights(model, seed=0)
    for a, b in zip(everything.weights, fresh.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
