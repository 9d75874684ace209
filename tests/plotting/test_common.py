"""brainmri.plotting.common: one call saves a report figure and shows it in the notebook."""

from __future__ import annotations

import base64

import matplotlib.pyplot as plt
import numpy as np
import pytest

from brainmri.plotting.common import save_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _figure():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(np.arange(5), np.arange(5) ** 2)
    return fig


@pytest.fixture
def ipython_shell():
    """A real IPython shell (what a Jupyter kernel runs), removed again after the test."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    yield shell
    InteractiveShell.clear_instance()


def test_save_figure_writes_the_png_closes_the_figure_and_returns_nothing(tmp_path):
    fig = _figure()
    result = save_figure(fig, tmp_path / "new" / "figs", "curve")
    path = tmp_path / "new" / "figs" / "curve.png"
    assert result is None  # a bare call as a cell's last line prints nothing
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert not plt.fignum_exists(fig.number)  # an inline backend must not draw it again


def test_save_figure_displays_the_saved_png_with_its_name_as_alt_text(tmp_path, ipython_shell):
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        save_figure(_figure(), tmp_path, "eval_confusion_official")
    (output,) = captured.outputs
    shown = base64.b64decode(output.data["image/png"])
    assert shown == (tmp_path / "eval_confusion_official.png").read_bytes()
    assert output.metadata["image/png"]["alt"] == "eval_confusion_official"


def test_save_figure_shows_nothing_outside_ipython(tmp_path, capsys):
    save_figure(_figure(), tmp_path, "quiet")
    assert capsys.readouterr().out == ""
