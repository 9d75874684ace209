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

from __future__ import annotations

import asyncio
import errno
import re
import secrets
import signal
import socket
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tornado.httpserver
import tornado.httputil
import tornado.netutil
import tornado.web

from brainmri.config import CLASS_NAMES, IMAGE_EXTENSIONS, SERVE_MAX_UPLOAD_MB, SERVE_PORT
from brainmri.data.scans import DICOM_EXTENSIONS
from brainmri.predict import Predictor, predictions_csv, view_png
from brainmri.runs import RunInfo

HOST = "127.0.0.1"
"""The only address served: the page is for the machine it runs on."""
METHODS = ("gradcam", "gradcampp")
"""The explanations offered on the page, the first shown by default (predict's view). Score-CAM
is left out: one forward pass per feature-map channel takes minutes a scan on a CPU."""
METHOD_LABELS = {"gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++"}
MAX_FILES = 500
"""The most files one upload may hold."""
KEEP_BATCHES = 16
"""How many uploaded batches the server keeps for their page, views and CSV."""
KEEP_BYTES = 512 << 20
"""How much memory the kept batches may take (their model inputs, views and CSV); the newest
batch is kept whatever its size."""
_DISCARD_LIMIT = 1 << 31
"""An upload over the cap is read to its end and dropped, so the browser gets the page saying so;
beyond this many bytes the connection is simply closed."""
_ACCEPT = ",".join((*IMAGE_EXTENSIONS, *DICOM_EXTENSIONS))
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")
_CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass
class Batch:
    """One upload's results, kept for its page, its views and its CSV."""

    token: str
    rows: list[dict[str, Any]]
    images: dict[int, np.ndarray]
    views: dict[str, dict[int, bytes]] = field(default_factory=dict)
    """method -> row position -> PNG of the scan beside its overlay."""
    csv: str = ""

    @property
    def nbytes(self) -> int:
        """The memory its images, views and CSV take, roughly."""
        images = sum(image.nbytes for image in self.images.values())
        views = sum(len(png) for kind in self.views.values() for png in kind.values())
        return images + views + len(self.csv)


class Service:
    """The model and the uploaded batches of one serve process (no HTTP here: the handlers
    call it from one worker thread, and tests may call it directly).

    Args:
        model: the trained classifier.
        info: its run's records (:func:`brainmri.runs.run_info`).
        profile: the profile whose run it is (shown on the page).
        batch_size: images per forward pass.
        keep: how many batches to keep (the oldest is dropped first).
        keep_bytes: how much memory the kept batches may take (the newest is always kept).
    """

    def __init__(
        self,
        model: Any,
        info: RunInfo,
        *,
        profile: str,
        batch_size: int = 8,
        keep: int = KEEP_BATCHES,
        keep_bytes: int = KEEP_BYTES,
    ) -> None:
        self.predictor = Predictor(model, info, batch_size=batch_size)
        self.info = info
        self.profile = profile
        self.keep = keep
        self.keep_bytes = keep_bytes
        self.batches: OrderedDict[str, Batch] = OrderedDict()
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Trace the model and its explanations once, so that the first upload is quick."""
        self.predictor.warm_up(METHODS)

    def predict(self, uploads: Sequence[tuple[str, bytes]], *, method: str = METHODS[0]) -> Batch:
        """Predict uploaded files through predict's pipeline and keep the batch.

        Each file is written to a private temporary folder under a neutral name that keeps its
        suffix (which, with the content, decides how it is read), read from there by
        ``read_scan`` and deleted when the batch is done.

        Args:
            uploads: (file name as uploaded, bytes) pairs.
            method: the explanation whose views to make now (the others on demand).

        Returns:
            The kept :class:`Batch`, its rows named by the uploaded names.
        """
        names = [clean_name(name) for name, _ in uploads]
        with tempfile.TemporaryDirectory(prefix="brainmri-serve-") as folder:
            paths = []
            for k, (name, data) in enumerate(uploads):
                suffix = Path(name.replace("\\", "/")).suffix
                path = Path(folder) / f"{k:05d}{suffix if _SUFFIX.fullmatch(suffix) else ''}"
                path.write_bytes(data)
                paths.append(path)
            result = self.predictor.predict(paths, names=names)
        batch = Batch(secrets.token_urlsafe(12), result.rows, result.images)
        batch.csv = predictions_csv(result.rows)
        # predict's own Grad-CAM maps come with the prediction; another method's now, once
        batch.views["gradcam"] = {
            k: view_png(batch.images[k], cam) for k, cam in result.maps.items()
        }
        self.views(batch, method)
        with self._lock:
            self.batches[batch.token] = batch
            while len(self.batches) > self.keep or (
                len(self.batches) > 1
                and sum(kept.nbytes for kept in self.batches.values()) > self.keep_bytes
            ):
                self.batches.popitem(last=False)
        return batch

    def views(self, batch: Batch, method: str) -> dict[int, bytes]:
        """The batch's views by method, made on first use.

        Raises:
            ValueError: method is not one of METHODS.
        """
        if method not in METHODS:
            raise ValueError(f"method={method!r}: expected one of {', '.join(METHODS)}")
        if method not in batch.views and batch.images:
            order = sorted(batch.images)
            maps = self.predictor.explain(np.stack([batch.images[k] for k in order]), method)
            batch.views[method] = {
                k: view_png(batch.images[k], cam) for k, cam in zip(order, maps, strict=True)
            }
        return batch.views.setdefault(method, {})

    def get(self, token: str) -> Batch | None:
        """A kept batch, or None (never uploaded, or dropped for newer ones)."""
        with self._lock:
            return self.batches.get(token)


def clean_name(name: str) -> str:
    """An uploaded file's name as shown: its last path part, control characters dropped."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable())
    return base[:255] or "(unnamed)"


