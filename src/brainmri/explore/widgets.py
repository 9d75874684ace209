"""The explorer's widgets (ipywidgets): a thin layer over :class:`~brainmri.explore.session.Explorer`.

Every callback reads the widgets' values, calls one of the explorer's methods and shows what it
returns; no computation happens here. The widgets are attributes of :class:`ExplorerApp`, so a
test can set a value, click a button or upload a file, and read what is shown.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Iterator
from typing import Any

import ipywidgets as w

from brainmri.config import CAM_TITLES, CLASS_NAMES, IMAGE_EXTENSIONS
from brainmri.data.scans import DICOM_EXTENSIONS
from brainmri.explore.session import SCORECAM_CHANNELS, Explanation, Explorer, Selection, png

METHOD_NAMES = {
    **CAM_TITLES,
    "scorecam": f"{CAM_TITLES['scorecam']} (top {SCORECAM_CHANNELS} channels)",
}
"""The methods the explorer offers (``brainmri.explain.REAL_METHODS``) and their names."""
LISTED = 300
"""The most images the list shows at once (the rest: narrow the filters)."""
PREDICTED = "predicted class"
"""The explained class's choice that means the predicted one."""
ANY = "any"
"""The value of a filter that passes everything (ipywidgets shows a None value as no choice)."""


