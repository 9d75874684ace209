"""`brainmri serve` / `make serve`: a finished run's model in a local web page, for a user
without a terminal.

The page takes one or many scans (JPEG, PNG, BMP, TIFF, DICOM) and shows for each what
`brainmri predict` writes: the predicted class, the calibrated probabilities, the
out-of-distribution verdict with its reason, and the scan beside its Grad-CAM overlay (Grad-CAM or
Grad-CAM++, chosen on the page); the batch's predictions.csv downloads with predict's columns.
There is no second pipeline: every scan goes through :class:`brainmri.predict.Predictor`, which
runs predict's own batch function (``brainmri.data.scans.read_scan``, the crop, the model, the
OOD check), and the CSV is :func:`brainmri.predict.predictions_csv`.

Framework: tornado, because it is installed already (JupyterLab runs on it), parses multipart
uploads, streams a request body (so an upload over the cap is refused with a page, never held in
memory) and runs the model in a worker thread while the page stays responsive. Gradio, the field's
usual choice, would add a large dependency that fetches assets and sends analytics by default;
the standard library's http.server has no multipart parser since the cgi module's removal.

Local only: the server binds 127.0.0.1, answers only requests addressed to it by that name
(``localhost`` or ``127.0.0.1``: a DNS-rebinding page gets nothing), needs the page's form token
to upload (tornado's XSRF check), and its pages fetch nothing from elsewhere (no CDN, fonts or
analytics; a Content-Security-Policy forbids it). Uploads are written to a private temporary
folder only for as long as their prediction takes.
"""

from brainmri.app.http import HOST, bind, make_app, serve
from brainmri.app.service import METHODS, Batch, Service, ood_verdict

__all__ = [
    "HOST",
    "METHODS",
    "Batch",
    "Service",
    "bind",
    "make_app",
    "ood_verdict",
    "serve",
]
