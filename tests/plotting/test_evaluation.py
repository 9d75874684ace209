"""brainmri.plotting.evaluation: each figure of 04_evaluate from real evaluation results."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from brainmri import evaluation as ev
from brainmri.config import CLASS_NAMES
from brainmri.plotting import evaluation as plots

K = len(CLASS_NAMES)


def _predictions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and the float32 softmax outputs of a mediocre classifier."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, size=n)
    logits = rng.normal(size=(n, K)) * 2.0 + 2.0 * np.eye(K)[y]
    return y, ev.softmax(logits).astype(np.float32)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_plots_return_figures_with_expected_axes():
    y, p = _predictions(120, seed=19)
    summary = ev.classification_summary(y, p)
    fig = plots.plot_confusion_matrices(summary, CLASS_NAMES)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    fig = plots.plot_roc_pr(ev.roc_pr_curves(y, p), summary)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    auc = summary["per_class"]["glioma"]["roc_auc"]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert f"glioma (AUC {auc:.3f})" in legend
    before = ev.reliability_curve(y, p, 10)
    assert len(plots.plot_reliability(before, None).axes) == 1
    fig = plots.plot_reliability(before, ev.reliability_curve(y, p, 10))
    assert len(fig.axes) == 2 and f"ECE {before['ece']:.3f}" in fig.axes[0].get_title()
    ci = ev.bootstrap_ci(y, p.argmax(axis=1), n_resamples=100, seed=0)
    fig = plots.plot_ci_forest(ci)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == list(ci)
    with pytest.raises(ValueError, match="do not match 3 class names"):
        plots.plot_confusion_matrices(summary, CLASS_NAMES[:3])


def test_the_guard_figure_has_one_row_per_group_with_its_shares():
    parts = {
        "validation": {"combined": np.array([1.0, 2.0, 3.0, np.inf])},
        "noise": {"combined": np.array([np.inf, np.inf])},
        "rotated 90°": {"combined": np.array([1.5, 40.0])},
    }
    fig = plots.plot_guard_scores(parts, threshold=2.5)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(parts)
    notes = [t.get_text() for t in ax.texts]
    assert notes == [
        "gate 25%, flagged 50% (n=4)", "gate 100%, flagged 100% (n=2)", "gate 0%, flagged 50% (n=2)"
    ]  # fmt: skip
    plt.close(fig)
