"""The HTTP side of `brainmri serve`: tornado handlers (page, upload streamed under a cap, batch
pages, views, CSV), the local-only guards, binding 127.0.0.1 and serving until Ctrl-C."""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tornado.httpserver
import tornado.httputil
import tornado.netutil
import tornado.web

from brainmri.app.service import MAX_FILES, METHODS, Batch, Service, row_view
from brainmri.config import (
    CAM_TITLES,
    CLASS_NAMES,
    IMAGE_EXTENSIONS,
    SERVE_MAX_UPLOAD_MB,
    SERVE_PORT,
)
from brainmri.data.scans import DICOM_EXTENSIONS
from brainmri.predict import OOD_NOTE, guard_summary

HOST = "127.0.0.1"
"""The only address served: the page is for the machine it runs on."""
_DISCARD_LIMIT = 1 << 31
"""An upload over the cap is read to its end and dropped, so the browser gets the page saying so;
beyond this many bytes the connection is simply closed."""
_ACCEPT = ",".join((*IMAGE_EXTENSIONS, *DICOM_EXTENSIONS))
_CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


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
        rows = (
            [row_view(row, k, batch, method, info) for k, row in enumerate(batch.rows)]
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
                ood_guard=guard_summary(info),
                ood_note=OOD_NOTE,
                ood_checked=any(
                    layer is not None for layer in (info.ood_threshold, info.gate, info.guard)
                ),
                warnings=list(info.warnings),
                accept=_ACCEPT,
                methods=[(m, CAM_TITLES[m]) for m in METHODS],
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
