"""The Jinja2 templates of the pages and the model card (``templates/*.j2``), rendered.

Python computes every value and table; a template only lays them out. HTML templates
(``*.html.j2``) escape whatever they insert unless it is marked safe (``markupsafe.Markup``:
tables pandas has escaped already, HTML rendered from Markdown); the Markdown template
(``*.md.j2``) escapes nothing. A name a template uses but is not given is an error, not an empty
string.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).parent / "templates"
"""The templates: index.html.j2, model_card.md.j2, model_card.html.j2, predict_page.html.j2 and
serve_page.html.j2 (and nbconvert's brainmri_report/, which ``brainmri.reports.notebooks`` uses)."""


@cache
def environment() -> jinja2.Environment:
    """The one Jinja2 environment of the templates (built on first use)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2",), disabled_extensions=("md.j2",), default=True
        ),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_template(name: str, **values: Any) -> str:
    """Render one template of ``TEMPLATES``.

    Args:
        name: the template's file name, e.g. ``"index.html.j2"``.
        **values: the names the template uses.

    Returns:
        The rendered text.

    Raises:
        jinja2.UndefinedError: the template uses a name that is not given.
    """
    return environment().get_template(name).render(**values)
