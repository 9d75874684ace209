"""brainmri.ood.gate: the measures of a scan, bounds from training images, refusals by reason,
on real files (the data set's scans where present, matplotlib's photograph) and generated ones."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from brainmri.data.scans import read_pixels
from brainmri.ood import gate, probes


def _slice(size: int = 200, *, seed: int = 0) -> np.ndarray:
    """A phantom head: a grey textured ellipse on black, like an axial slice."""
    rng = np.random.default_rng(seed)
    grey = np.zeros((size, size), np.uint8)
    axes = (int(size * rng.uniform(0.33, 0.38)), int(size * rng.uniform(0.40, 0.45)))
    cv2.ellipse(grey, (size // 2, size // 2), axes, 0, 0, 360, 110, -1)
    grey = np.clip(grey + rng.normal(0, 12, grey.shape) * (grey > 0), 0, 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)


@pytest.fixture(scope="module")
def bounds() -> gate.GateBounds:
    """Bounds fitted on 40 phantom slices (quantile 0: their full range)."""
    return gate.fit_gate([gate.measure(_slice(seed=s)) for s in range(40)], quantile=0.0)


def test_a_slice_is_measured_grey_with_an_elliptic_head_on_dark_air():
    values = gate.measure(_slice())
    assert values["colour"] == 0.0 and values["border"] == 0.0
    assert 0.75 < values["head_side"] < 0.95  # the ellipse's long axis over the side
    assert values["head_fill"] == pytest.approx(np.pi / 4, abs=0.03)  # an ellipse fills pi/4


def test_bounds_are_the_training_range_and_pass_every_training_slice(bounds):
    assert set(bounds.low) == {"contrast", "head_side", "head_fill"}
    assert set(bounds.high) == {"colour", "head_side", "head_fill", "border"}
    assert all(bounds.reason(_slice(seed=s)) is None for s in range(40))
    assert gate.GateBounds.from_json(bounds.to_json()) == bounds


def test_foreign_images_are_refused_each_with_its_reason(bounds):
    photo = probes.photographs()[0]  # matplotlib's Grace Hopper, a real colour photograph
    assert bounds.reason(photo) == gate.REASONS["colour"]
    assert bounds.reason(np.zeros((128, 128, 3), np.uint8)) == gate.REASONS["contrast"]
    assert bounds.reason(np.full((128, 128, 3), 200, np.uint8)) == gate.REASONS["contrast"]
    noise = np.random.default_rng(0).integers(0, 256, (128, 128), np.uint8)
    assert bounds.reason(cv2.cvtColor(noise, cv2.COLOR_GRAY2RGB)) is not None
    grey_photo = cv2.cvtColor(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    assert bounds.reason(grey_photo) is not None  # grey: the colour check cannot catch it
    small = np.zeros((200, 200, 3), np.uint8)
    cv2.circle(small, (100, 100), 35, (255, 255, 255), -1)  # bright: contrast as a slice
    assert bounds.reason(small) == gate.REASONS["head_side"]
    square = np.zeros((200, 200, 3), np.uint8)
    square[25:175, 15:185] = 120  # as wide as a head, but square-cornered
    assert bounds.reason(square) == gate.REASONS["head_fill"]


def test_bounds_sit_at_the_quantile_of_the_training_values():
    measures = [dict.fromkeys(gate.MEASURES, float(v)) for v in range(1001)]
    fitted = gate.fit_gate(measures, quantile=0.01)
    assert fitted.low["contrast"] == pytest.approx(10.0) and fitted.high["colour"] == 990.0
    assert fitted.n_images == 1001 and fitted.check(dict.fromkeys(gate.MEASURES, 500.0)) is None
    with pytest.raises(ValueError, match="quantile"):
        gate.fit_gate(measures, quantile=0.5)
    with pytest.raises(ValueError, match="no training images"):
        gate.fit_gate([])


@pytest.mark.realdata
def test_real_scans_pass_a_gate_fitted_on_real_training_scans(real_data):
    """Bounds from 200 Training scans of each class let a Testing scan of each class through
    and refuse the photograph; the Testing scans chose nothing."""
    training = [
        path
        for folder in sorted((real_data / "Training").iterdir())
        for path in sorted(folder.glob("*.jpg"))[:200]
    ]
    fitted = gate.fit_gate([gate.measure(read_pixels(p)) for p in training], quantile=0.001)
    testing = [sorted(f.glob("*.jpg"))[0] for f in sorted((real_data / "Testing").iterdir())]
    assert [fitted.reason(read_pixels(p)) for p in testing] == [None] * len(testing)
    assert fitted.reason(probes.photographs()[0]) == gate.REASONS["colour"]
