"""Publishing a run for readers: notebook HTML, the index page and the model card.

- :mod:`~brainmri.reports.notebooks`: executed notebooks cleaned of TensorFlow's start-up
  noise and rendered to self-contained HTML (figures embedded, with their names as alt text).
- :mod:`~brainmri.reports.index`: reports/<profile>/index.html, the answers first.
- :mod:`~brainmri.reports.model_card`: reports/<profile>/model_card.md and .html.
- :mod:`~brainmri.reports.tables`: the tables of evaluation blocks (notebooks, index, model
  card) and the comparison of two runs (``brainmri compare``).
- :mod:`~brainmri.reports.render`: the Jinja2 templates (templates/*.j2) that lay out the index
  page, the model card and the prediction page.
"""

from brainmri.reports.index import write_index
from brainmri.reports.model_card import model_card_markdown, write_model_card
from brainmri.reports.notebooks import (
    clean_notebook_outputs,
    drop_library_noise,
    embedded_images,
    export_html,
    export_notebook_html,
)

__all__ = [
    "clean_notebook_outputs",
    "drop_library_noise",
    "embedded_images",
    "export_html",
    "export_notebook_html",
    "model_card_markdown",
    "write_index",
    "write_model_card",
]
