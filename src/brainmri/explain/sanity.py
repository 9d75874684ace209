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

Re-initialising the weights is `brainmri.explain.randomize`'s job; this module makes the maps,
compares them and gives the verdict.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike
from scipy import stats

from brainmri.explain._plumbing import _as_batch, _logits_fn, _probabilities
from brainmri.explain.methods import REAL_METHODS, explain
from brainmri.explain.randomize import randomize_weights, reestimate_batchnorm

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "DEGENERATE_SPREAD",
    "MAX_CORRELATION",
    "MIN_SHARE_CHANGED",
    "RandomizationOptions",
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


class RandomizationOptions(TypedDict, total=False):
    """Keyword options of `randomization_maps` and `cascading_randomization`.

    Defaults: method "gradcam", layer_name None, batch_size 32, reestimate_bn True.
    """

    method: str
    """One of `REAL_METHODS` (a baseline ignores the model, so it cannot be checked)."""
    layer_name: str | None
    """The 4-D feature-map layer explained; None finds it (`find_target_layer`)."""
    batch_size: int
    """Images per forward (and backward) pass."""
    reestimate_bn: bool
    """Re-estimate the re-initialised BatchNorm statistics on the images
    (`reestimate_batchnorm`); False keeps the fresh ones (mean 0, variance 1)."""


class _Trained(NamedTuple):
    """The checked inputs of a randomisation test, and how its maps are made."""

    x: np.ndarray  # float32 (N, H, W, 3)
    method: str
    cam: dict[str, Any]  # explain()'s options: the trained prediction, layer_name, batch_size
    batch_size: int
    reestimate_bn: bool

    def maps(self, model: keras.Model) -> np.ndarray:
        """The maps of a model (trained or randomised) for the trained prediction."""
        return explain(self.method, model, self.x, **self.cam)

    def randomised(self, model: keras.Model, seed: int, **kwargs: Any) -> keras.Model:
        """`randomize_weights` of the model, re-estimated on the images if so chosen."""
        images = self.x if self.reestimate_bn else None
        return randomize_weights(model, seed, images=images, batch_size=self.batch_size, **kwargs)


def _trained_prediction(
    model: keras.Model,
    images: ArrayLike,
    method: str = "gradcam",
    layer_name: str | None = None,
    batch_size: int = 32,
    reestimate_bn: bool = True,
) -> _Trained:
    """Check the images and the `RandomizationOptions` (their defaults); the explain() options
    make every map explain the class the trained model predicts."""
    if method not in REAL_METHODS:
        raise ValueError(f"method={method!r}: expected one of {list(REAL_METHODS)}")
    x = _as_batch(images, model)
    predicted = _probabilities(model, x, batch_size).argmax(axis=1)
    cam = {"class_index": predicted, "layer_name": layer_name, "batch_size": batch_size}
    return _Trained(x, method, cam, batch_size, reestimate_bn)


def randomization_maps(
    model: keras.Model, images: ArrayLike, seed: int, **options: Unpack[RandomizationOptions]
) -> tuple[np.ndarray, np.ndarray]:
    """Maps of the trained model and of its re-initialised clone, both for the trained prediction.

    Args:
        model: a trained classifier following the model contract (see `brainmri.explain`).
        images: a float batch (N, H, W, 3) of 0..255 pixels.
        seed: the seed of the re-initialisation (`randomize_weights`).
        **options: `RandomizationOptions`: method, layer_name, batch_size, reestimate_bn.

    Returns:
        (trained maps, randomised maps), each float32 (N, H, W) in [0, 1]; both explain the
        class the trained model predicts.
    """
    t = _trained_prediction(model, images, **options)
    clone = t.randomised(model, seed)
    return t.maps(model), t.maps(clone)


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
    max_correlation: float = MAX_CORRELATION,
    min_share_changed: float = MIN_SHARE_CHANGED,
    **options: Unpack[RandomizationOptions],
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
        max_correlation: the similarity below which a map counts as changed.
        min_share_changed: the share of changed maps the verdict needs.
        **options: `RandomizationOptions`: method, layer_name, batch_size, reestimate_bn
            (re-estimate re-initialised BatchNorm statistics on the images).

    Returns:
        The verdict of the fully randomised model (`randomization_check`'s keys, with the logit
        spreads), plus "method", "batchnorm_reestimated" (bool) and "steps": one per group, top
        first, with "layer", "cascading" and "independent" (mean similarity, flat maps 0),
        "cascading_flat" / "independent_flat" (how many maps were flat on either side) and
        "cascading_changed" / "independent_changed" (the share of maps that changed).
    """
    t = _trained_prediction(model, images, **options)
    trained = t.maps(model)
    trained_flat = _flat(trained)
    work = keras.models.clone_model(model)  # one clone, reset to the trained weights per map

    def randomise(layers: Collection[str]) -> np.ndarray:
        return t.maps(t.randomised(model, seed, layers=layers, into=work))

    def summary(maps: np.ndarray) -> tuple[float, int, float]:
        rho = rank_correlation(trained, maps)
        flat = int((trained_flat | _flat(maps)).sum())
        return float(rho.mean()), flat, float((rho < max_correlation).mean())

    steps, randomised, cumulative = [], trained, []
    randomised_logits = _logits(model, t.x, t.batch_size)
    for name, names in layer_groups(model):
        cumulative += names
        randomised = randomise(set(cumulative))
        randomised_logits = _logits(work, t.x, t.batch_size)  # the last step's: all weights random
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
        trained_logits=_logits(model, t.x, t.batch_size),
        randomised_logits=randomised_logits,
    )
    return {**verdict, "method": t.method, "batchnorm_reestimated": t.reestimate_bn, "steps": steps}
