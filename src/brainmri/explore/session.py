"""The explorer's logic: a finished run opened for browsing, with plain methods that return data.

:class:`Explorer` holds one run (its manifest, model, temperature, OOD threshold and the
Grad-CAM settings of its profile) and a table of every validation and test image with its
prediction. :meth:`Explorer.filter` lists images, :meth:`Explorer.select` opens one,
:meth:`Explorer.explain` explains it and :meth:`Explorer.upload` takes a new scan through the
same steps as ``brainmri predict`` (:func:`brainmri.data.scans.read_scan` reads and cuts it,
:func:`brainmri.predict.score_logits` gives its probabilities and OOD flag). The widgets
(:mod:`brainmri.explore.widgets`) only call these.

The table of predictions is :mod:`brainmri.explore.table`'s (computed once, then cached).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmri import config, runs
from brainmri.config import CLASS_NAMES
from brainmri.data.images import encode_png
from brainmri.explore.table import SCORE_COLUMNS, build_table, table_logits
from brainmri.io import read_json

SUBSETS = ("test", "val")
"""The manifest subsets the explorer lists (training images are not held-out evidence)."""
SCORECAM_CHANNELS = 32
"""Score-CAM's channel cap in the explorer: every channel of EfficientNet-Lite1's last map
(1,280 forward passes) takes minutes on a CPU; the cap is named wherever the map is shown
(:func:`brainmri.explain.method_label`)."""
_MAPS_KEPT = 64  # explanations kept in memory: changing the overlay strength recomputes nothing


def finished_runs(root: Path | None = None) -> list[str]:
    """The profiles under reports/ whose run has finished its evaluation, most recent first.

    A run is finished when it has a trained model and a metrics.json with an ``evaluate``
    section (04_evaluate has run); its age is that of its metrics.json.

    Args:
        root: the project root; None finds it.

    Returns:
        Profile names, newest first; empty when no run has finished.
    """
    reports = (root or config.find_root()) / "reports"
    found = []
    for folder in reports.iterdir() if reports.is_dir() else ():
        metrics, model = folder / "metrics.json", folder / "model.keras"
        if not (folder.is_dir() and metrics.is_file() and model.is_file()):
            continue
        try:
            config.check_profile_name(folder.name)
            if "evaluate" not in read_json(metrics):
                continue
        except ValueError:  # not a profile's folder, or a metrics.json being rewritten
            continue
        found.append((metrics.stat().st_mtime, folder.name))
    return [name for _, name in sorted(found, reverse=True)]


def latest_run(root: Path | None = None) -> str:
    """The most recently finished run's profile (:func:`finished_runs`).

    Raises:
        FileNotFoundError: no run has finished; the message says how to make one.
    """
    found = finished_runs(root)
    if not found:
        where = (root or config.find_root()) / "reports"
        raise FileNotFoundError(
            f"{where}: no finished run (a profile folder with model.keras and metrics.json "
            "from 04_evaluate); make one with `make all PROFILE=demo` (about 15 minutes on a "
            "CPU), then reopen the explorer"
        )
    return found[0]


@dataclass
class Selection:
    """One image opened in the explorer: a listed one, or an uploaded scan.

    Attributes:
        key: the image's name in the explorer (its manifest path, or ``upload:<file name>``).
        name: the file name shown.
        image: the model's input, float32 (size, size, 3) of 0..255 pixels, prepared as the
            run prepared its images (decoded, cut to the head where it did, resized).
        scores: ``p_<class>``, ``p_<class>_calibrated``, ``predicted`` and the OOD columns
            ``ood_score``, ``ood_distance``, ``ood_flag``, ``ood_layer``, ``ood_reason``
            (:func:`brainmri.predict.score_logits`; an upload also passes predict's input gate).
        label: the true class, or None for an uploaded scan.
        subset: "test" or "val", or None for an uploaded scan.
        mask: the tumour mask (size, size) bool, or None where the image has none.
    """

    key: str
    name: str
    image: np.ndarray
    scores: dict[str, Any]
    label: str | None = None
    subset: str | None = None
    mask: np.ndarray | None = None

    @property
    def view(self) -> np.ndarray:
        """The image as shown: uint8 RGB, the mask outlined where there is one."""
        image = np.clip(np.round(self.image), 0, 255).astype(np.uint8)
        return image if self.mask is None or not self.mask.any() else outline(image, self.mask)

    @property
    def probabilities(self) -> pd.DataFrame:
        """The class probabilities, raw and calibrated, one row per class."""
        return pd.DataFrame(
            {
                "raw": [self.scores[f"p_{c}"] for c in CLASS_NAMES],
                "calibrated": [self.scores[f"p_{c}_calibrated"] for c in CLASS_NAMES],
            },
            index=pd.Index(CLASS_NAMES, name="class"),
        )


@dataclass
class Explanation:
    """One explanation of a selected image.

    Attributes:
        method: the method's name in ``brainmri.explain.METHODS``.
        label: the name reports give it (Score-CAM's channel cap included).
        target: the class explained.
        layer: the feature map explained.
        cam: the map, float32 (size, size) in [0, 1].
        overlay: the map blended onto the image, the mask outlined, uint8 (size, size, 3).
        localisation: pointing (strict and within the profile's tolerance), energy inside the
            mask and energy ratio; None where the image has no mask.
        seconds: the time the map took (0 when it came from memory).
    """

    method: str
    label: str
    target: str
    layer: str
    cam: np.ndarray
    overlay: np.ndarray
    localisation: dict[str, Any] | None
    seconds: float


@dataclass
class Explorer:
    """A finished run opened for browsing its validation and test predictions.

    Attributes:
        run: the run, its model loaded (:func:`brainmri.runs.open_run`).
        info: its temperature, OOD threshold and crop (:func:`brainmri.runs.run_info`).
        table: one row per listed image: path, name, subset, headline, label, predicted,
            confidence (the calibrated probability of the predicted class), correct, the raw
            and calibrated probabilities, ood_score, ood_flag and mask (its file, or "").
        gradcam: the profile's ``gradcam`` parameters (layer, overlay strength, tolerance).
    """

    run: runs.Run
    info: runs.RunInfo
    table: pd.DataFrame
    gradcam: dict[str, Any]
    _maps: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _uploads: dict[str, Selection] = field(default_factory=dict, repr=False)
    _predictor: Any = field(default=None, repr=False)

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, profile: str | None = None, *, root: Path | None = None, cache: bool = True
    ) -> Explorer:
        """Open a finished run.

        Args:
            profile: the run's profile; None: the most recently finished run (:func:`latest_run`).
            root: the project root; None finds it.
            cache: read and write the table's logits in the run's ``.cache/``.

        Returns:
            The explorer, its table computed (or read from the cache).

        Raises:
            FileNotFoundError: no such run, or it has not finished 03_train.
        """
        root = Path(root) if root is not None else config.find_root()
        profile = profile or latest_run(root)
        run = runs.open_run(profile, root=root)
        info = runs.run_info(run.paths.model, run.paths.run_dir)
        try:
            gradcam = config.load_profile(profile, root=root)["gradcam"]
        except (FileNotFoundError, ValueError):  # a run whose params file is gone: the defaults
            gradcam = config.load_profile("default", root=root)["gradcam"]
        rows = run.manifest[run.manifest["subset"].isin(SUBSETS)].reset_index(drop=True)
        table = build_table(run, info, rows, *table_logits(run, info, rows, cache=cache))
        return cls(run, info, table, dict(gradcam))

    @property
    def size(self) -> int:
        """The model's input side in pixels."""
        return self.run.image_size

    @property
    def tolerance(self) -> float:
        """The pointing game's tolerance in pixels (``gradcam.pointing_tolerance`` of a side)."""
        return float(self.gradcam["pointing_tolerance"]) * self.size

    def layers(self) -> list[str]:
        """The feature maps an explanation may use, the profile's (or the default) first."""
        from brainmri import explain

        found = explain.candidate_layers(self.run.model)
        chosen = self.gradcam.get("cam_layer") or found[0]
        return [chosen, *(name for name in found if name != chosen)]

    def warm_up(self) -> dict[str, float]:
        """Explain one listed image with each method, so that TensorFlow traces the methods'
        steps now rather than on the reader's first click (Score-CAM's first map took 4.6 s on
        the `cpu` model, the next ones under 1 s: docs/explore.md).

        Returns:
            The seconds each method took, by name; empty for a run without images.
        """
        from brainmri import explain

        if self.table.empty:
            return {}
        selection = self.select(int(self.table.index[0]))
        return {m: self.explain(selection, method=m).seconds for m in explain.REAL_METHODS}

    # --- browsing -----------------------------------------------------------------------------

    def filter(
        self,
        *,
        subset: str = "test",
        true: str | None = None,
        predicted: str | None = None,
        correct: bool | None = None,
        confidence: tuple[float, float] = (0.0, 1.0),
        ood: bool | None = None,
        descending: bool = False,
    ) -> pd.DataFrame:
        """The listed images that pass every filter, sorted by confidence.

        Args:
            subset: "test", "val", "headline" (the test images the headline is computed on)
                or "all".
            true: only this true class; None: any.
            predicted: only this predicted class; None: any.
            correct: only right (True) or wrong (False) predictions; None: both.
            confidence: the calibrated confidence's range, both ends included.
            ood: only images the OOD flag marks (True) or does not (False); None: both.
            descending: most confident first; else least confident first (the doubtful cases).

        Returns:
            The table's matching rows (its index kept: :meth:`select` takes it).

        Raises:
            ValueError: an unknown subset or class (the message lists the known ones).
        """
        t = self.table
        keep = np.ones(len(t), bool)
        if subset == "headline":
            keep &= (t["subset"] == "test") & t["headline"]
        elif subset in SUBSETS:
            keep &= t["subset"] == subset
        elif subset != "all":
            raise ValueError(f"subset={subset!r}: expected one of {[*SUBSETS, 'headline', 'all']}")
        for column, value in (("label", true), ("predicted", predicted)):
            if value is not None:
                if value not in CLASS_NAMES:
                    raise ValueError(f"{column}={value!r}: expected one of {list(CLASS_NAMES)}")
                keep &= t[column] == value
        if correct is not None:
            keep &= t["correct"] == bool(correct)
        if ood is not None:
            keep &= t["ood_flag"] == bool(ood)
        low, high = confidence
        keep &= (t["confidence"] >= low) & (t["confidence"] <= high)
        return t[keep].sort_values("confidence", ascending=not descending, kind="stable")

    def confusion(self, *, subset: str = "test") -> pd.DataFrame:
        """The confusion matrix of a subset (counts; rows true, columns predicted).

        Args:
            subset: as for :meth:`filter`.

        Returns:
            A K x K table of counts indexed by class names.
        """
        rows = self.filter(subset=subset)
        counts = pd.crosstab(rows["label"], rows["predicted"])
        return counts.reindex(index=CLASS_NAMES, columns=CLASS_NAMES, fill_value=0).astype(int)

    # --- one image ----------------------------------------------------------------------------

    def select(self, index: int | str) -> Selection:
        """Open a listed image (its table index or path) or an uploaded scan (its key).

        Raises:
            KeyError: no such image.
        """
        if isinstance(index, str) and index in self._uploads:
            return self._uploads[index]
        if isinstance(index, str):
            found = self.table.index[self.table["path"] == index]
            if not len(found):
                raise KeyError(f"{index}: not among the run's validation and test images")
            index = int(found[0])
        row = self.table.loc[int(index)]
        image = self.run.images([row["path"]])[0]
        mask = None
        if row["mask"]:
            from brainmri import phantom

            file = self.run.data_root / row["path"]
            mask = phantom.load_mask(
                file,
                self.run.data_root,
                self.size,
                mask_root=self.run.record.get("mask_root"),
                crop=self.run.crop,
            )
        scores = {k: row[k] for k in SCORE_COLUMNS}
        return Selection(
            key=row["path"],
            name=row["name"],
            image=np.asarray(image, np.float32),
            scores=scores,
            label=row["label"],
            subset=row["subset"],
            mask=mask,
        )

    def explain(
        self,
        selection: Selection,
        *,
        method: str = "gradcam",
        target: str | None = None,
        layer: str | None = None,
        strength: float | None = None,
    ) -> Explanation:
        """Explain a selected image.

        Args:
            selection: from :meth:`select` or :meth:`upload`.
            method: one of ``brainmri.explain.REAL_METHODS`` (Score-CAM with the explorer's
                channel cap, :data:`SCORECAM_CHANNELS`).
            target: the class explained; None: the predicted one.
            layer: the feature map; None: the profile's (``gradcam.cam_layer``) or the default.
            strength: the heatmap's weight in the overlay, 0..1; None: ``gradcam.interpolant``.

        Returns:
            The :class:`Explanation`; its map is computed once per image, method, class and
            layer, then kept in memory.

        Raises:
            ValueError: an unknown method, class or layer, or a strength outside [0, 1].
        """
        from brainmri import explain

        if method not in explain.REAL_METHODS:
            raise ValueError(f"method={method!r}: expected one of {list(explain.REAL_METHODS)}")
        target = target or selection.scores["predicted"]
        if target not in CLASS_NAMES:
            raise ValueError(f"target={target!r}: expected one of {list(CLASS_NAMES)}")
        layer = layer or self.layers()[0]
        strength = float(self.gradcam["interpolant"] if strength is None else strength)
        cap = SCORECAM_CHANNELS if method == "scorecam" else None
        key = (selection.key, method, target, layer)
        seconds = 0.0
        cam = self._maps.get(key)
        if cam is None:
            started = time.perf_counter()
            cam = explain.explain(
                method,
                self.run.model,
                selection.image[None],
                class_index=CLASS_NAMES.index(target),
                layer_name=layer,
                max_channels=cap,
            )[0]
            seconds = time.perf_counter() - started
            self._maps[key] = cam
            while len(self._maps) > _MAPS_KEPT:
                self._maps.popitem(last=False)
        self._maps.move_to_end(key)
        view = explain.overlay(selection.image, cam, strength)
        localisation = None
        if selection.mask is not None and selection.mask.any():
            view = outline(view, selection.mask)
            localisation = {
                "pointing": explain.pointing_game(cam, selection.mask),
                "pointing_tolerant": explain.pointing_game(cam, selection.mask, self.tolerance),
                "tolerance_px": self.tolerance,
                "energy_inside": explain.energy_pointing(cam, selection.mask),
                "energy_ratio": explain.energy_ratio(cam, selection.mask),
            }
        return Explanation(
            method=method,
            label=explain.method_label(method, cap),
            target=target,
            layer=layer,
            cam=cam,
            overlay=view,
            localisation=localisation,
            seconds=seconds,
        )

    def upload(self, name: str, content: bytes) -> Selection:
        """A new scan (JPEG, PNG, BMP, TIFF or DICOM bytes), read and predicted as
        ``brainmri predict`` reads and predicts it.

        Args:
            name: the file's name (its suffix says how to decode it; DICOM is also known by
                its header).
            content: the file's bytes.

        Returns:
            Its :class:`Selection` (no true class, no mask), also kept under its key for
            :meth:`select`.

        Raises:
            brainmri.data.scans.ScanError: not a readable scan (the message names the file).
        """
        from brainmri.data.scans import ScanError
        from brainmri.predict import Predictor

        if self._predictor is None:  # traced once, on the first upload
            self._predictor = Predictor(self.run.model, self.info, batch_size=1)
        # predict's own reading, input gate, prediction and feature guard
        predicted = self._predictor.predict_uploads([(name, bytes(content))])
        (row,) = predicted.rows
        base = row["file"]
        if row["status"] != "ok":
            raise ScanError(f"{base}: {row['reason']}")
        selection = Selection(
            key=f"upload:{base}",
            name=base,
            image=predicted.images[0].astype(np.float32),
            scores={k: row[k] for k in SCORE_COLUMNS},
        )
        self._uploads[selection.key] = selection
        # another file uploaded under an earlier one's name replaces it: its maps go too
        for stale in [k for k in self._maps if k[0] == selection.key]:
            del self._maps[stale]
        return selection


def outline(image: np.ndarray, mask: np.ndarray, colour=(0, 255, 0)) -> np.ndarray:
    """The image with the mask's outline drawn on it (a copy; uint8 RGB (H, W, 3))."""
    import cv2

    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    out = np.ascontiguousarray(image.copy())
    cv2.drawContours(out, contours, -1, colour, max(1, image.shape[0] // 160))
    return out


def png(image: np.ndarray, *, side: int | None = None) -> bytes:
    """PNG bytes of a uint8 RGB image, enlarged (nearest neighbour) to ``side`` pixels."""
    import cv2

    if side and image.shape[0] != side:
        image = cv2.resize(image, (side, side), interpolation=cv2.INTER_NEAREST)
    return encode_png(image)
