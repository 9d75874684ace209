"""Class-activation explanations (Grad-CAM, Grad-CAM++, Score-CAM) and how well they localise.

Submodules:

- `methods`: the CAM methods (each gradient method supplies only its channel weights), the
  model-free baselines and the `METHODS` registry behind `explain(method, ...)`.
- `overlays`: heatmap overlays, the reference view `VizGradCAM` and `cam_gallery`.
- `metrics`: localisation metrics (pointing game, energy, Otsu IoU) and deletion/insertion
  faithfulness.
- `sanity`: the model-parameter randomisation check (Adebayo et al. 2018).
- `randomize`: re-initialising a model's learned weights for it, BatchNorm statistics
  re-estimated on the images.
- `erasure`: does the model use the lesion? Its answer with the lesion, or an equal area of
  brain elsewhere, inpainted away; and with the brain alone, or everything but the brain.
- `layers`: which feature map to explain: candidate layers, their localisation per tumour class
  and issue 18's localisation goals.
- `report`: localisation tables against tumour masks and their JSON summary.
- `_plumbing`: target-layer discovery, the cached cam model and its compiled steps, input checks
  and map normalisation.

Model contract: a functional Keras classifier taking float images 0..255 of shape (N, H, W, 3),
whose backbone layers are top-level layers, with a 4-D feature map, global pooling, Dense layers,
a linear `Dense(K, name=config.LOGITS_LAYER)` and a softmax output. Every map returned here is
float32 (N, H, W) in [0, 1] at the input resolution; masks are boolean (H, W).
"""

from brainmri.explain._plumbing import (
    CamFunctions,
    CamOptions,
    cam_functions,
    cam_model,
    find_target_layer,
    layer_output,
)
from brainmri.explain.erasure import (
    context_test,
    erasure_test,
    summarise_context,
    summarise_erasure,
)
from brainmri.explain.layers import (
    MIN_ENERGY_RATIO,
    MIN_POINTING,
    candidate_layers,
    meets_goals,
    score_layers,
)
from brainmri.explain.methods import (
    METHODS,
    REAL_METHODS,
    centre_prior,
    explain,
    gradcam,
    gradcam_plus_plus,
    gradcam_plus_plus_weights,
    gradcam_weights,
    method_label,
    random_map,
    scorecam,
)
from brainmri.explain.metrics import (
    deletion_insertion,
    energy_pointing,
    energy_ratio,
    otsu_iou,
    pointing_game,
)
from brainmri.explain.overlays import VizGradCAM, VizResult, cam_gallery, gradcam_overlays, overlay
from brainmri.explain.randomize import randomize_weights
from brainmri.explain.report import (
    BASELINES,
    METRICS,
    localisation_report,
    paired_pointing,
    summarise_localisation,
)
from brainmri.explain.sanity import (
    cascading_randomization,
    layer_groups,
    randomization_check,
    randomization_maps,
    rank_correlation,
)

__all__ = [
    "BASELINES",
    "METHODS",
    "METRICS",
    "MIN_ENERGY_RATIO",
    "MIN_POINTING",
    "REAL_METHODS",
    "CamOptions",
    "VizGradCAM",
    "VizResult",
    "cam_gallery",
    "candidate_layers",
    "CamFunctions",
    "cam_functions",
    "cam_model",
    "layer_output",
    "centre_prior",
    "context_test",
    "deletion_insertion",
    "energy_pointing",
    "energy_ratio",
    "erasure_test",
    "explain",
    "find_target_layer",
    "gradcam",
    "gradcam_overlays",
    "gradcam_plus_plus",
    "gradcam_plus_plus_weights",
    "gradcam_weights",
    "localisation_report",
    "meets_goals",
    "paired_pointing",
    "otsu_iou",
    "overlay",
    "pointing_game",
    "random_map",
    "cascading_randomization",
    "layer_groups",
    "method_label",
    "randomization_check",
    "randomization_maps",
    "randomize_weights",
    "rank_correlation",
    "scorecam",
    "score_layers",
    "summarise_context",
    "summarise_erasure",
    "summarise_localisation",
]
