"""Look at a run's HTML reports the way a reader does: in headless Chromium, offline.

Each page (index.html, model_card.html, html/NN_name.html) is opened from disk with every
network request refused and recorded. A page passes when every <img> decodes (naturalWidth > 0),
no request left the machine and the console logged no error. Screenshots at a fixed width go to
reports/<profile>/screenshots/, so a reviewer can see the reports without a browser.

Playwright (Python) drives the system's Chromium (Debian's ``chromium`` package, or any binary
given by ``$BRAINMRI_CHROMIUM``); Playwright's own browser download is never used, so this works
on a machine without internet access.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from brainmri.config import STAGES, Paths

SCREENSHOT_WIDTH = 1280
"""Viewport width of the screenshots, in CSS pixels (height: the first screen, 900 px)."""

SCREENSHOT_PAGES = ("index.html", "html/04_evaluate.html", "html/05_gradcam.html")
"""The pages a reviewer looks at first; each gets a screenshot of its first screen."""

# Chromium's own background traffic (updates, sync, safe browsing) would otherwise show up as
# refused requests on this offline machine; these switches keep it from starting.
_CHROMIUM_ARGS = [
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


class BrowserMissing(RuntimeError):
    """No Chromium (or no Playwright) on this machine."""


@dataclass
class PageCheck:
    """What the browser saw on one page."""

    page: str
    """The page, relative to the run folder (``index.html``, ``html/04_evaluate.html``)."""
    images: list[dict] = field(default_factory=list)
    """Every <img>: its alt text, whether it decoded and its natural width."""
    requests: list[str] = field(default_factory=list)
    """Requests that would have left the machine (refused)."""
    console_errors: list[str] = field(default_factory=list)
    """Console messages of type "error" and uncaught page errors."""
    screenshot: Path | None = None

    @property
    def broken_images(self) -> list[str]:
        return [img["alt"] or img["src"][:60] for img in self.images if not img["decoded"]]

    @property
    def ok(self) -> bool:
        return not (self.broken_images or self.requests or self.console_errors)


def find_chromium() -> str:
    """The Chromium binary to use: ``$BRAINMRI_CHROMIUM``, else chromium on the PATH.

    Raises:
        BrowserMissing: none is found; the message says what to install.
    """
    candidate = os.environ.get("BRAINMRI_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )
    if not candidate or not Path(candidate).exists():
        raise BrowserMissing(
            "no Chromium found: install Debian's 'chromium' package (apt-get install chromium) "
            "or set BRAINMRI_CHROMIUM to a Chromium binary"
        )
    return candidate


def report_pages(paths: Paths) -> list[str]:
    """The HTML pages of a run that exist, relative to its folder, index first."""
    pages = ["index.html", "model_card.html"] + [f"html/{stage}.html" for stage in STAGES]
    return [p for p in pages if (paths.run_dir / p).is_file()]


def check_reports(
    paths: Paths, *, pages: list[str] | None = None, screenshots: bool = True
) -> list[PageCheck]:
    """Open each report page in headless Chromium, offline, and record what it shows.

    Args:
        paths: the run's locations.
        pages: pages relative to the run folder; None checks every one (:func:`report_pages`).
        screenshots: save first-screen screenshots of the :data:`SCREENSHOT_PAGES` checked
            into ``paths.screenshots_dir``.

    Returns:
        One :class:`PageCheck` per page, in order.

    Raises:
        BrowserMissing: Playwright or Chromium is not installed.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BrowserMissing(
            "the report check needs Playwright: pip install playwright (its browser download "
            "is not needed; the system's Chromium is used)"
        ) from exc
    executable = find_chromium()
    pages = report_pages(paths) if pages is None else pages
    results = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=_CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": SCREENSHOT_WIDTH, "height": 900}, offline=True
            )
            for page_name in pages:
                results.append(_check_page(context, paths, page_name, screenshots))
        finally:
            browser.close()
    return results


def _check_page(context, paths: Paths, page_name: str, screenshots: bool) -> PageCheck:
    """Load one page with every non-file request refused, then inspect its images."""
    check = PageCheck(page=page_name)
    page = context.new_page()

    def route(request_route):
        url = request_route.request.url
        if url.startswith(("file:", "data:", "about:")):
            request_route.continue_()
        else:
            check.requests.append(url)
            request_route.abort()

    page.route("**/*", route)
    page.on(
        "console",
        lambda msg: check.console_errors.append(msg.text) if msg.type == "error" else None,
    )
    page.on("pageerror", lambda exc: check.console_errors.append(str(exc)))
    page.goto((paths.run_dir / page_name).resolve().as_uri(), wait_until="load")
    check.images = page.evaluate(
        """() => Array.from(document.images).map(img => ({
            alt: img.getAttribute('alt') || '',
            src: img.getAttribute('src') || '',
            decoded: img.complete && img.naturalWidth > 0,
            width: img.naturalWidth,
        }))"""
    )
    if screenshots and page_name in SCREENSHOT_PAGES:
        target = paths.screenshots_dir / (page_name.replace("html/", "").replace(".html", ".png"))
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target))
        check.screenshot = target
    page.close()
    return check
