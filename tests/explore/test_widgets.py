"""brainmri.explore.widgets, headless: set a widget's value, click, upload, and read what the
explorer shows (no browser, no kernel; ipywidgets' callbacks run in this process)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from brainmri.config import CLASS_NAMES
from brainmri.explore import Explorer
from brainmri.explore.widgets import ANY, LISTED, PREDICTED, ExplorerApp


@pytest.fixture(scope="module")
def explorer(phantom_run) -> Explorer:
    root, profile = phantom_run
    return Explorer.open(profile, root=root)


@pytest.fixture
def app(explorer) -> ExplorerApp:
    return ExplorerApp(explorer)


def _listed(app: ExplorerApp) -> list[int]:
    return [value for _, value in app.listing.options]


def test_it_opens_listing_the_test_images_least_confident_first(app, explorer):
    expected = explorer.filter(subset="test")
    assert _listed(app) == [int(i) for i in expected.index] and len(expected) == 20
    assert "<b>20</b> images" in app.count.value
    first = expected.iloc[0]
    assert app.listing.options[0][0].startswith(f"{first['name']} · {first['label']} → ")
    assert app.selection is None and bytes(app.overlay.value) == b""
    assert "demo" in app.widget.children[0].value  # the header names the run
    matrix = explorer.confusion(subset="test")
    for (true, predicted), button in app.cells.items():
        assert button.description == str(matrix.loc[true, predicted])


def test_filters_change_the_list(app, explorer):
    app.subset.value = "val"
    assert _listed(app) == [int(i) for i in explorer.filter(subset="val").index]
    app.true.value = "glioma"
    assert {explorer.table.loc[i, "label"] for i in _listed(app)} == {"glioma"}
    app.outcome.value = "wrong"
    wrong = explorer.filter(subset="val", true="glioma", correct=False)
    assert _listed(app) == [int(i) for i in wrong.index]
    app.outcome.value = "all"
    app.confidence.value = (0.0, 0.0)  # nothing is that unsure
    assert _listed(app) == [] and "<b>0</b> images" in app.count.value
    app.confidence.value = (0.0, 1.0)
    app.true.value = ANY
    app.ood.value = "flagged"
    assert _listed(app) == [int(i) for i in explorer.filter(subset="val", ood=True).index]
    assert all(" · OOD" in label for label, _ in app.listing.options)
    app.ood.value = ANY
    app.order.value = True
    confidences = [explorer.table.loc[i, "confidence"] for i in _listed(app)]
    assert confidences == sorted(confidences, reverse=True)
    assert len(_listed(app)) <= LISTED


def test_a_confusion_cell_lists_its_images(app, explorer):
    app.outcome.value = "right"
    counts = explorer.confusion(subset="test")
    true, predicted = max(counts.stack().items(), key=lambda kv: kv[1])[0]
    app.cells[true, predicted].click()
    assert (app.true.value, app.predicted.value, app.outcome.value) == (true, predicted, "all")
    assert len(_listed(app)) == counts.loc[true, predicted] > 0
    off = next((t, p) for t in CLASS_NAMES for p in CLASS_NAMES if counts.loc[t, p] == 0)
    app.cells[off].click()
    assert _listed(app) == [] and "<b>0</b> images" in app.count.value


def test_selecting_an_image_shows_scan_probabilities_explanation_and_mask_scores(app, explorer):
    index = int(explorer.filter(subset="test", true="pituitary").index[0])
    app.listing.value = index
    row = explorer.table.loc[index]
    assert app.selection.key == row["path"]
    assert row["name"] in app.details.value and "true pituitary" in app.details.value
    assert bytes(app.scan.value).startswith(b"\x89PNG") and bytes(app.overlay.value).startswith(
        b"\x89PNG"
    )
    for c in CLASS_NAMES:
        assert f"{row[f'p_{c}_calibrated']:.3f}" in app.probabilities.value
        assert f"{row[f'p_{c}']:.3f}" in app.probabilities.value
    assert "mask outlined" in app.localisation.value and "pointing game" in app.localisation.value
    assert "energy ratio" in app.localisation.value
    app.listing.value = int(explorer.filter(subset="test", true="notumor").index[0])
    assert "no tumour mask" in app.localisation.value


def test_method_class_layer_and_strength_change_the_overlay(app, explorer):
    app.listing.value = int(explorer.filter(subset="test", true="glioma").index[0])
    shown = {"gradcam": bytes(app.overlay.value)}
    for method in ("gradcampp", "scorecam"):
        app.method.value = method
        shown[method] = bytes(app.overlay.value)
        assert app.explanation.method == method
    assert len(set(shown.values())) == 3  # three different pictures
    assert "Score-CAM (top 32 channels) of" in app.localisation.value
    app.method.value = "gradcam"
    assert bytes(app.overlay.value) == shown["gradcam"]  # kept: the same map again
    other = next(c for c in CLASS_NAMES if c != app.selection.scores["predicted"])
    app.target.value = other
    assert app.explanation.target == other and bytes(app.overlay.value) != shown["gradcam"]
    app.target.value = PREDICTED
    app.layer.value = app.layer.options[1]
    assert app.explanation.layer == app.layer.options[1]
    assert bytes(app.overlay.value) != shown["gradcam"]
    app.layer.value = app.layer.options[0]
    cam = app.explanation.cam
    app.strength.value = 0.0  # the bare scan: the heatmap weighs nothing
    assert np.array_equal(app.explanation.cam, cam) and bytes(app.overlay.value) != shown["gradcam"]
    assert np.array_equal(app.explanation.overlay, app.selection.view)


def test_uploading_a_scan_shows_its_prediction(app, explorer):
    file = explorer.run.data_root / explorer.table["path"].iloc[5]
    app.listing.value = _listed(app)[0]
    app.upload.value = (
        {
            "name": "my scan.jpg",
            "type": "image/jpeg",
            "size": file.stat().st_size,
            "content": memoryview(file.read_bytes()),
            "last_modified": datetime(2026, 1, 1, tzinfo=timezone.utc),
        },
    )
    assert app.selection.key == "upload:my scan.jpg" and app.selection.label is None
    assert app.upload.value == ()  # emptied: the same file may be uploaded again
    assert app.listing.value is None  # no listed image is meant any more
    assert "uploaded scan" in app.details.value and "uploaded my scan.jpg" in app.message.value
    assert bytes(app.overlay.value).startswith(b"\x89PNG")
    assert "no tumour mask" in app.localisation.value
    predicted = app.selection.scores["predicted"]
    assert f"predicted <b>{predicted}</b>" in app.details.value


def test_a_bad_upload_is_one_line_and_keeps_the_image_shown(app, explorer):
    app.listing.value = int(explorer.filter(subset="test").index[0])
    shown = app.selection
    app.upload.value = (
        {
            "name": "<i>x.txt",
            "type": "text/plain",
            "size": 5,
            "content": memoryview(b"hello"),
            "last_modified": datetime(2026, 1, 1, tzinfo=timezone.utc),
        },
    )
    assert app.selection is shown
    assert "unsupported file type" in app.message.value
    assert "&lt;i&gt;x.txt" in app.message.value  # the name is escaped, not markup
