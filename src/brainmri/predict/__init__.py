"""Predict new scans (read by `brainmri.data.scans`): calibrated probabilities, the
out-of-distribution flag (`brainmri.ood`: the input gate, then the feature distance or the energy
score), Grad-CAM views and a light HTML page linking them; and
the SavedModel export.

`predict_scans` is the API (JupyterLab); `brainmri predict` / `make predict` call it. Every input
goes through the pipeline's one image normalisation (`data.load_image`); DICOM first through
pydicom's modality and VOI (window) LUTs. A file that cannot be read is listed with its reason and
the run goes on. Results go into a new folder, never over a finished run; the rows are written
batch by batch, so an interrupted run keeps what it finished.

Modules: ``batches`` (reading, predicting, scoring and explaining scans; ``Predictor`` for a
few at a time in memory), ``outputs`` (the output folder, its CSV, views, JSON and page),
``export`` (the SavedModel).
"""

from brainmri.predict.batches import (
    Predicted,
    Predictor,
    clean_name,
    predict_scans,
    score_logits,
)
from brainmri.predict.export import export_savedmodel
from brainmri.predict.outputs import (
    COLUMNS,
    INCOMPLETE,
    LOCK,
    OOD_NOTE,
    OUTPUTS,
    Interrupted,
    guard_summary,
    new_output_folder,
    predictions_csv,
    view_png,
)

__all__ = [
    "COLUMNS",
    "INCOMPLETE",
    "LOCK",
    "OOD_NOTE",
    "OUTPUTS",
    "Interrupted",
    "Predicted",
    "Predictor",
    "clean_name",
    "export_savedmodel",
    "guard_summary",
    "new_output_folder",
    "predict_scans",
    "predictions_csv",
    "score_logits",
    "view_png",
]
