"""The explorer notebook in a real JupyterLab, driven by headless Chromium: run every cell on a
finished small run, select an image, and see the overlay render.

The server listens on 127.0.0.1 with a token, on a free port; its configuration, data, runtime
and IPython folders are temporary, so nothing of the user's Jupyter set-up is read or changed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from brainmri.config import EXPLORER

SCREENSHOT = "explorer.png"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout} s")


def _start_kernel(page, timeout: float) -> None:
    """Wait until the notebook's kernel is idle. JupyterLab starts the notebook's own kernel
    (Python (brainmri)) by itself, or, when it has not yet connected, asks which one to start:
    then the preselected one is chosen."""
    idle = page.get_by_text("Python (brainmri) | Idle")
    select = page.locator(".jp-Dialog").get_by_role("button", name="Select", exact=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.is_visible():
            select.click()
        elif idle.is_visible():
            return
        page.wait_for_timeout(250)
    raise TimeoutError(f"the kernel did not start within {timeout} s")


@pytest.fixture
def lab(phantom_run, project_root, tmp_path):
    """A JupyterLab server on the small run's project: (base URL, token, log file)."""
    from jupyter_client.kernelspec import KernelSpecManager

    if "brainmri" not in KernelSpecManager().find_kernel_specs():
        pytest.skip("no 'brainmri' Jupyter kernel in this environment (make setup installs it)")
    root, _profile = phantom_run
    notebooks = root / "notebooks"
    notebooks.mkdir(exist_ok=True)
    shutil.copy2(project_root / "notebooks" / f"{EXPLORER}.ipynb", notebooks)
    home = tmp_path / "jupyter"
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "BRAINMRI_ROOT": str(root),
        # the kernel imports this checkout's package, whatever the environment installed
        "PYTHONPATH": os.pathsep.join(
            [str(project_root / "src"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    # no "get notified about Jupyter news?" prompt: nothing is fetched, nothing covers the page
    news = home / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    token, port = secrets.token_hex(16), _free_port()
    log = tmp_path / "jupyterlab.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--allow-root",  # containers and CI run as root; a no-op otherwise
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={notebooks}",
                # offline: no update check, no extension listing fetched
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.extension_manager=readonly",
                f"--LabApp.workspaces_dir={home / 'workspaces'}",
                f"--LabApp.user_settings_dir={home / 'settings'}",
            ],
            cwd=notebooks,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(f"{base}/api/status?token={token}", process, timeout=60)
        yield base, token, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_the_explorer_runs_in_jupyterlab_and_shows_an_overlay(lab, tmp_path):
    from brainmri.reports import browser

    try:
        chromium = browser.find_chromium()
        from playwright.sync_api import sync_playwright
    except (browser.BrowserMissing, ImportError) as exc:
        pytest.skip(f"no browser: {exc}")
    base, token, log = lab
    shot = tmp_path / SCREENSHOT
    with sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=chromium, args=["--disable-gpu"])
        try:
            page = chrome.new_page(viewport={"width": 1600, "height": 1200})
            page.goto(f"{base}/lab/tree/{EXPLORER}.ipynb?token={token}", timeout=60_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            _start_kernel(page, timeout=60)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            listing = page.locator(".jp-OutputArea-output .widget-select select")
            listing.wait_for(timeout=90_000)
            page.wait_for_function(
                "document.querySelector('.widget-select select').options.length > 0",
                timeout=30_000,
            )
            listing.select_option(index=0)
            # the scan and its overlay: two images decoded, at a non-zero natural size
            page.wait_for_function(
                """() => [...document.querySelectorAll('.jp-OutputArea-output img')]
                        .filter(i => i.complete && i.naturalWidth > 0).length >= 2""",
                timeout=60_000,
            )
            sizes = page.evaluate(
                """() => [...document.querySelectorAll('.jp-OutputArea-output img')]
                        .map(i => [i.naturalWidth, i.naturalHeight])"""
            )
            text = page.locator(".jp-OutputArea-output").all_inner_texts()
            page.locator(".jp-OutputArea-output").last.screenshot(path=str(shot))  # the widget
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"))  # what the browser showed
            raise
        finally:
            chrome.close()
    assert [w for w, h in sizes if w > 0 and h > 0] == [256, 256], sizes
    shown = "\n".join(text)
    assert "run demo: 40 validation and test images" in shown
    assert "calibrated" in shown and "Grad-CAM of" in shown and "pointing game" in shown
    assert shot.stat().st_size > 10_000
    assert "Traceback" not in log.read_text()
