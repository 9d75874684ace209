"""brainmri.reports.browser: real headless Chromium, offline (skipped where none is installed)."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from brainmri.config import Paths
from brainmri.reports import browser


def _png_uri() -> str:
    image = np.full((10, 16, 3), 200, np.uint8)
    return "data:image/png;base64," + base64.b64encode(cv2.imencode(".png", image)[1]).decode()


def _page(body: str) -> str:
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{body}</body></html>"


def test_a_good_page_passes_and_is_photographed(tmp_path, chromium):
    paths = Paths(root=tmp_path, profile="demo")
    paths.run_dir.mkdir(parents=True)
    (paths.run_dir / "index.html").write_text(_page(f'<img alt="eval_roc" src="{_png_uri()}">'))
    (check,) = browser.check_reports(paths)
    assert check.ok, check
    assert check.images == [{"alt": "eval_roc", "src": _png_uri(), "decoded": True, "width": 16}]
    shot = cv2.imread(str(paths.screenshots_dir / "index.png"))
    assert shot.shape[1] == browser.SCREENSHOT_WIDTH


def test_broken_images_remote_requests_and_console_errors_are_caught(tmp_path, chromium):
    paths = Paths(root=tmp_path, profile="demo")
    paths.html_dir.mkdir(parents=True)
    body = (
        '<img alt="missing" src="../figures/nope.png">'
        '<img alt="corrupt" src="data:image/png;base64,iVBORw0KGgoAAAA">'
        '<script src="https://cdn.example.org/lib.js"></script>'
        "<script>undefinedFunction();</script>"
    )
    (paths.html_dir / "04_evaluate.html").write_text(_page(body))
    (check,) = browser.check_reports(paths, screenshots=False)
    assert not check.ok
    assert check.broken_images == ["missing", "corrupt"]
    assert check.requests == ["https://cdn.example.org/lib.js"]
    assert any("undefinedFunction" in e for e in check.console_errors)
    assert not paths.screenshots_dir.exists()


def test_a_missing_browser_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("BRAINMRI_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(browser.BrowserMissing, match="apt-get install chromium"):
        browser.find_chromium()
