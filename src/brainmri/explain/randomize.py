"""Re-initialising a model's learned weights, for the randomisation check (`sanity`).

Everything learned is reset with each layer's own initialisers: weights, and BatchNorm moving
statistics, which were learned from data under the trained weights. Because fresh statistics
(mean 0, variance 1) do not fit the activations of random weights, they can be re-estimated on
the images checked (`reestimate_batchnorm`), so the randomised network is a working network
with random weights rather than a dead one.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

import keras
import numpy as np
from numpy.typing import ArrayLike

from brainmri.explain._plumbing import _as_batch

__all__ = ["randomize_weights", "reestimate_batchnorm"]


_NOISE_LAYERS = (
    keras.layers.Dropout,  # SpatialDropout* too
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.GaussianNoise,
)
"""Layers that add noise in training mode; silenced while BatchNorm statistics are re-estimated."""


def _initializer_of(layer: keras.layers.Layer, var: Any) -> keras.initializers.Initializer | None:
    """The initialiser a layer created a weight with (kernel -> kernel_initializer, ...), if any."""
    name = var.name
    # Keras names most initialisers after their weight; DepthwiseConv2D's "kernel" is the exception.
    attrs = [f"{name}_initializer", f"{name.removesuffix('_kernel')}_initializer"]
    if name == "kernel":
        attrs.append("depthwise_initializer")
    for attr in attrs:
        init = getattr(layer, attr, None)
        if isinstance(init, keras.initializers.Initializer):
            return init
    return None


def randomize_weights(
    model: keras.Model,
    seed: int,
    *,
    layers: Collection[str] | None = None,
    images: ArrayLike | None = None,
    batch_size: int = 32,
    into: keras.Model | None = None,
) -> keras.Model:
    """A clone re-initialised, seeded, with each layer's own initialisers (Adebayo et al. 2018).

    Everything learned is reset: weights, and BatchNorm moving statistics, which were learned
    from data under the trained weights. Constants without an initialiser (the input
    normalisation of EfficientNet) are kept. Re-drawing weights around the trained weights' mean
    and keeping the moving statistics instead left a deep ReLU network without normalisation
    dead (all-zero feature maps), which made the check vacuous. Fresh moving statistics (mean 0,
    variance 1) do not fit the activations of random weights either, so when ``images`` are
    given, the re-initialised BatchNorm layers' statistics are re-estimated on them
    (`reestimate_batchnorm`).

    Args:
        model: the trained model (left unchanged).
        seed: the seed of the new weights.
        layers: names of the top-level layers to re-initialise; None re-initialises all.
        images: a float batch (N, H, W, 3) of 0..255 pixels to re-estimate the re-initialised
            BatchNorm statistics on; None keeps the fresh statistics (mean 0, variance 1).
        batch_size: images per forward pass of the re-estimation.
        into: a clone of model made earlier (`keras.models.clone_model`), reset to the model's
            weights and re-initialised in place, for a test that randomises one model many
            times; None makes a new clone.

    Returns:
        The clone (``into`` when given).
    """
    clone = keras.models.clone_model(model) if into is None else into
    for source, target in zip(model.weights, clone.weights, strict=True):
        target.assign(source.value)
    redrawn = _reinitialise(clone, seed, layers)
    if images is not None:
        reestimate_batchnorm(
            clone, images, layers=[la.name for la in redrawn], batch_size=batch_size
        )
    return clone


def _leaf_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of the model that has no sublayers, nested models opened."""
    stack = list(reversed(model.layers))
    while stack:
        layer = stack.pop()
        sublayers = getattr(layer, "layers", [])
        if sublayers:
            stack.extend(reversed(sublayers))
        else:
            yield layer


def _reinitialise(
    model: keras.Model, seed: int, layers: Collection[str] | None
) -> list[keras.layers.Layer]:
    """Re-draw the weights of the named top-level layers (all when None) in place.

    Returns:
        The (leaf) layers whose weights were re-drawn.
    """
    rng = np.random.default_rng(seed)
    redrawn = []
    # A frozen backbone's weights are learned weights too. Setting `model.trainable` does not
    # reach layers frozen one by one, so every (nested) layer is unfrozen explicitly.
    stack = [la for la in model.layers if layers is None or la.name in layers]
    while stack:
        layer = stack.pop()
        layer.trainable = True
        sublayers = getattr(layer, "layers", [])
        stack.extend(sublayers)
        if sublayers:
            continue  # a nested model: its layers are visited themselves
        if layer.weights:
            redrawn.append(layer)
        for var in layer.weights:
            init = _initializer_of(layer, var)
            if init is None:
                if var.trainable:
                    raise ValueError(
                        f"randomize_weights: layer {layer.name!r} has no initialiser for its "
                        f"weight {var.name!r}; cannot re-initialise it"
                    )
                continue  # a constant, e.g. an input normalisation's mean and variance
            init_config = init.get_config()
            if "seed" in init_config:
                init_config["seed"] = int(rng.integers(2**31 - 1))
            var.assign(init.__class__.from_config(init_config)(var.shape, dtype=var.dtype))
    return redrawn


