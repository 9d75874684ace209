"""brainmri.reports.render: every template escapes what it inserts into HTML, and only HTML."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pandas as pd
import pytest
from markupsafe import Markup

from brainmri import config, predict, runs
from brainmri.io import write_json
from brainmri.reports import model_card_markdown, write_index
from brainmri.reports.render import TEMPLATES, render_template

HOSTILE = "<script>alert('x')</script>"
ESCAPED = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
NAME, ESCAPED_NAME = HOSTILE[:-9], ESCAPED[:-15]
"""The same without its closing tag, whose slash no file name can hold."""


def test_the_index_page_escapes_the_profile_description_warnings_and_figure_names(tmp_path):
    paths = config.Paths(root=tmp_path, profile="demo")
    metrics = {
        "profile": "demo",
        "params": {"description": HOSTILE},
        "data": {"warnings": [HOSTILE]},
    }
    write_json(paths.metrics, metrics)
    paths.figures_dir.mkdir(parents=True)
    (paths.figures_dir / f"{NAME}.png").write_bytes(b"png")
    page = write_index(paths)
    assert "<script" not in page
    assert f"<td>demo: {ESCAPED}</td>" in page  # the profile's description
    assert f'<p class="alert">{ESCAPED}.</p>' in page  # a data warning
    assert f'alt="{ESCAPED_NAME}"' in page and f"<figcaption>{ESCAPED_NAME}</figcaption>" in page


def test_the_prediction_page_escapes_file_names_reasons_and_warnings(tmp_path):
    table = pd.DataFrame(
        [
            {"file": f"/scans/{NAME}.png", "status": "ok", "reason": "", "predicted": "glioma"},
            {"file": "/scans/b.txt", "status": "skipped", "reason": HOSTILE, "predicted": ""},
        ]
    )
    for name in config.CLASS_NAMES:
        table[f"p_{name}_calibrated"] = [0.25, float("nan")]
    table["ood_flag"] = [True, False]
    table["ood_layer"], table["ood_reason"] = ["gate", ""], [HOSTILE, ""]
    (tmp_path / "views").mkdir()
    (tmp_path / "views" / "00000.png").write_bytes(b"png")
    views = [tmp_path / "views" / f"{k:05d}.png" for k in range(2)]
    info = runs.RunInfo(Path(f"/models/{NAME}.keras"), "0" * 64, warnings=(HOSTILE,))
    page = predict.outputs._page(table, views, tmp_path, info)
    assert "<script" not in page
    assert f"<td>/scans/{ESCAPED_NAME}.png</td>" in page
    assert f'alt="{ESCAPED_NAME}.png and its Grad-CAM"' in page
    assert page.count('src="views/00000.png"') == 1 and "00001.png" not in page
    assert f"<td></td><td>{ESCAPED}</td>" in page  # the reason a file was skipped
    assert (
        f'<p class="flag">{ESCAPED}</p>' in page and f"Model /models/{ESCAPED_NAME}.keras" in page
    )
    assert '<b class="flag">out of distribution</b>' in page  # the template's own markup stays
    assert f"(gate: {ESCAPED})" in page  # the flag's layer and reason, escaped
    assert "<h2>predicted glioma (1)</h2>" in page and "<h2>skipped (1)</h2>" in page


def test_the_model_card_page_escapes_its_title_and_keeps_the_rendered_body():
    page = render_template("model_card.html.j2", profile=HOSTILE, body=Markup("<h1>Card</h1>"))
    assert f"<title>Model card: {ESCAPED}</title>" in page and "<script" not in page
    assert "<body><h1>Card</h1><p>" in page


def test_the_markdown_card_is_not_html_escaped():
    """Markdown is no HTML: the card keeps the text as written (the HTML page renders it)."""
    card = model_card_markdown({"profile": "demo", "params": {"description": HOSTILE}}, {})
    assert f"demo profile ({HOSTILE})." in card and "&lt;" not in card
    assert "Not evaluated yet." in card and card.endswith("make all PROFILE=demo\n```\n")


def test_every_template_renders_and_a_missing_value_is_an_error():
    names = sorted(p.name for p in TEMPLATES.glob("*.j2"))
    assert names == [
        "index.html.j2",
        "model_card.html.j2",
        "model_card.md.j2",
        "predict_page.html.j2",
        "serve_page.html.j2",
    ]
    with pytest.raises(jinja2.UndefinedError, match="profile"):
        render_template("model_card.html.j2", body="")
