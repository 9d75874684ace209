"""The model-parameter randomisation check (Adebayo et al. 2018): maps that explain what a model
learned must change when its learned weights are re-initialised."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import keras
import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from brainmri.explain._plumbing import _as_batch, _nan_to_none, _probabilities
from brainmri.explain.methods import REAL_METHODS, explain

__all__ = [
    "cascading_randomization",
    "layer_groups",
    "randomization_check",
    "randomization_maps",
    "randomize_weights",
    "rank_correlation",
]


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
    model: keras.Model, seed: int, *, layers: Collection[str] | None = None
) -> keras.Model:
    """A clone re-initialised, seeded, with each layer's own initialisers (Adebayo et al. 2018).

    Everything learned is reset: weights, and BatchNorm moving statistics, which were learned
    from data under the trained weights. Constants without an initialiser (the input
    normalisation of EfficientNet) are kept. Re-drawing weights around the trained weights' mean
    and keeping the moving statistics instead left a deep ReLU network without normalisation
    dead (all-zero feature maps), which made the check vacuous.

    Args:
        model: the trained model (left unchanged).
        seed: the seed of the new weights.
        layers: names of the top-level layers to re-initialise; None re-initialises all.

    Returns:
        The clone.
    """
    clone = keras.models.clone_model(model)
    for source, target in zip(model.weights, clone.weights, strict=True):
        target.assign(source.value)
    _reinitialise(clone, seed, layers)
    return clone


def _reinitialise(model: keras.Model, seed: int, layers: Collection[str] | None) -> None:
    """Re-draw the weights of the named top-level layers (all when None) in place."""
    rng = np.random.default_rng(seed)
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
    from brainmri.model import _BLOCK

    match = _BLOCK.match(layer_name)
    return match.group(1) if match else layer_name


def rank_correlation(maps_a: ArrayLike, maps_b: ArrayLike) -> np.ndarray:
    """Per-image Spearman correlation of two map batches (NaN where a map is constant)."""
    a, b = np.asarray(maps_a), np.asarray(maps_b)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(
            f"maps: expected two (N, H, W) batches of equal shape, got {a.shape}, {b.shape}"
        )
    out = np.full(len(a), np.nan)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            out[i] = stats.spearmanr(x.ravel(), y.ravel()).statistic
    return out


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
) -> tuple[np.ndarray, np.ndarray]:
    """Maps of the trained model and of its re-initialised clone, both for the trained prediction.

    Args:
        model: a trained classifier following the model contract (see `brainmri.explain`).
        images: a float batch (N, H, W, 3) of 0..255 pixels.
        seed: the seed of the re-initialisation (`randomize_weights`).
        method: one of `REAL_METHODS` (a baseline ignores the model, so it cannot be checked).
        layer_name: the 4-D feature-map layer explained; None finds it (`find_target_layer`).
        batch_size: images per forward (and backward) pass.

    Returns:
        (trained maps, randomised maps), each float32 (N, H, W) in [0, 1]; both explain the
        class the trained model predicts.
    """
    x, kw = _trained_prediction(model, images, method, layer_name, batch_size)
    return explain(method, model, x, **kw), explain(method, randomize_weights(model, seed), x, **kw)


def randomization_check(
    trained: ArrayLike, randomised: ArrayLike, *, max_correlation: float = 0.5
) -> dict[str, Any]:
    """Rank correlation between maps of a model and of its re-initialised clone, and a verdict.

    It passes when the mean correlation is below max_correlation. It fails when every
    randomised map is flat: the correlation is undefined, and a method whose maps vanish once
    the weights are random has not shown that it depends on them (it may only reflect a
    property of the architecture, such as dead ReLUs).

    Args:
        trained: the trained model's maps (N, H, W), e.g. from `randomization_maps`.
        randomised: the re-initialised clone's maps of the same images, same shape.
        max_correlation: the mean Spearman correlation the check must stay below.

    Returns:
        A JSON-safe dict: "n_images", "n_undefined" (flat maps), "spearman_mean" (None when
        undefined), "spearman_per_image" (None where undefined), "max_correlation", "passed".
    """
    rho = rank_correlation(trained, randomised)
    defined = rho[~np.isnan(rho)]
    mean = float(defined.mean()) if defined.size else None
    return {
        "n_images": len(rho),
        "n_undefined": int(np.isnan(rho).sum()),
        "spearman_mean": mean,
        "spearman_per_image": [_nan_to_none(float(r)) for r in rho],
        "max_correlation": float(max_correlation),
        "passed": bool(mean is not None and mean < max_correlation),
    }


def cascading_randomization(
    model: keras.Model,
    images: ArrayLike,
    seed: int,
    *,
    method: str = "gradcam",
    layer_name: str | None = None,
    batch_size: int = 32,
    max_correlation: float = 0.5,
) -> dict[str, Any]:
    """Adebayo et al. (2018)'s model-parameter randomisation tests, cascading and independent.

    Cascading: the layer groups (`layer_groups`) are re-initialised from the top down, one more
    at each step, until every weight is random; independent: each group alone. At every step
    the maps (of the class the trained model predicts) are compared with the trained model's
    by rank correlation. A method that explains the model loses its correlation early in the
    cascade; one that survives to the input layer reflects the image, not the model.

    Args:
        model: a trained classifier following the model contract (see `brainmri.explain`).
        images: a float batch (N, H, W, 3) of 0..255 pixels.
        seed: the seed of the re-initialisations.
        method: one of `REAL_METHODS`.
        layer_name: the 4-D feature-map layer explained; None finds it.
        batch_size: images per forward (and backward) pass.
        max_correlation: the verdict's threshold (see `randomization_check`).

    Returns:
        The verdict of the fully randomised model (`randomization_check`'s keys), plus
        "method" and "steps": one per group, top first, with "layer", "cascading" and
        "independent" (mean Spearman correlation, None when every map is flat) and
        "cascading_flat" / "independent_flat" (how many maps were flat).
    """
    x, kw = _trained_prediction(model, images, method, layer_name, batch_size)
    trained = explain(method, model, x, **kw)
    work = keras.models.clone_model(model)  # one clone, reset to the trained weights per map

    def maps_with_random(layers: Collection[str]) -> np.ndarray:
        for source, target in zip(model.weights, work.weights, strict=True):
            target.assign(source.value)
        _reinitialise(work, seed, layers)
        return explain(method, work, x, **kw)

    def summary(maps: np.ndarray) -> tuple[float | None, int]:
        rho = rank_correlation(trained, maps)
        defined = rho[~np.isnan(rho)]
        return (float(defined.mean()) if defined.size else None), int(np.isnan(rho).sum())

    steps, randomised, cumulative = [], trained, []
    for name, names in layer_groups(model):
        cumulative += names
        randomised = maps_with_random(set(cumulative))
        casc, casc_flat = summary(randomised)
        indep, indep_flat = summary(maps_with_random(set(names)))
        steps.append(
            {
                "layer": name,
                "cascading": casc,
                "cascading_flat": casc_flat,
                "independent": indep,
                "independent_flat": indep_flat,
            }
        )
    verdict = randomization_check(trained, randomised, max_correlation=max_correlation)
    return {**verdict, "method": method, "steps": steps}