def ood_verdict(row: dict[str, Any]) -> dict[str, Any]:
    """The out-of-distribution verdict of a prediction row, read from whatever OOD fields it
    holds: any true boolean ``ood*`` field flags it, text ``ood*`` fields are its reasons and
    numbers its scores (``ood_flag`` and ``ood_score`` now; an input gate may add more).

    Returns:
        {"flagged": bool, "reasons": [str], "scores": [(name, value)]}
    """
    flagged, reasons, scores = False, [], []
    for key, value in row.items():
        if not key.startswith("ood"):
            continue
        if isinstance(value, (bool, np.bool_)):
            flagged = flagged or bool(value)
        elif isinstance(value, str):
            if value:
                reasons.append(value)
        elif isinstance(value, (int, float, np.number)) and np.isfinite(value):
            scores.append((key, float(value)))
    return {"flagged": flagged, "reasons": reasons, "scores": scores}


def _score_line(name: str, value: float, threshold: float | None) -> str:
    """One OOD score as shown: predict's energy score with the run's threshold, others as named."""
    if name == "ood_score":
        cut = "" if threshold is None else f" (flagged below {threshold:.3f})"
        return f"energy score {value:.3f}{cut}"
    return f"{name} {value:.3f}"


def _row_view(
    row: dict[str, Any], k: int, batch: Batch, method: str, threshold: float | None
) -> dict[str, Any]:
    ok = row["status"] == "ok"
    verdict = ood_verdict(row)
    return {
        "file": row["file"],
        "status": row["status"],
        "reason": row["reason"],
        "predicted": row["predicted"],
        "probabilities": [
            {"name": c, "value": float(row[f"p_{c}_calibrated"])} for c in CLASS_NAMES if ok
        ],
        "ood": verdict,
        "scores": [_score_line(name, value, threshold) for name, value in verdict["scores"]],
        "view": f"/batch/{batch.token}/views/{method}/{k}.png" if ok else None,
    }


# --- HTTP ------------------------------------------------------------------------------------


