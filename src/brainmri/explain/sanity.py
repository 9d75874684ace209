"""The model-parameter randomisation check (Adebayo et al. 2018): maps that explain what a model
learned must change when its learned weights are re-initialised.

Reference: J. Adebayo, J. Gilmer, M. Muelly, I. Goodfellow, M. Hardt, B. Kim, "Sanity Checks
for Saliency Maps", NeurIPS 2018 (arXiv:1810.03292).

How the check reads here:

- Similarity is the Spearman rank correlation of a trained map and a randomised map of the same
  image. A map that is flat (constant, e.g. all zero after Grad-CAM's ReLU) on either side has no
  ranks; it scores 0 ("nothing in common"), because a map that vanishes once the weights are
  random has changed completely, which is what the check asks for.
- A map has *changed* when its similarity is below ``max_correlation`` (0.5 by default: a rank
  correlation below 0.5 shares less than a quarter of the rank variance with the trained map).
- The check passes when at least ``min_share_changed`` (0.75) of the maps changed.
- The randomised network's logit spread is reported beside the verdict, so a reader can see
  whether the maps changed because the network became degenerate (logits that no longer depend
  on the image, e.g. dead ReLUs) rather than because the explanation follows the weights.
- The randomised network's BatchNorm moving statistics are re-estimated on the images checked
  (`reestimate_batchnorm`), so re-initialised layers see normalised inputs instead of dying.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike
from scipy import stats

from brainmri.explain._plumbing import _as_batch, _logits_fn, _probabilities
from brainmri.explain.methods import REAL_METHODS, explain

__all__ = [
    "DEGENERATE_SPREAD",
    "MAX_CORRELATION",
    "MIN_SHARE_CHANGED",
    "cascading_randomization",
    "layer_groups",
    "logit_spread",
    "randomization_check",
    "randomization_maps",
    "randomize_weights",
    "rank_correlation",
    "reestimate_batchnorm",
]

MAX_CORRELATION = 0.5
"""A map has changed when its Spearman correlation with the trained map is below this."""

MIN_SHARE_CHANGED = 0.75
"""The check passes when at least this share of the maps changed: most explanations must depend
on the learned weights; a quarter is allowed for images whose maps are near-uniform either way."""

DEGENERATE_SPREAD = 0.01
"""The randomised network counts as degenerate when its logit spread is at most this share of the
trained network's: its output then barely depends on the image, and changed maps show little."""


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

    Returns:
        The clone.
    """
    clone = keras.models.clone_model(model)
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


def layer_groups(model: keras.Model) -> list[tuple[str, list[str]]]:
    """The model's weighted layers from the output down to the input, a group per block.

    Head layers (Dense, logits) are a group each; backbone layers are grouped by block
    (`brainmri.model.backbone_blocks`: block6a_*, conv3_block2_*, ...), as Adebayo et al.
    randomise "blocks" of an Inception network.

    Returns:
        (group name, names of its layers with weights), top first.
    """
    from brainmri.model import backbone_blocks, head_layer_names

    by_name = {layer.name: layer for layer in model.layers}
    groups = [(name, [name]) for name in reversed(head_layer_names(model)) if by_name[name].weights]
    for block in reversed(backbone_blocks(model)):
        names = [layer.name for layer in block if layer.weights]
        if names:
            groups.append((_block_name(names[0]), names))
    return groups


def _block_name(layer_name: str) -> str:
    from brainmri.model import block_name  # model imports explain: imported on use

    return block_name(layer_name)


def rank_correlation(maps_a: ArrayLike, maps_b: ArrayLike) -> np.ndarray:
    """Per-image Spearman correlation of two map batches; 0 where either map is flat.

    A flat (constant) map has no ranks, so its correlation is undefined. For the randomisation
    check it scores 0, "nothing in common": a map that turns flat once the weights are random
    has changed completely (Adebayo et al. 2018 ask exactly that the map change).

    Args:
        maps_a: a batch of maps (N, H, W).
        maps_b: another batch of the same shape.

    Returns:
        float64 (N,), each in [-1, 1].
    """
    a, b = np.asarray(maps_a), np.asarray(maps_b)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(
            f"maps: expected two (N, H, W) batches of equal shape, got {a.shape}, {b.shape}"
        )
    out = np.zeros(len(a))
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            out[i] = stats.spearmanr(x.ravel(), y.ravel()).statistic
    return out


def _flat(maps: np.ndarray) -> np.ndarray:
    """Per map: whether it is constant (no ranks)."""
    return np.ptp(maps.reshape(len(maps), -1), axis=1) == 0


def logit_spread(logits: ArrayLike) -> float:
    """How much a network's logits vary with the image: per class the standard deviation over
    the images, averaged over the classes.

    The spread over images (not over images and classes together) is what shows a degenerate
    network: a dead one still gives each class its own constant (its bias), which a spread over
    classes would count as variation.

    Args:
        logits: (N, K) logits of N images.

    Returns:
        The spread, in logit units (0 for a network whose output ignores the image).
    """
    z = np.asarray(logits, np.float64)
    if z.ndim != 2 or len(z) == 0:
        raise ValueError(f"logits: expected an (N, K) array with N >= 1, got shape {z.shape}")
    return float(z.std(axis=0).mean())


def _logits(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's logits of a float batch, in chunks of batch_size."""
    fn = _logits_fn(model)
    return np.concatenate(
        [fn(tf.constant(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    )


def _trained_prediction(
    model: keras.Model, images: ArrayLike, method: str, layer_name: str | None, batch_size: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """The batch, and the explain() options that make every map explain the trained prediction."""
    if method not in REAL_METHODS:
        raise ValueError(f"method={method!r}: expected one of {list(REAL_METHODS)}")
    x = _as_batch(images, model)
    predicted = _probabilities(model, x, batch_size).argmax(axis=1)
    return x, {"class_index": predicted, "layer_name": layer_name, "batch_size": batch_size}


def randomization_maps(
    model: keras.Model,
    images: ArrayLike,
    seed: int,
    *,
    method: str = "gradcam",
    layer_name: str | None = None,
    batch_size: int = 32,
    reestimate_bn: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Maps of the trained model and of its re-initialised clone, both for the trained prediction.

    Args:
        model: a trained classifier following the model contract (see `brainmri.explain`).
        images: a float batch (N, H, W, 3) of 0..255 pixels.
        seed: the seed of the re-initialisation (`randomize_weights`).
        method: one of `REAL_METHODS` (a baseline ignores the model, so it cannot be checked).
        layer_name: the 4-D feature-map layer explained; None finds it (`find_target_layer`).
        batch_size: images per forward (and backward) pass.
        reestimate_bn: re-estimate the clone's BatchNorm statistics on the images
            (`reestimate_batchnorm`); False keeps the fresh ones (mean 0, variance 1).

    Returns:
        (trained maps, randomised maps), each float32 (N, H, W) in [0, 1]; both explain the
        class the trained model predicts.
    """
    x, kw = _trained_prediction(model, images, method, layer_name, batch_size)
    clone = randomize_weights(
        model, seed, images=x if reestimate_bn else None, batch_size=batch_size
    )
    return explain(method, model, x, **kw), explain(method, clone, x, **kw)


def randomization_check(
    trained: ArrayLike,
    randomised: ArrayLike,
    *,
    max_correlation: float = MAX_CORRELATION,
    min_share_changed: float = MIN_SHARE_CHANGED,
    trained_logits: ArrayLike | None = None,
    randomised_logits: ArrayLike | None = None,
) -> dict[str, Any]:
    """Did the maps change when the weights were re-initialised? Share changed, and a verdict.

    Each image's similarity is the Spearman correlation of its two maps, 0 when either map is
    flat (`rank_correlation`); a map has changed when its similarity is below max_correlation.
    The check passes when at least min_share_changed of the maps changed. Flat randomised maps
    therefore count as changed, never as a failure; whether they come from a degenerate
    randomised network shows in its logit spread, reported when the logits are given.

    Args:
        trained: the trained model's maps (N, H, W), e.g. from `randomization_maps`.
        randomised: the re-initialised clone's maps of the same images, same shape.
        max_correlation: the similarity a map must stay below to count as changed.
        min_share_changed: the share of changed maps the check needs to pass.
        trained_logits: the trained model's (N, K) logits of the images, for the spread.
        randomised_logits: the randomised model's (N, K) logits of the images.

    Returns:
        A JSON-safe dict: "n_images"; "spearman_per_image" (similarity, 0 for flat maps) and
        "spearman_mean"; "n_flat" (images whose similarity is 0 because a map is flat),
        "n_flat_trained", "n_flat_randomised"; "n_changed", "share_changed"; the thresholds
        "max_correlation" and "min_share_changed"; "passed" (share_changed >=
        min_share_changed); "logit_spread_trained", "logit_spread_randomised" (`logit_spread`,
        None without logits) and "degenerate" (the randomised spread is at most
        `DEGENERATE_SPREAD` of the trained one; None without both logits).
    """
    a, b = np.asarray(trained), np.asarray(randomised)
    rho = rank_correlation(a, b)
    flat_a, flat_b = _flat(a), _flat(b)
    changed = rho < max_correlation
    spread_t = None if trained_logits is None else logit_spread(trained_logits)
    spread_r = None if randomised_logits is None else logit_spread(randomised_logits)
    degenerate = None
    if spread_t is not None and spread_r is not None:
        degenerate = bool(spread_r <= DEGENERATE_SPREAD * spread_t)  # both 0: degenerate
    share = float(changed.mean()) if len(rho) else 0.0
    return {
        "n_images": len(rho),
        "spearman_mean": float(rho.mean()) if len(rho) else None,
        "spearman_per_image": [float(r) for r in rho],
        "n_flat": int((flat_a | flat_b).sum()),
        "n_flat_trained": int(flat_a.sum()),
        "n_flat_randomised": int(flat_b.sum()),
        "n_changed": int(changed.sum()),
        "share_changed": share,
        "max_correlation": float(max_correlation),
        "min_share_changed": float(min_share_changed),
        "passed": bool(len(rho) > 0 and share >= min_share_changed),
        "logit_spread_trained": spread_t,
        "logit_spread_randomised": spread_r,
        "degenerate": degenerate,
    }


def cascading_randomization(
    model: keras.Model,
    images: ArrayLike,
    seed: int,
    *,
    method: str = "gradcam",
    layer_name: str | None = None,
    batch_size: int = 32,
    max_correlation: float = MAX_CORRELATION,
    min_share_changed: float = MIN_SHARE_CHANGED,
    reestimate_bn: bool = True,
) -> dict[str, Any]:
    """Adebayo et al. (2018)'s model-parameter randomisation tests, cascading and independent.

    Cascading: the layer groups (`layer_groups`) are re-initialised from the top down, one more
    at each step, until every weight is random; independent: each group alone. At every step
    the maps (of the class the trained model predicts) are compared with the trained model's
    by rank correlation (0 for a flat map). A method that explains the model loses its
    correlation early in the cascade; one that survives to the input layer reflects the image,
    not the model. At each step the re-initialised BatchNorm layers' statistics are re-estimated
    on the images (`reestimate_batchnorm`); trained BatchNorm layers keep theirs.

    Args:
        model: a trained classifier following the model contract (see `brainmri.explain`).
        images: a float batch (N, H, W, 3) of 0..255 pixels.
        seed: the seed of the re-initialisations.
        method: one of `REAL_METHODS`.
        layer_name: the 4-D feature-map layer explained; None finds it.
        batch_size: images per forward (and backward) pass.
        max_correlation: the similarity below which a map counts as changed.
        min_share_changed: the share of changed maps the verdict needs.
        reestimate_bn: re-estimate re-initialised BatchNorm statistics on the images.

    Returns:
        The verdict of the fully randomised model (`randomization_check`'s keys, with the logit
        spreads), plus "method", "batchnorm_reestimated" (bool) and "steps": one per group, top
        first, with "layer", "cascading" and "independent" (mean similarity, flat maps 0),
        "cascading_flat" / "independent_flat" (how many maps were flat on either side) and
        "cascading_changed" / "independent_changed" (the share of maps that changed).
    """
    x, kw = _trained_prediction(model, images, method, layer_name, batch_size)
    trained = explain(method, model, x, **kw)
    trained_flat = _flat(trained)
    work = keras.models.clone_model(model)  # one clone, reset to the trained weights per map

    def randomise(layers: Collection[str]) -> np.ndarray:
        for source, target in zip(model.weights, work.weights, strict=True):
            target.assign(source.value)
        redrawn = _reinitialise(work, seed, layers)
        if reestimate_bn:
            reestimate_batchnorm(work, x, layers=[la.name for la in redrawn], batch_size=batch_size)
        return explain(method, work, x, **kw)

    def summary(maps: np.ndarray) -> tuple[float, int, float]:
        rho = rank_correlation(trained, maps)
        flat = int((trained_flat | _flat(maps)).sum())
        return float(rho.mean()), flat, float((rho < max_correlation).mean())

    steps, randomised, cumulative = [], trained, []
    randomised_logits = _logits(model, x, batch_size)
    for name, names in layer_groups(model):
        cumulative += names
        randomised = randomise(set(cumulative))
        randomised_logits = _logits(work, x, batch_size)  # the last step's: all weights random
        casc, casc_flat, casc_changed = summary(randomised)
        indep, indep_flat, indep_changed = summary(randomise(set(names)))
        steps.append(
            {
                "layer": name,
                "cascading": casc,
                "cascading_flat": casc_flat,
                "cascading_changed": casc_changed,
                "independent": indep,
                "independent_flat": indep_flat,
                "independent_changed": indep_changed,
            }
        )
    verdict = randomization_check(
        trained,
        randomised,
        max_correlation=max_correlation,
        min_share_changed=min_share_changed,
        trained_logits=_logits(model, x, batch_size),
        randomised_logits=randomised_logits,
    )
    return {**verdict, "method": method, "batchnorm_reestimated": reestimate_bn, "steps": steps}