class ExplorerApp:
    """The explorer's widgets, wired to an :class:`Explorer`.

    Args:
        explorer: the opened run.
        side: the side in pixels at which scans and overlays are shown.

    Attributes:
        widget: the whole layout, to display.
        selection: the image shown, or None.
        explanation: its explanation, or None.
    """

    def __init__(self, explorer: Explorer, *, side: int = 256) -> None:
        self.explorer = explorer
        self.side = side
        self.selection: Selection | None = None
        self.explanation: Explanation | None = None
        self._quiet = False
        classes = [ANY, *CLASS_NAMES]
        narrow = w.Layout(width="260px")

        # the browser's filters
        self.subset = w.Dropdown(
            options=[("test", "test"), ("headline test", "headline"), ("validation", "val")],
            value="test",
            description="images",
            layout=narrow,
        )
        self.true = w.Dropdown(options=classes, value=ANY, description="true", layout=narrow)
        self.predicted = w.Dropdown(
            options=classes, value=ANY, description="predicted", layout=narrow
        )
        self.outcome = w.ToggleButtons(options=["all", "right", "wrong"], value="all")
        self.outcome.style.button_width = "70px"
        self.confidence = w.FloatRangeSlider(
            value=(0.0, 1.0), min=0.0, max=1.0, step=0.01, description="confidence"
        )
        self.ood = w.Dropdown(
            options=[ANY, "flagged", "not flagged"],
            value=ANY,
            description="OOD flag",
            layout=narrow,
        )
        self.order = w.Dropdown(
            options=[("least confident first", False), ("most confident first", True)],
            value=False,
            description="order",
            layout=narrow,
        )
        self.count = w.HTML()
        self.listing = w.Select(options=[], rows=14, layout=w.Layout(width="430px"))
        self.cells: dict[tuple[str, str], w.Button] = {}
        self.matrix = self._confusion_grid()

        # the selected image
        self.scan = w.Image(format="png", width=side, height=side)
        self.overlay = w.Image(format="png", width=side, height=side)
        self.details = w.HTML()
        self.probabilities = w.HTML()
        self.localisation = w.HTML()
        self.method = w.Dropdown(
            options=[(name, key) for key, name in METHOD_NAMES.items()],
            value="gradcam",
            description="method",
        )
        self.target = w.Dropdown(
            options=[PREDICTED, *CLASS_NAMES], value=PREDICTED, description="explain"
        )
        layers = explorer.layers()
        self.layer = w.Dropdown(options=layers, value=layers[0], description="layer")
        self.strength = w.FloatSlider(
            value=float(explorer.gradcam["interpolant"]),
            min=0.0,
            max=1.0,
            step=0.05,
            description="overlay",
        )
        self.upload = w.FileUpload(
            accept=",".join((*IMAGE_EXTENSIONS, *DICOM_EXTENSIONS)), multiple=False
        )
        self.message = w.HTML()

        for control in (self.subset, self.true, self.predicted, self.outcome, self.confidence):
            control.observe(self._filters_changed, names="value")
        for control in (self.ood, self.order):
            control.observe(self._filters_changed, names="value")
        self.listing.observe(self._listing_changed, names="value")
        for control in (self.method, self.target, self.layer):
            control.observe(self._explanation_changed, names="value")
        self.strength.observe(self._strength_changed, names="value")
        self.upload.observe(self._uploaded, names="value")

        self.widget = self._layout()
        self.refresh()

    # --- layout -------------------------------------------------------------------------------

    def _confusion_grid(self) -> w.GridBox:
        """A button per cell of the confusion matrix; a click lists that cell's images."""
        # column heads shortened (the full name in the tooltip): five columns fit the list's width
        head = [w.HTML("<b>true \\ pred.</b>")]
        head += [
            w.HTML(f"<b title='predicted {html.escape(c)}'>{html.escape(c[:5])}</b>")
            for c in CLASS_NAMES
        ]
        cells: list[w.Widget] = list(head)
        for true in CLASS_NAMES:
            cells.append(w.HTML(f"<b>{html.escape(true)}</b>"))
            for predicted in CLASS_NAMES:
                button = w.Button(layout=w.Layout(width="60px"))
                button.on_click(lambda _, t=true, p=predicted: self.show_cell(t, p))
                self.cells[true, predicted] = button
                cells.append(button)
        return w.GridBox(
            cells,
            layout=w.Layout(grid_template_columns=f"100px repeat({len(CLASS_NAMES)}, 64px)"),
        )

    def _layout(self) -> w.Widget:
        e = self.explorer
        from brainmri.predict import guard_summary

        header = w.HTML(
            f"<b>run</b> {html.escape(e.run.paths.profile)} · {len(e.table)} validation and test "
            f"images · temperature {e.info.temperature:.3f} · OOD guard "
            f"{html.escape(guard_summary(e.info))} · model {e.info.model_sha256[:12]}"
        )
        browser = w.VBox(
            layout=w.Layout(flex="0 0 450px", margin="0 24px 0 0"),
            children=[
                w.HTML("<h3>Images</h3>"),
                self.subset,
                self.true,
                self.predicted,
                self.outcome,
                self.confidence,
                self.ood,
                self.order,
                self.count,
                self.listing,
                w.HTML("<h3>Confusion matrix</h3><i>click a cell to list its images</i>"),
                self.matrix,
            ],
        )
        controls = w.VBox([self.method, self.target, self.layer, self.strength])
        viewer = w.VBox(
            layout=w.Layout(width="600px"),  # long lines wrap instead of pushing it below the list
            children=[
                w.HTML("<h3>Selected image</h3>"),
                self.details,
                w.HBox([self.scan, self.overlay]),
                w.HBox([controls, self.probabilities]),
                self.localisation,
                w.HTML("<h3>A new scan</h3>JPEG, PNG, BMP, TIFF or DICOM"),
                self.upload,
                self.message,
            ],
        )
        # side by side where the page is wide enough, the image below the list where it is not
        return w.VBox([header, w.HBox([browser, viewer], layout=w.Layout(flex_flow="row wrap"))])

    # --- what the callbacks call --------------------------------------------------------------

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Set several filters at once: the list is refreshed once, afterwards."""
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False
        self.refresh()

    def rows(self):
        """The images the filters pass, in the chosen order (:meth:`Explorer.filter`)."""
        return self.explorer.filter(
            subset=self.subset.value,
            true=None if self.true.value == ANY else self.true.value,
            predicted=None if self.predicted.value == ANY else self.predicted.value,
            correct={"all": None, "right": True, "wrong": False}[self.outcome.value],
            confidence=tuple(self.confidence.value),
            ood={ANY: None, "flagged": True, "not flagged": False}[self.ood.value],
            descending=self.order.value,
        )

    def refresh(self) -> None:
        """List the images the filters pass and count the confusion matrix's cells."""
        rows = self.rows()
        shown = rows.head(LISTED)
        options = [
            (
                f"{r['name']} · {r['label']} → {r['predicted']} ({r['confidence']:.2f})"
                + (" · OOD" if r["ood_flag"] else ""),
                int(index),
            )
            for index, r in shown.iterrows()  # r.name would be the row's index
        ]
        keep = self.listing.value if self.listing.value in dict(options).values() else None
        self._quiet = True
        try:
            self.listing.options = options
            self.listing.value = keep
        finally:
            self._quiet = False
        more = f" (the first {LISTED} listed)" if len(rows) > LISTED else ""
        self.count.value = f"<b>{len(rows)}</b> images{more}"
        counts = self.explorer.confusion(subset=self.subset.value)
        for (true, predicted), button in self.cells.items():
            button.description = str(int(counts.loc[true, predicted]))
            button.button_style = "success" if true == predicted else ""

    def show_cell(self, true: str, predicted: str) -> None:
        """List one confusion-matrix cell's images (the other filters reset)."""
        with self.quiet():
            self.true.value, self.predicted.value = true, predicted
            self.outcome.value, self.ood.value = "all", ANY
            self.confidence.value = (0.0, 1.0)

    def show(self, selection: Selection) -> None:
        """Show an image: its scan, probabilities and explanation."""
        self.selection = selection
        s = selection.scores
        truth = "uploaded scan" if selection.label is None else f"true {selection.label}"
        verdict = ""
        if selection.label is not None:
            verdict = " · right" if selection.label == s["predicted"] else " · <b>wrong</b>"
        self.details.value = (
            f"<b>{html.escape(selection.name)}</b> · {html.escape(truth)} · predicted "
            f"<b>{s['predicted']}</b>{verdict} · energy score {s['ood_score']:.2f}"
            + (" · <b>flagged out of distribution</b>" if s["ood_flag"] else "")
        )
        table = selection.probabilities
        lines = "".join(
            f"<tr><td>{'<b>' + c + '</b>' if c == s['predicted'] else c}</td>"
            f"<td>{r.raw:.3f}</td><td>{r.calibrated:.3f}</td></tr>"
            for c, r in table.iterrows()
        )
        self.probabilities.value = (
            "<table><tr><th>class</th><th>raw</th><th>calibrated</th></tr>" + lines + "</table>"
        )
        self.scan.value = png(selection.view, side=self.side)
        self.explain()

    def explain(self) -> None:
        """Explain the shown image with the chosen method, class and layer."""
        if self.selection is None:
            return
        self.explanation = self.explorer.explain(
            self.selection,
            method=self.method.value,
            target=None if self.target.value == PREDICTED else self.target.value,
            layer=self.layer.value,
            strength=self.strength.value,
        )
        self._show_explanation()

    def _show_explanation(self) -> None:
        x = self.explanation
        self.overlay.value = png(x.overlay, side=self.side)
        took = f" · {x.seconds:.2f} s" if x.seconds else ""
        text = f"{METHOD_NAMES[x.method]} of <b>{x.target}</b> at {html.escape(x.layer)}{took}<br>"
        loc = x.localisation
        if loc is None:
            text += "no tumour mask for this image: no localisation numbers"
        else:
            text += (
                f"mask outlined in green · pointing game: "
                f"{'hit' if loc['pointing'] else 'miss'} (strict), "
                f"{'hit' if loc['pointing_tolerant'] else 'miss'} "
                f"(within {loc['tolerance_px']:.0f} px) · energy inside the mask "
                f"{loc['energy_inside']:.2f} · energy ratio {loc['energy_ratio']:.2f}"
            )
        self.localisation.value = text

    # --- callbacks ----------------------------------------------------------------------------

    def _filters_changed(self, _change: dict[str, Any]) -> None:
        if not self._quiet:
            self.refresh()

    def _listing_changed(self, change: dict[str, Any]) -> None:
        if self._quiet or change["new"] is None:
            return
        self.message.value = ""
        self.show(self.explorer.select(change["new"]))

    def _explanation_changed(self, _change: dict[str, Any]) -> None:
        self.explain()

    def _strength_changed(self, _change: dict[str, Any]) -> None:
        if self.explanation is not None:  # the map is kept: only the blend is redone
            self.explain()

    def _uploaded(self, change: dict[str, Any]) -> None:
        from brainmri.data.scans import ScanError

        files = change["new"]
        if not files:
            return
        item = files[-1]
        self.upload.value = ()  # emptied (this callback returns at once), so a file may come again
        try:
            selection = self.explorer.upload(item["name"], bytes(item["content"]))
        except ScanError as exc:
            self.message.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"
            return
        self.message.value = f"uploaded {html.escape(selection.name)}"
        self._quiet = True
        try:
            self.listing.value = None
        finally:
            self._quiet = False
        self.show(selection)
