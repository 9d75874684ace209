"""The model-parameter randomisation check (Adebayo et al. 2018): maps that explain what a model
learned must change when its learned weights are re-initialised."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from brainmri.explain._plumbing import _as_batch, _nan_to_none, _probabilities
from brainmri.explain.methods import REAL_METHODS, explain

__all__ = ["randomization_check", "randomization_maps", "randomize_weights", "rank_correlation"]


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


def randomize_weights(model: keras.Model, seed: int) -> keras.Model:
    """A clone re-initialised, seeded, with each layer's own initialisers (Adebayo et al. 2018).

    Everything learned is reset: weights, and BatchNorm moving statistics, which were learned
    from data under the trained weights. Constants without an initialiser (the input
    normalisation of EfficientNet) are kept. Re-drawing weights around the trained weights' mean
    and keeping the moving statistics instead left a deep ReLU network without normalisation
    dead (all-zero feature maps), which made the check vacuous.
    """
    clone = keras.models.clone_model(model)
    for source, target in zip(model.weights, clone.weights, strict=True):
        target.assign(source.value)
    rng = np.random.default_rng(seed)
    # A frozen backbone's weights are learned weights too. Setting `clone.trainable` does not
    # reach layers frozen one by one, so every (nested) layer is unfrozen explicitly.
    stack = list(clone.layers)
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
    return clone


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
    if method not in REAL_METHODS:
        raise ValueError(f"method={method!r}: expected one of {list(REAL_METHODS)}")
    x = _as_batch(images, model)
    predicted = _probabilities(model, x, batch_size).argmax(axis=1)
    kw = {"class_index": predicted, "layer_name": layer_name, "batch_size": batch_size}
    return explain(method, model, x, **kw), explain(method, randomize_weights(model, seed), x, **kw)


def randomization_check(
    trained: ArrayLike, randomised: ArrayLike, *, max_correlation: float = 0.5
) -> dict[str, Any]:
    """Rank correlation between maps of a model and of its re-initialised clone, and a verdict.

    It passes when the mean correlation is below max_correlation, or when every randomised map
    is flat (nothing of the trained explanation survived; the correlation is then undefined).

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
        "passed": bool(mean < max_correlation) if mean is not None else True,
    }