class _Handler(tornado.web.RequestHandler):
    """Common to every page: only this machine's names, no outside fetch, errors as pages."""

    def initialize(self, service: Service, executor: ThreadPoolExecutor, cap: int) -> None:
        self.service = service
        self.executor = executor
        self.cap = cap

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", _CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")

    def prepare(self) -> None:
        host = self.request.host_name
        if host not in ("127.0.0.1", "localhost"):  # a DNS-rebinding page names its own host
            raise tornado.web.HTTPError(403, reason="Forbidden host")

    def page(self, *, batch: Batch | None = None, method: str = METHODS[0], error: str = ""):
        """Render the one page: the upload form, the batch's results, an error line."""
        from brainmri.reports.render import render_template

        info = self.service.info
        threshold = info.ood_threshold
        rows = (
            [_row_view(row, k, batch, method, threshold) for k, row in enumerate(batch.rows)]
            if batch
            else []
        )
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(
            render_template(
                "serve_page.html.j2",
                profile=self.service.profile,
                model_path=str(info.model_path),
                model_sha256=info.model_sha256[:16],
                temperature=f"{info.temperature:.3f}",
                ood_threshold="none" if threshold is None else f"{threshold:.3f}",
                ood_checked=threshold is not None,
                warnings=list(info.warnings),
                accept=_ACCEPT,
                methods=[(m, METHOD_LABELS[m]) for m in METHODS],
                method=method,
                max_upload_mb=self.cap // (1 << 20),
                max_files=MAX_FILES,
                xsrf_token=self.xsrf_token.decode("ascii"),
                error=error,
                token=batch.token if batch else None,
                counts=_counts(batch.rows) if batch else "",
                rows=rows,
            )
        )

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if status_code == 403:
            line = (
                "this server answers only at 127.0.0.1 or localhost, and an upload needs the "
                "page's form token: open the address the server printed and upload again"
            )
        elif isinstance(exc, tornado.web.HTTPError) or exc is None:
            line = self._reason.lower()
        else:  # a bug or a resource the model ran out of: said in one line, logged in full
            problem = (str(exc).strip().splitlines() or [""])[0]
            line = f"the prediction failed ({type(exc).__name__}: {problem}); the server goes on"
        self.clear_header("Content-Disposition")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.page(error=f"error {status_code}: {line}")


def _counts(rows: list[dict[str, Any]]) -> str:
    ok = [row["predicted"] for row in rows if row["status"] == "ok"]
    parts = [f"{ok.count(c)} {c}" for c in CLASS_NAMES if ok.count(c)]
    skipped = len(rows) - len(ok)
    return ", ".join(parts + ([f"{skipped} skipped"] if skipped else [])) or "nothing"


class _Home(_Handler):
    def get(self) -> None:
        self.page()


@tornado.web.stream_request_body
class _Upload(_Handler):
    """POST /predict: the files of one upload, streamed; over the cap only counted."""

    def prepare(self) -> None:
        super().prepare()
        self.received = 0
        self.body = bytearray()
        self.request.connection.set_max_body_size(_DISCARD_LIMIT)

    def data_received(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received <= self.cap:
            self.body += chunk
        elif self.body:
            self.body = bytearray()  # over the cap: the rest is only counted

    async def post(self) -> None:
        if self.received > self.cap:
            self.set_status(413)
            self.page(
                error=f"upload refused: {self.received / (1 << 20):.1f} MB is more than the "
                f"limit of {self.cap // (1 << 20)} MB (brainmri serve --max-upload-mb); "
                "upload fewer files at a time"
            )
            return
        arguments: dict[str, list[bytes]] = {}
        files: dict[str, list[tornado.httputil.HTTPFile]] = {}
        config = tornado.httputil.ParseBodyConfig(
            multipart=tornado.httputil.ParseMultipartConfig(max_parts=MAX_FILES + 8)
        )
        try:
            tornado.httputil.parse_body_arguments(
                self.request.headers.get("Content-Type", ""),
                bytes(self.body),
                arguments,
                files,
                self.request.headers,
                config=config,
            )
        except tornado.httputil.HTTPInputError as exc:
            self.set_status(400)
            self.page(error=f"upload refused: {exc}; choose at most {MAX_FILES} files")
            return
        self.body = bytearray()
        method = (arguments.get("method") or [METHODS[0].encode()])[0].decode(errors="replace")
        if method not in METHODS:
            method = METHODS[0]
        uploads = [(f.filename, f.body) for f in files.get("scans", [])]
        if not uploads:
            self.set_status(400)
            self.page(error="no file in the upload: choose one or more scans")
            return
        loop = asyncio.get_running_loop()
        batch = await loop.run_in_executor(
            self.executor, lambda: self.service.predict(uploads, method=method)
        )
        self.redirect(f"/batch/{batch.token}?method={method}", status=303)


class _BatchHandler(_Handler):
    def batch(self, token: str) -> Batch:
        batch = self.service.get(token)
        if batch is None:
            self.set_status(404)
            self.page(
                error="this batch is no longer kept (the server keeps the last "
                f"{self.service.keep} uploads, until it stops): upload the scans again"
            )
            raise tornado.web.Finish()
        return batch

    def method(self) -> str:
        method = self.get_argument("method", METHODS[0])
        if method not in METHODS:
            raise tornado.web.HTTPError(400, reason=f"no method {method!r}")
        return method


class _BatchPage(_BatchHandler):
    async def get(self, token: str) -> None:
        batch, method = self.batch(token), self.method()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self.service.views, batch, method)
        self.page(batch=batch, method=method)


