"""Executed notebooks for readers: TensorFlow's start-up noise dropped, self-contained HTML."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

from brainmri.config import STAGES, Paths
from brainmri.io import atomic_write

TEMPLATES = Path(__file__).parent / "templates"
"""nbconvert templates of the reports (brainmri_report: the lab template with figure alt texts)."""

# Start-up lines of TensorFlow's C++ runtime that say nothing about the run: absl's notice that it
# logs to stderr before it is initialised, the CUDA probes of TensorFlow's GPU-enabled wheel on a
# machine without a GPU, and the CPU-instruction notice. They are written while TensorFlow is
# imported, before any setting of ours can act; TF_CPP_MIN_LOG_LEVEL=3 would hide the cuInit line,
# but also every real error of the C++ runtime, and none of them hides the first two. So they are
# dropped from the executed notebook instead, one known line at a time; every other stderr line
# (Python warnings, real runtime errors) stays.
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IWE]\d{4} [\d:.]+ +\d+ (cudart_stub|cuda_platform|cuda_executor|cuda_dnn|cuda_fft|cuda_blas"
    r"|cpu_feature_guard)\.cc:\d+\]"
    r"|To enable the following instructions: .* rebuild TensorFlow)"
)


def drop_library_noise(text: str) -> str:
    """Remove TensorFlow's known start-up lines (see ``_NOISE``) from a stream's text."""
    return "".join(line for line in text.splitlines(keepends=True) if not _NOISE.match(line))


def clean_notebook_outputs(notebook: Path) -> Path:
    """Drop TensorFlow's start-up noise from an executed notebook's stderr outputs, in place.

    Args:
        notebook: an executed notebook file.

    Returns:
        The notebook's path; the file is rewritten atomically, and only when something changed.
    """
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    changed = False
    for cell in nb.cells:
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                text = drop_library_noise(output["text"])
                changed |= text != output["text"]
                if not text:
                    continue
                output["text"] = text
            kept.append(output)
        if "outputs" in cell:
            cell["outputs"] = kept
    if changed:
        atomic_write(notebook, nbformat.writes(nb))
    return notebook


def embedded_images(page: str) -> list[tuple[str, bytes]]:
    """The PNG figures embedded in an HTML report, as (alt text, PNG bytes) in page order.

    Args:
        page: the HTML text of a report.

    Returns:
        One pair per <img> whose source is an embedded PNG (a data URI); other images are
        left out.
    """
    found: list[tuple[str, bytes]] = []

    class _Images(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            values = dict(attrs)
            src = values.get("src") or ""
            if tag == "img" and src.startswith("data:image/png;base64,"):
                found.append((values.get("alt") or "", base64.b64decode(src.split(",", 1)[1])))

    _Images().feed(page)
    return found


def export_notebook_html(notebook: Path, target: Path, hide_code: bool = True) -> Path:
    """Render one executed notebook to a self-contained HTML file (code hidden by default).

    Args:
        notebook: the executed notebook.
        target: the HTML file to write (atomically).
        hide_code: leave the code cells out, as a report for readers does.

    Returns:
        The target path.
    """
    import nbformat
    from nbconvert import HTMLExporter

    # The lab template, plus figure names as <img> alt texts (templates/brainmri_report).
    exporter = HTMLExporter(
        template_name="brainmri_report", extra_template_basedirs=[str(TEMPLATES)]
    )
    exporter.exclude_input = hide_code
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    # Figures are embedded as data URIs by nbconvert; MathJax is the one remote script of the
    # template and none of our reports uses LaTeX, so it is dropped to keep the page offline.
    exporter.mathjax_url = ""
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    body = _strip_remote_scripts(body)
    return atomic_write(target, body)


def _strip_remote_scripts(body: str) -> str:
    """Remove <script src="http..."> tags (MathJax, require.js) that need the network."""
    import re

    return re.sub(r'<script[^>]+src="https?://[^"]*"[^>]*>\s*</script>', "", body)


def export_html(
    paths: Paths, stages: tuple[str, ...] | list[str] = STAGES, hide_code: bool = True
) -> list[Path]:
    """Render executed notebooks whose HTML is missing or older than the notebook."""
    written = []
    for stage in STAGES:
        nb = paths.executed(stage)
        target = paths.html_dir / f"{stage}.html"
        if not nb.is_file():
            continue
        stale = not target.is_file() or target.stat().st_mtime < nb.stat().st_mtime
        if stage in stages or stale:
            written.append(export_notebook_html(nb, target, hide_code))
    return written
