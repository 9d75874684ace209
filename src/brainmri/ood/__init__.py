"""The out-of-distribution guard of predictions, in layers, re-exported.

1. ``gate``: cheap checks of a scan's own pixels (grey, not blank, one head of plausible size
   and shape on a dark background), bounds from the training images.
2. ``features``: the distance of the model's pooled backbone features from the training
   subset's (kNN, Sun et al. 2022; or Mahalanobis, Lee et al. 2018), threshold on validation,
   saved as ``ood.npz`` beside the model.
3. ``energy``: the energy score of the logits (Liu et al. 2020), the fallback without ood.npz.

``probes`` builds the foreign images it is measured on; ``report`` fits and measures it.
"""

from brainmri.ood.energy import energy_record, energy_score, ood_threshold
from brainmri.ood.features import (
    FeatureGuard,
    GuardUnavailable,
    extract,
    extract_files,
    load_guard,
    save_guard,
)
from brainmri.ood.gate import GateBounds
from brainmri.ood.probes import probe_set
from brainmri.ood.report import evaluate_guard, fit_guard, measure_guard

__all__ = [
    "FeatureGuard",
    "GateBounds",
    "GuardUnavailable",
    "energy_record",
    "energy_score",
    "evaluate_guard",
    "extract",
    "extract_files",
    "fit_guard",
    "load_guard",
    "measure_guard",
    "ood_threshold",
    "probe_set",
    "save_guard",
]
