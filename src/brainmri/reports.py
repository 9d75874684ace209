"""Publishing: executed notebooks to self-contained HTML, and the run's index.html."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from brainmri.config import PIPELINE, STAGES, Paths
from brainmri.io import atomic_write, read_json


def export_notebook_html(notebook: Path, target: Path, hide_code: bool = True) -> Path:
    """Render one executed notebook to a self-contained HTML file (code hidden by default)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
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


def _index_headline(metrics: dict[str, Any]) -> dict[str, str]:
    """Profile, data source, model, accuracies, date and commit for the index page."""
    data = metrics.get("data", {})
    train = metrics.get("train", {})
    evaluate = metrics.get("evaluate", {})

    def acc(split: str) -> str:
        summary = evaluate.get(split, {}).get("summary", {})
        value, n = summary.get("accuracy"), summary.get("n")
        return f"{value:.4f} (n={n})" if isinstance(value, int | float) else "not evaluated"

    git = train.get("git", {})
    commit = git.get("commit") or "unknown"
    if git.get("dirty"):
        commit += " (with uncommitted changes)"
    return {
        "Profile": str(metrics.get("profile", "?")),
        "Data source": f"{data.get('source', '?')}: {data.get('detail', '')}",
        "Model": str(train.get("model", "not trained")),
        "Test accuracy (official Testing)": acc("official"),
        "Test accuracy (de-duplicated Testing)": acc("dedup"),
        "Date": str(train.get("finished") or metrics.get("generated", "")),
        "Git commit": commit,
    }


def write_index(paths: Paths) -> Path:
    """Write reports/<profile>/index.html linking every notebook report and figure."""
    metrics = read_json(paths.metrics) if paths.metrics.is_file() else {}
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in _index_headline(metrics).items()
    )
    items = []
    for stage in PIPELINE:
        name, title = stage.name, html.escape(stage.title)
        page = paths.html_dir / f"{name}.html"
        failed = paths.failed_dir / f"{name}.ipynb"
        if failed.is_file():  # a failure is newer than any earlier page of the stage
            link = f'{title} · <a href="failed/{name}.ipynb">FAILED: partial notebook</a>'
        elif page.is_file():
            link = f'<a href="html/{name}.html">{title}</a>'
            link += f' · <a href="{name}.ipynb">notebook</a>'
        else:
            link = f"{title} · not run"
        items.append(f"<li><b>{name}</b> {link}</li>")
    figures = sorted(paths.figures_dir.glob("*.png")) if paths.figures_dir.is_dir() else []
    thumbs = "".join(
        f'<figure><a href="figures/{f.name}"><img src="figures/{f.name}" alt="{f.stem}"></a>'
        f"<figcaption>{html.escape(f.stem)}</figcaption></figure>"
        for f in figures
    )
    extras = [
        file
        for file in ("metrics.json", "history.csv", "manifest.csv", "run.json", "model.keras")
        if (paths.run_dir / file).is_file()
    ]
    files = " · ".join(f'<a href="{n}">{n}</a>' for n in extras)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>brainmri report: {html.escape(paths.profile)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ text-align: left; padding: 4px 12px; border-bottom: 1px solid #ddd; }}
figure {{ display: inline-block; margin: 6px; width: 250px; vertical-align: top; }}
figure img {{ width: 250px; border: 1px solid #ccc; }} figcaption {{ font-size: 0.8em; }}
.note {{ color: #a00; }}
</style></head><body>
<h1>Brain-tumour MRI classification: run report</h1>
<p class="note">Research software; not a medical device. Not for diagnosis.</p>
<table>{rows}</table>
<h2>Notebook reports</h2><ol>{"".join(items)}</ol>
<h2>Machine-readable results</h2><p>{files}</p>
<h2>Figures</h2>{thumbs or "<p>none yet</p>"}
</body></html>
"""
    return atomic_write(paths.index_html, page)
