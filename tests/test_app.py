"""brainmri.app (`brainmri serve`): the upload page's handlers over real HTTP against
predict_scans on the same files, bad uploads, the upload cap, the local-only guards; and, slow,
the real server in headless Chromium."""

from __future__ import annotations

import asyncio
import csv
import html
import http.cookiejar
import io
import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import cv2
import keras
import numpy as np
import pytest
from markupsafe import escape

from brainmri import app, cli, config, ood, predict, runs
from brainmri import model as mdl
from brainmri.io import file_sha256

ROOT = Path(__file__).resolve().parents[1]
CAP_MB = 1  # the test server's upload cap


# --- helpers -------------------------------------------------------------------------------


def _png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares width x height (a decompression bomb's header)."""
    small = cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()
    chunk = b"IHDR" + struct.pack(">II", width, height) + small[24:29]
    crc = struct.pack(">I", zlib.crc32(chunk))
    return small[:8] + struct.pack(">I", 13) + chunk + crc + small[33:]


def _dicom(path: Path, pixels: np.ndarray) -> Path:
    """A grey single-frame DICOM slice (pydicom)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


class Client:
    """A browser's part in a test: cookies, the page's form token, multipart uploads."""

    def __init__(self, base: str, host: str | None = None) -> None:
        self.base = base
        self.host = host
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def request(self, path: str, data: bytes | None = None, headers: dict | None = None):
        """(status, headers, body bytes, final URL) of a request; 4xx/5xx are returned too."""
        headers = dict(headers or {})
        if self.host:
            headers["Host"] = self.host
        req = urllib.request.Request(self.base + path, data=data, headers=headers)
        try:
            with self.opener.open(req, timeout=120) as response:
                return response.status, response.headers, response.read(), response.url
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read(), exc.url

    def upload(self, files: list[tuple[str, bytes]], method: str = "gradcam"):
        """Open the page, then post the files with its form token, as the form does."""
        _, _, page, _ = self.request("/")
        action = re.search(r'action="([^"]+)"', page.decode()).group(1).replace("&amp;", "&")
        boundary = "brainmri" + secrets.token_hex(8)
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="scans"; filename="{name}"'
            f"\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
            for name, data in files
        ]
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="method"\r\n\r\n'
            f"{method}\r\n".encode()
        )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        kind = f"multipart/form-data; boundary={boundary}"
        return self.request(action, body, {"Content-Type": kind})


def shown_rows(page: bytes) -> dict[str, dict[str, str]]:
    """file -> the data-* attributes of its result row."""
    rows = {}
    for tag in re.findall(r'<tr class="scan"[^>]*>', page.decode()):
        attrs = {k: html.unescape(v) for k, v in re.findall(r'data-(\w+)="([^"]*)"', tag)}
        rows[attrs["file"]] = attrs
    return rows


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.fixture(scope="module")
def served(tiny_model):
    """The app on a free 127.0.0.1 port, in a thread: (base URL, service, model, info)."""
    model = mdl.load_model(tiny_model)
    info = runs.RunInfo(tiny_model, file_sha256(tiny_model), temperature=2.0, ood_threshold=0.0)
    service = app.Service(model, info, profile="smoke", batch_size=4, keep=2)
    executor = ThreadPoolExecutor(max_workers=1)
    application = app.make_app(service, executor=executor, max_upload_mb=CAP_MB)
    sockets, _ = app.bind(0)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        import tornado.httpserver

        asyncio.set_event_loop(loop)
        server = tornado.httpserver.HTTPServer(application, max_body_size=CAP_MB << 20)
        server.add_sockets(sockets)
        started.set()
        loop.run_forever()
        server.stop()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}", service, model, info
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    executor.shutdown()


def _predict(files: list[Path], model, info, out: Path):
    """predict_scans' table on the files, and its predictions.csv rows."""
    table = predict.predict_scans(files, model, info, out, echo=lambda _: None, progress=False)
    return table, read_csv((out / "predictions.csv").read_bytes().decode("utf-8"))


# --- the handlers, over HTTP ------------------------------------------------------------------


def test_an_upload_shows_and_downloads_what_predict_scans_gives(tmp_path, served, phantom_set):
    base, _, model, info = served
    folder = tmp_path / "scans"
    folder.mkdir()
    for image in sorted((phantom_set / "Testing" / "glioma").glob("*.jpg"))[:2]:
        (folder / image.name).write_bytes(image.read_bytes())
    cv2.imwrite(str(folder / "slice.png"), cv2.imread(str(image)))
    ramp = np.tile(np.arange(0, 4000, 62.5), (64, 1))
    _dicom(folder / "slice.dcm", ramp)
    files = sorted(folder.iterdir())
    client = Client(base)
    status, _, page, url = client.upload([(f.name, f.read_bytes()) for f in files])
    assert status == 200 and "/batch/" in url  # the upload redirected to its results
    table, expected = _predict(files, model, info, tmp_path / "out")
    rows = shown_rows(page)
    assert sorted(rows) == [f.name for f in files]
    for _, row in table.iterrows():
        shown = rows[Path(row["file"]).name]
        assert shown["status"] == "ok" and shown["predicted"] == row["predicted"]
        assert shown["ood"] == str(bool(row["ood_flag"])).lower()
        for c in config.CLASS_NAMES:  # the calibrated probabilities, as predict's page rounds
            assert f"<td>{c}</td>" in page.decode()
            assert f"{row[f'p_{c}_calibrated']:.3f}" in page.decode()
    token = url.split("/batch/")[1].split("?")[0]
    status, headers, body, _ = client.request(f"/batch/{token}/predictions.csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert "attachment" in headers["Content-Disposition"]
    text = body.decode("utf-8")
    assert text.split("\r\n")[0].split(",") == predict.COLUMNS
    got = read_csv(text)
    assert [r["file"] for r in got] == [f.name for f in files]  # named as uploaded
    for mine, theirs in zip(got, expected, strict=True):
        for column in predict.COLUMNS:
            if column.startswith(("p_", "ood_score")):
                assert float(mine[column]) == pytest.approx(float(theirs[column]), abs=1e-5)
            elif column != "file":
                assert mine[column] == theirs[column], column


def test_the_views_are_predicts_and_each_method_is_offered(tmp_path, served, phantom_set):
    base, _, model, info = served
    image = sorted((phantom_set / "Testing" / "pituitary").glob("*.jpg"))[0]
    client = Client(base)
    _, _, page, url = client.upload([(image.name, image.read_bytes())])
    token = url.split("/batch/")[1].split("?")[0]
    _predict([image], model, info, tmp_path / "out")
    theirs = cv2.imread(str(tmp_path / "out" / "views" / "00000.png"))
    views = {}
    for method in app.METHODS:
        status, headers, body, _ = client.request(f"/batch/{token}/views/{method}/0.png")
        assert status == 200 and headers["Content-Type"] == "image/png"
        views[method] = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        _, _, page, _ = client.request(f"/batch/{token}?method={method}")
        assert f"/batch/{token}/views/{method}/0.png" in page.decode()
    # Grad-CAM is predict's own view (its batch differs, so allow a grey level of rounding)
    assert views["gradcam"].shape == theirs.shape == (32, 64, 3)
    assert np.abs(views["gradcam"].astype(int) - theirs).max() <= 1
    status, _, page, _ = client.request(f"/batch/{token}?method=scorecam")
    assert status == 400 and b"no method" in page


def test_bad_uploads_get_predicts_reasons_and_the_server_goes_on(tmp_path, served, phantom_set):
    base, _, model, info = served
    bad = {
        "notes.txt": b"not an image",
        "broken.jpg": b"\xff\xd8\xff\xe0 truncated",
        "bomb.png": _png_declaring(30000, 30000),
        "=HYPERLINK(1).png": b"no image either",
        "<img src=x onerror=alert(1)>.txt": b"",
    }
    folder = tmp_path / "bad"
    folder.mkdir()
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    client = Client(base)
    status, _, page, url = client.upload(list(bad.items()))
    assert status == 200
    table, _ = _predict(sorted(folder.iterdir()), model, info, tmp_path / "out")
    text = page.decode()
    for _, row in table.iterrows():
        assert row["status"] == "skipped"
        assert shown_rows(page)[Path(row["file"]).name]["status"] == "skipped"
        assert str(escape(f"not predicted: {row['reason']}")) in text
    assert "too large" in text and "<img src=x" not in text  # names are escaped
    token = url.split("/batch/")[1].split("?")[0]
    _, _, body, _ = client.request(f"/batch/{token}/predictions.csv")
    assert "'=HYPERLINK(1).png" in body.decode()  # neutralised as predict does
    good = sorted((phantom_set / "Testing" / "notumor").glob("*.jpg"))[0]
    status, _, page, _ = client.upload([(good.name, good.read_bytes())])
    assert status == 200 and shown_rows(page)[good.name]["status"] == "ok"


def test_an_upload_over_the_cap_is_refused_with_a_page(served):
    base = served[0]
    client = Client(base)
    status, _, page, _ = client.upload([("big.jpg", bytes(CAP_MB << 20))])
    assert status == 413
    assert f"more than the limit of {CAP_MB} MB" in page.decode()
    status, _, page, _ = client.upload([])
    assert status == 400 and b"no file in the upload" in page
    assert client.request("/")[0] == 200  # and the server goes on


def test_a_failing_prediction_is_one_line_on_the_page_and_the_server_goes_on(
    served, phantom_set, monkeypatch
):
    base, service, _, _ = served
    image = sorted((phantom_set / "Testing" / "glioma").glob("*.jpg"))[0]

    def fail(*args, **kwargs):
        raise MemoryError("out of memory\nsecond line")

    monkeypatch.setattr(service.predictor, "predict", fail)
    client = Client(base)
    status, _, page, _ = client.upload([(image.name, image.read_bytes())])
    assert status == 500
    line = "the prediction failed (MemoryError: out of memory); the server goes on"
    assert line in page.decode()
    monkeypatch.undo()
    status, _, page, _ = client.upload([(image.name, image.read_bytes())])
    assert status == 200 and shown_rows(page)[image.name]["status"] == "ok"


def test_the_page_is_local_only_and_fetches_nothing_from_elsewhere(served):
    base = served[0]
    status, headers, page, _ = Client(base).request("/")
    assert status == 200
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert not re.search(rb"""(src|href|action)=["'](https?:)?//""", page)
    assert b"<script" not in page and b"not a medical device" in page
    # what the OOD flag can and cannot catch, in predict's words, and the layers in force
    assert predict.OOD_NOTE.encode() in page and b"out-of-distribution guard: " in page
    # a page served under another name (DNS rebinding) gets nothing; an upload needs the token
    assert Client(base, host="attacker.example").request("/")[0] == 403
    status, _, _, _ = Client(base).request("/predict", b"x", {"Content-Type": "text/plain"})
    assert status == 403


def test_only_the_last_batches_are_kept(served, phantom_set, monkeypatch):
    base, service, _, _ = served
    image = sorted((phantom_set / "Testing" / "glioma").glob("*.jpg"))[0]
    client = Client(base)
    tokens = []
    for _ in range(service.keep + 1):
        _, _, _, url = client.upload([(image.name, image.read_bytes())])
        tokens.append(url.split("/batch/")[1].split("?")[0])
    status, _, page, _ = client.request(f"/batch/{tokens[0]}")
    assert status == 404 and b"upload the scans again" in page
    assert client.request(f"/batch/{tokens[-1]}/predictions.csv")[0] == 200
    monkeypatch.setattr(service, "keep_bytes", 1)  # memory, too: only the newest stays
    _, _, _, url = client.upload([(image.name, image.read_bytes())])
    assert list(service.batches) == [url.split("/batch/")[1].split("?")[0]]


# --- pieces -----------------------------------------------------------------------------------


def test_the_ood_verdict_is_predicts_own_with_the_threshold_of_the_layer_in_force():
    """The page repeats the row's verdict (flag, layer, reason) and gives each score with the
    threshold of the layer that uses it: the energy score's only when no feature guard is in
    force (where the guard is, the energy score flags nothing)."""
    path = Path("/models/m.keras")
    energy_only = runs.RunInfo(path, "0" * 64, ood_threshold=1.5)
    row = {"ood_flag": False, "ood_layer": "", "ood_reason": "", "ood_score": 2.5,
           "ood_distance": float("nan")}  # fmt: skip
    assert app.ood_verdict(row, energy_only) == {
        "flagged": False,
        "reason": "",
        "scores": ["energy score 2.500 (flagged below 1.500)"],
    }
    guard = SimpleNamespace(threshold=0.75, scorer=SimpleNamespace(method="knn"))
    guarded = runs.RunInfo(path, "0" * 64, ood_threshold=1.5, guard=guard)
    flagged = {"ood_flag": True, "ood_layer": "features", "ood_score": 0.4, "ood_distance": 0.91,
               "ood_reason": "feature distance 0.910 above 0.750"}  # fmt: skip
    assert app.ood_verdict(flagged, guarded) == {
        "flagged": True,
        "reason": "features: feature distance 0.910 above 0.750",
        "scores": ["feature distance 0.910 (flagged above 0.750)", "energy score 0.400"],
    }
    gated = {**flagged, "ood_layer": "gate", "ood_reason": "a colour photograph",
             "ood_distance": float("nan"), "ood_score": float("nan")}  # fmt: skip
    assert app.ood_verdict(gated, guarded) == {
        "flagged": True,
        "reason": "gate: a colour photograph",
        "scores": [],
    }


def test_a_busy_port_is_replaced_by_a_free_one():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sockets, note = app.bind(port)
        try:
            got = sockets[0].getsockname()
            assert got[0] == "127.0.0.1" and got[1] != port
            assert note == f"port {port} is busy; using port {got[1]} instead"
        finally:
            for s in sockets:
                s.close()


def _project(root: Path, profile: str = "demo") -> Path:
    (root / "params").mkdir(parents=True)
    (root / "params" / "default.yaml").touch()
    run = root / "reports" / profile
    run.mkdir(parents=True)
    return run


def test_the_cli_names_a_missing_run_and_refuses_a_tampered_model_as_predict_does(tmp_path, capsys):
    root = tmp_path / "repo"
    run = _project(root)
    assert cli.main(["--root", str(root), "serve", "--profile", "demo"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {run / 'model.keras'} does not exist; train it first with `make all PROFILE=demo`"
    )
    inputs = keras.Input((8, 8, 3))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(run / "model.keras")
    assert cli.main(["--root", str(root), "serve", "--profile", "demo"]) == 1
    served = capsys.readouterr().err.strip()
    cv2.imwrite(str(tmp_path / "scan.png"), np.zeros((8, 8), np.uint8))
    argv = ["--root", str(root), "predict", str(tmp_path / "scan.png"), "--profile", "demo"]
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 1
    assert served == capsys.readouterr().err.strip()  # the same one line
    assert served.startswith("error: ") and "lambda" in served.lower()
    assert cli.main(["--root", str(root), "serve", "--port", "70000"]) == 2


# --- end to end: the real server in headless Chromium -----------------------------------------


def _trained_run(root: Path, trained) -> Path:
    """reports/demo/ of a project at root holding the trained phantom model, its record, an
    OOD threshold chosen on its training images and the input gate fitted on them, as a
    finished run leaves them."""
    model, data_root, _, _ = trained
    run = _project(root)
    model.save(run / "model.keras")
    (run / "run.json").write_text(
        json.dumps(
            {"model_sha256": file_sha256(run / "model.keras"), "params": {"crop_to_brain": False}}
        )
    )
    files = sorted((data_root / "Training").glob("*/*.jpg"))[::5]
    logits, _ = mdl.predict_files(model, files)
    threshold = ood.ood_threshold(logits, keep=0.95)
    from brainmri.data.scans import read_pixels
    from brainmri.ood import gate

    bounds = gate.fit_gate(gate.measure(read_pixels(f)) for f in files)
    guard = {"gate": bounds.to_json()}
    evaluate = {
        "temperature": 1.5,
        "ood": {"threshold": threshold, "score": "energy", "guard": guard},
    }
    (run / "metrics.json").write_text(json.dumps({"evaluate": evaluate}))
    return run


def _start(root: Path) -> tuple[subprocess.Popen, str, float]:
    """`brainmri serve` on a free port: the process, its address, seconds until it printed it."""
    paths = [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    argv = [sys.executable, "-m", "brainmri.cli", "--root", str(root), "serve", "--port", "0"]
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    watchdog = threading.Timer(300, proc.kill)  # a server that never says so is stopped
    watchdog.start()
    lines = []
    for line in proc.stdout:
        lines.append(line)
        found = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        if found:
            watchdog.cancel()
            return proc, found.group(1), time.perf_counter() - started
    watchdog.cancel()
    raise AssertionError(f"brainmri serve did not start: {''.join(lines)}")


@pytest.mark.slow
def test_the_served_page_in_chromium_shows_what_predict_scans_gives(
    tmp_path, trained_phantom, chromium
):
    from matplotlib import cbook
    from playwright.sync_api import sync_playwright

    root = tmp_path / "repo"
    run = _trained_run(root, trained_phantom)
    testing = ROOT.parent / "shared" / "data" / "brain-tumor-mri-dataset" / "Testing"
    if (testing / "glioma").is_dir():
        scan = sorted((testing / "glioma").glob("*.jpg"))[0]
    else:
        scan = sorted((trained_phantom[1] / "Testing" / "glioma").glob("*.jpg"))[0]
    photo = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    model = mdl.load_model(run / "model.keras")
    info = runs.run_info(run / "model.keras", run)
    table, expected = _predict([scan, photo], model, info, tmp_path / "predicted")
    by_name = {Path(f).name: row for f, row in table.set_index("file").iterrows()}

    proc, url, seconds = _start(root)
    print(f"brainmri serve: ready in {seconds:.1f} s")  # start-up time, for the report only
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            requests, errors = [], []
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.set_input_files('input[name="scans"]', [str(scan), str(photo)])
            page.click('button[type="submit"]')
            page.wait_for_selector("#results", timeout=120_000)
            shown = page.eval_on_selector_all(
                "tr.scan", "rows => rows.map(r => Object.assign({}, r.dataset))"
            )
            shown = {row["file"]: row for row in shown}
            assert shown[scan.name]["predicted"] == by_name[scan.name]["predicted"]
            flagged = shown[photo.name]["ood"] == "true"
            assert flagged == bool(by_name[photo.name]["ood_flag"])
            assert flagged  # a colour photograph: predict's input gate refuses it
            decoded = page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)"
            )
            assert decoded == [True, True]
            (run / "screenshots").mkdir()
            page.screenshot(path=str(run / "screenshots" / "serve.png"), full_page=True)
            with page.expect_download() as download:
                page.click("#csv")
            got = read_csv(Path(download.value.path()).read_bytes().decode("utf-8"))
            assert list(got[0]) == predict.COLUMNS
            assert [r["predicted"] for r in got] == [r["predicted"] for r in expected]
            page.click('a[href*="method=gradcampp"]')
            page.wait_for_selector('img[src*="/gradcampp/"]')
            browser.close()
        assert requests and all(r.startswith((url, "data:")) for r in requests), requests
        assert errors == []
        assert cv2.imread(str(run / "screenshots" / "serve.png")).shape[1] == 1280
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "server stopped" in out