class _BatchCsv(_BatchHandler):
    def get(self, token: str) -> None:
        batch = self.batch(token)
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", 'attachment; filename="predictions.csv"')
        self.finish(batch.csv.encode("utf-8"))


class _BatchView(_BatchHandler):
    async def get(self, token: str, method: str, index: str) -> None:
        batch = self.batch(token)
        if method not in METHODS:
            raise tornado.web.HTTPError(404)
        views = batch.views.get(method)
        if views is None:  # made in the model's thread, once
            loop = asyncio.get_running_loop()
            views = await loop.run_in_executor(self.executor, self.service.views, batch, method)
        if int(index) not in views:
            raise tornado.web.HTTPError(404)
        self.set_header("Content-Type", "image/png")
        self.finish(views[int(index)])


def make_app(
    service: Service, *, executor: ThreadPoolExecutor, max_upload_mb: int = SERVE_MAX_UPLOAD_MB
) -> tornado.web.Application:
    """The tornado application of the page (see the module's docstring).

    Args:
        service: the model and its batches.
        executor: where the model runs (one worker: one prediction at a time).
        max_upload_mb: the cap on one upload request, in MiB.

    Returns:
        The application; :func:`serve` puts it on a socket.
    """
    options = {"service": service, "executor": executor, "cap": max_upload_mb << 20}
    token = r"([A-Za-z0-9_-]+)"
    return tornado.web.Application(
        [
            (r"/", _Home, options),
            (r"/predict", _Upload, options),
            (rf"/batch/{token}", _BatchPage, options),
            (rf"/batch/{token}/predictions\.csv", _BatchCsv, options),
            (rf"/batch/{token}/views/(\w+)/(\d+)\.png", _BatchView, options),
        ],
        xsrf_cookies=True,
        default_handler_class=_Missing,
        default_handler_args=options,
    )


class _Missing(_Handler):
    def prepare(self) -> None:
        super().prepare()
        raise tornado.web.HTTPError(404)


def bind(port: int) -> tuple[list[socket.socket], str]:
    """Sockets on 127.0.0.1:port, or on a free port when port is 0 or busy.

    Returns:
        The sockets and a note for the user ("" unless a busy port was replaced).
    """
    try:
        return tornado.netutil.bind_sockets(port, address=HOST), ""
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or port == 0:
            raise
    sockets = tornado.netutil.bind_sockets(0, address=HOST)
    return sockets, f"port {port} is busy; using port {sockets[0].getsockname()[1]} instead"


def serve(
    service: Service,
    *,
    port: int = SERVE_PORT,
    max_upload_mb: int = SERVE_MAX_UPLOAD_MB,
    echo: Callable[[str], None] = print,
) -> int:
    """Serve the page on 127.0.0.1 until Ctrl-C (SIGINT) or SIGTERM, then stop cleanly.

    Args:
        service: the model and its batches (warmed up in the model's thread meanwhile).
        port: the port; 0 or a busy one: a free port, printed.
        max_upload_mb: the cap on one upload request, in MiB.
        echo: where the address and the closing line go.

    Returns:
        0 (the exit status).
    """
    sockets, note = bind(port)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="brainmri-serve")
    app = make_app(service, executor=executor, max_upload_mb=max_upload_mb)
    # The model traces itself in its thread while the page is already up (a third of the start
    # on the cpu model); an upload made meanwhile waits its turn behind it.
    warming = executor.submit(service.warm_up)
    warming.add_done_callback(
        lambda done: done.exception() and echo(f"warning: warm-up failed: {done.exception()}")
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # the server's own cap sits above the upload cap: the upload handler streams and
        # refuses with a page; other requests never need a body
        server = tornado.httpserver.HTTPServer(app, max_body_size=max_upload_mb << 20)
        server.add_sockets(sockets)
        if note:
            echo(note)
        bound = sockets[0].getsockname()[1]
        echo(f"serving the {service.profile} model at http://{HOST}:{bound}/ (this machine only)")
        echo("open that address in a browser; Ctrl-C stops the server")
        await stop.wait()
        server.stop()
        await server.close_all_connections()

    try:
        asyncio.run(run())
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    echo("server stopped")
    return 0