def reestimate_batchnorm(
    model: keras.Model,
    images: ArrayLike,
    *,
    layers: Collection[str] | None = None,
    batch_size: int = 32,
) -> list[str]:
    """Set BatchNorm moving statistics to those of the images under the model's current weights.

    After re-initialisation a BatchNorm layer's moving mean and variance (0 and 1) describe no
    real activations: with random weights upstream, its inputs can sit far from them, and the
    ReLUs after it then output all zeros (or explode), so the randomised network is degenerate
    and its maps are flat for a reason that has nothing to do with the explanation. Adebayo et
    al. (2018) randomise weights and read the maps of the result; re-estimating the statistics
    on the data (as PreciseBN and AdaBN do: Wu & Johnson 2021, "Rethinking 'Batch' in
    BatchNorm"; Li et al. 2016, "Revisiting Batch Normalization For Practical Domain
    Adaptation") keeps the randomised network a working network with random weights.

    One forward pass in training mode per chunk of ``batch_size`` images, with momentum 0 so each
    chosen layer's moving statistics become the chunk's moments; the chunks' moments are pooled
    into the mean and (population) variance over all images. Upstream layers normalise each
    chunk with its own moments during the pass, so deeper layers' pooled statistics are exact
    when all images fit in one chunk and close otherwise. BatchNorm layers not chosen run in
    inference mode and keep their statistics; dropout and Gaussian noise are switched off during
    the pass.

    Args:
        model: the model, changed in place.
        images: a float batch (N, H, W, 3) of 0..255 pixels.
        layers: names of the (leaf) layers whose statistics to re-estimate, BatchNorm ones among
            them used and the rest ignored; None re-estimates every BatchNorm layer.
        batch_size: images per forward pass.

    Returns:
        The names of the BatchNorm layers re-estimated.

    Raises:
        ValueError: the model holds random augmentation layers, which would change the images
            in training mode.
    """
    leaves = list(_leaf_layers(model))
    norms = [la for la in leaves if isinstance(la, keras.layers.BatchNormalization)]
    chosen = None if layers is None else set(layers)
    targets = [la for la in norms if chosen is None or la.name in chosen]
    if not targets:
        return []
    augmenting = [la.name for la in leaves if type(la).__name__.startswith("Random")]
    if augmenting:
        raise ValueError(
            f"reestimate_batchnorm: model {model.name!r} holds random augmentation layers "
            f"{augmenting}, which would alter the images in training mode"
        )
    x = _as_batch(images, model)
    noisy = [
        (la, "stddev" if isinstance(la, keras.layers.GaussianNoise) else "rate")
        for la in leaves
        if isinstance(la, _NOISE_LAYERS)
    ]
    saved = {
        "trainable": [(la, la.trainable) for la in norms],
        "momentum": [(la, la.momentum) for la in targets],
        "noise": [(la, attr, getattr(la, attr)) for la, attr in noisy],
    }
    first = {id(la): 0.0 for la in targets}
    second = {id(la): 0.0 for la in targets}
    try:
        # Keras runs a BatchNorm layer in training mode only when it is trainable: the other
        # BatchNorm layers (trained ones kept in a cascade step) are frozen for the pass.
        for la in norms:
            la.trainable = False
        for la in targets:
            la.trainable, la.momentum = True, 0.0
        for la, attr in noisy:
            setattr(la, attr, 0.0)
        for start in range(0, len(x), batch_size):
            chunk = x[start : start + batch_size]
            model(chunk, training=True)
            for la in targets:
                mean = np.asarray(la.moving_mean.numpy(), np.float64)
                var = np.asarray(la.moving_variance.numpy(), np.float64)
                first[id(la)] = first[id(la)] + len(chunk) * mean
                second[id(la)] = second[id(la)] + len(chunk) * (var + mean**2)
    finally:
        for la, trainable in saved["trainable"]:
            la.trainable = trainable
        for la, momentum in saved["momentum"]:
            la.momentum = momentum
        for la, attr, value in saved["noise"]:
            setattr(la, attr, value)
    for la in targets:
        mean = first[id(la)] / len(x)
        var = np.maximum(second[id(la)] / len(x) - mean**2, 0.0)  # pooled: E[x^2] - E[x]^2
        la.moving_mean.assign(mean.astype(la.moving_mean.dtype))
        la.moving_variance.assign(var.astype(la.moving_variance.dtype))
    return [la.name for la in targets]
