"""The feature-space layer of the OOD guard: the classifier's pooled backbone features (the
input of its head, :data:`FEATURE_LAYER`), scored by the distance to the k-th nearest training
feature after L2 normalisation (Sun et al. 2022, "Out-of-distribution detection with deep
nearest neighbors") or by the class-conditional Mahalanobis distance with one shared covariance
(Lee et al. 2018, "A simple unified framework for detecting out-of-distribution samples and
adversarial attacks").

Which layer and score were measured on the `cpu` run (tools/ood_study.py, docs/predict.md): the
head's last hidden layer (64 units, the literal penultimate layer) told photographs from
validation slices with an AUROC of 0.89-0.92 and blank images at 0.40-0.97, whichever score; the
pooled backbone features (1,280) with kNN did so at 0.99-1.00 for every far kind. The head,
trained to separate four classes, keeps little of what makes an image foreign.

Both are fitted on the training subset's features only; the threshold is chosen on validation
(:func:`choose_threshold`). The fitted statistics travel with the model as ``ood.npz``
(:func:`save_guard`, :func:`load_guard`), tied to the model by its SHA-256.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brainmri.config import LOGITS_LAYER

FEATURE_LAYER = "global_max_pool"
"""The layer whose output is the feature: the backbone's pooled features, the head's input."""

METHODS = ("mahalanobis", "knn")
"""The feature scores: ``mahalanobis`` (Lee et al. 2018) and ``knn`` (Sun et al. 2022)."""

FORMAT = 2
"""The layout version of ood.npz; a file of another version is treated as stale."""


class GuardUnavailable(RuntimeError):
    """ood.npz cannot be used (missing, unreadable, of another model): one line saying so."""


def feature_model(model: Any, layer: str | None = FEATURE_LAYER) -> Any:
    """The classifier with two outputs: the features the guard scores and the logits.

    Args:
        model: a classifier built by ``model.build_model`` (or loaded by ``model.load_model``).
        layer: the layer whose output is the feature (:data:`FEATURE_LAYER`); None: the input of
            the logits layer (the head's last hidden layer).

    Returns:
        A Keras model mapping 0..255 images to ``[features (N, D), logits (N, K)]``.
    """
    import keras

    logits = model.get_layer(LOGITS_LAYER)
    feature = logits.input if layer is None else model.get_layer(layer).output
    return keras.Model(model.inputs[0], [feature, logits.output])


def extract(model: Any, images: Any, *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The guard's features (:data:`FEATURE_LAYER`) and the logits of images.

    Args:
        model: the classifier.
        images: an (N, H, W, 3) array of 0..255 images at the model's input size, or a
            ``tf.data`` dataset of such batches without labels.
        batch_size: images per forward pass (arrays only).

    Returns:
        ``(features, logits)``: float64 arrays (N, D) and (N, K).
    """
    net = feature_model(model)
    if hasattr(images, "map"):
        features, logits = net.predict(images, verbose=0)
    else:
        if len(images) == 0:
            width = int(model.get_layer(FEATURE_LAYER).output.shape[-1])
            return np.zeros((0, width)), np.zeros((0, int(model.output_shape[-1])))
        features, logits = net.predict(
            np.asarray(images, np.float32), batch_size=batch_size, verbose=0
        )
    return np.asarray(features, np.float64), np.asarray(logits, np.float64)


def extract_files(
    model: Any, files: Any, *, crop: bool = False, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """The guard's features and the logits of image files, prepared as training prepared them.

    Args:
        model: the classifier.
        files: image paths.
        crop: cut each image to the head first (``model.crop_to_brain``).
        batch_size: images per forward pass.

    Returns:
        ``(features, logits)`` in the order of ``files``.
    """
    from brainmri import inputs

    ds = inputs.make_dataset(
        list(files), None, model.input_shape[1], batch_size, cache="none", crop=crop
    )
    return extract(model, ds)


@dataclass
class FeatureScorer:
    """A fitted feature score: higher means further from the training data."""

    method: str
    """``mahalanobis`` or ``knn``."""
    means: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """Mahalanobis: the class means of the training features, (K, D)."""
    precision: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """Mahalanobis: the inverse of the shared (tied) covariance, (D, D)."""
    bank: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """kNN: the L2-normalised training features, (N, D)."""
    k: int = 0
    """kNN: which neighbour's distance is the score."""

    def score(self, features: np.ndarray) -> np.ndarray:
        """The score of each row of ``features`` (N, D): higher = more foreign.

        Mahalanobis: the smallest squared distance to a class mean under the shared
        covariance. kNN: the Euclidean distance of the normalised feature to its k-th nearest
        normalised training feature.
        """
        x = np.asarray(features, np.float64)
        if self.method == "mahalanobis":
            scores = np.empty((len(x), len(self.means)))
            for c, mean in enumerate(self.means):
                d = x - mean
                scores[:, c] = np.einsum("ij,jk,ik->i", d, self.precision, d)
            return scores.min(axis=1)
        z = _normalise(x)
        out = np.empty(len(z))
        for start in range(0, len(z), 512):  # 512 x N distances at a time
            block = z[start : start + 512]
            d2 = np.maximum(2.0 - 2.0 * block @ self.bank.T, 0.0)
            out[start : start + 512] = np.sqrt(np.partition(d2, self.k - 1, axis=1)[:, self.k - 1])
        return out


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_mahalanobis(
    features: np.ndarray, labels: np.ndarray, *, ridge: float = 1e-3
) -> FeatureScorer:
    """Class means and one shared covariance of training features (Lee et al. 2018).

    Args:
        features: the training features (N, D).
        labels: their class indices (N,).
        ridge: added to the covariance's diagonal, as a share of its mean variance. The ReLU
            features hold units that never fire on training images; without it their variance
            is 0 and the covariance singular. With it, such a unit firing on a foreign image
            counts as a large distance, instead of being ignored as a pseudo-inverse would.

    Returns:
        The fitted :class:`FeatureScorer`.
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(labels)
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    centred = x - means[np.searchsorted(classes, y)]
    cov = centred.T @ centred / len(x)
    cov += np.eye(len(cov)) * ridge * max(float(np.trace(cov)) / len(cov), 1e-12)
    return FeatureScorer("mahalanobis", means=means, precision=np.linalg.inv(cov))


def fit_knn(features: np.ndarray, *, k: int = 10) -> FeatureScorer:
    """The bank of L2-normalised training features (Sun et al. 2022).

    Args:
        features: the training features (N, D).
        k: which nearest neighbour's distance scores an image (at most N).

    Returns:
        The fitted :class:`FeatureScorer`.
    """
    x = np.asarray(features, np.float64)
    if not 1 <= k <= len(x):
        raise ValueError(f"k: expected 1..{len(x)} (the training features), got {k}")
    # float16, as ood.npz keeps it (2.5 MB per 1,000 images of 1,280 features): the threshold
    # is chosen with the very bank predict then uses
    return FeatureScorer("knn", bank=_normalise(x).astype(np.float16).astype(np.float64), k=k)


def fit_scorer(
    method: str, features: np.ndarray, labels: np.ndarray, *, k: int = 10
) -> FeatureScorer:
    """Fit the feature score ``method`` (one of :data:`METHODS`) on training features."""
    if method == "mahalanobis":
        return fit_mahalanobis(features, labels)
    if method == "knn":
        return fit_knn(features, k=k)
    raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")


def choose_threshold(scores: np.ndarray, passed: np.ndarray, *, keep: float = 0.95) -> float:
    """The feature-score threshold that keeps ``keep`` of the validation images in all.

    The gate refuses some validation images first; the threshold is the quantile of the
    passing images' scores that leaves ``keep`` of all of them unflagged (as many as the gate
    allows: a gate refusing more than ``1 - keep`` leaves the threshold at the passing images'
    maximum). Chosen on validation, never on the headline test images.

    Args:
        scores: the validation images' feature scores (higher = more foreign).
        passed: whether the gate let each through.
        keep: the share of validation images to keep.

    Returns:
        The threshold: an image is flagged when its score is above it.
    """
    if not 0 < keep < 1:
        raise ValueError(f"keep: expected a fraction in (0, 1), got {keep!r}")
    scores, passed = np.asarray(scores, np.float64), np.asarray(passed, bool)
    if not passed.any():
        raise ValueError("the gate refused every validation image: no threshold to choose")
    share = min(1.0, keep * len(scores) / passed.sum())
    return float(np.quantile(scores[passed], share, method="higher"))


@dataclass
class FeatureGuard:
    """The fitted feature layer of the guard, as saved in ood.npz."""

    scorer: FeatureScorer
    threshold: float
    """Scores above it are flagged (chosen on validation)."""
    keep: float
    """The share of validation images the guard (gate and threshold) keeps."""
    model_sha256: str
    """The model the features belong to."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """What it was fitted on (subset, image count, feature width, manifest hash)."""


def save_guard(path: Path | str, guard: FeatureGuard) -> str:
    """Write ood.npz atomically (``brainmri.io.atomic_write``).

    Args:
        path: the file, ``reports/<profile>/ood.npz``.
        guard: the fitted guard.

    Returns:
        The SHA-256 of the bytes written (for the run's records).
    """
    import hashlib

    from brainmri.io import atomic_write

    meta = {
        "format": FORMAT,
        "method": guard.scorer.method,
        "k": guard.scorer.k,
        "threshold": guard.threshold,
        "keep": guard.keep,
        "model_sha256": guard.model_sha256,
        "layer": FEATURE_LAYER,
        "provenance": guard.provenance,
    }
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        meta=np.array(json.dumps(meta, sort_keys=True)),
        means=guard.scorer.means,
        precision=guard.scorer.precision,
        bank=guard.scorer.bank.astype(np.float16),
    )
    payload = buffer.getvalue()
    atomic_write(path, payload)
    return hashlib.sha256(payload).hexdigest()


def load_guard(path: Path | str, *, model_sha256: str | None = None) -> FeatureGuard:
    """Read ood.npz, checking it belongs to the model.

    Args:
        path: the file.
        model_sha256: the model's SHA-256; a guard fitted on another model is stale.

    Returns:
        The :class:`FeatureGuard`.

    Raises:
        GuardUnavailable: missing, unreadable, of another layout version or of another model;
            the message is one line naming the file, the problem and the remedy.
    """
    path = Path(path)
    remedy = "rerun the 04_evaluate stage to fit it"
    if not path.is_file():
        raise GuardUnavailable(f"{path}: no feature statistics; {remedy}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            arrays = {
                name: np.asarray(npz[name], np.float64) for name in ("means", "precision", "bank")
            }
    except Exception as exc:  # a truncated or foreign file: zipfile, KeyError, ValueError...
        raise GuardUnavailable(f"{path}: unreadable ({type(exc).__name__}); {remedy}") from None
    if meta.get("format") != FORMAT or meta.get("layer") != FEATURE_LAYER:
        raise GuardUnavailable(
            f"{path}: layout {meta.get('format')!r}, expected {FORMAT}; {remedy}"
        )
    if model_sha256 is not None and meta.get("model_sha256") != model_sha256:
        raise GuardUnavailable(
            f"{path}: stale, fitted on model {str(meta.get('model_sha256'))[:12]}..., not this "
            f"model {model_sha256[:12]}...; {remedy}"
        )
    scorer = FeatureScorer(meta["method"], k=int(meta["k"]), **arrays)
    return FeatureGuard(
        scorer,
        threshold=float(meta["threshold"]),
        keep=float(meta["keep"]),
        model_sha256=meta["model_sha256"],
        provenance=meta.get("provenance", {}),
    )
