"""brainmri.ood.probes: the probe set is made of what installed packages ship or generate,
seeded (the same images every time), grouped far / near / stress, as uint8 RGB scans."""

from __future__ import annotations

import numpy as np

from brainmri.ood import probes


def _slices(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 200, (48, 40, 3), dtype=np.uint8) for _ in range(n)]


def test_the_probe_set_is_seeded_grouped_and_made_of_rgb_scans():
    first, again = probes.probe_set(_slices(), seed=1), probes.probe_set(_slices(), seed=1)
    assert list(first) == list(again)
    for kind, (group, images) in first.items():
        assert group in probes.GROUPS and images, kind
        assert group == again[kind][0] and len(images) == len(again[kind][1])
        for image, same in zip(images, again[kind][1], strict=True):
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert np.array_equal(image, same)
    groups = {kind: group for kind, (group, _) in first.items()}
    assert {k for k, g in groups.items() if g == "far"} >= {
        "photograph", "logo", "noise", "blank", "gradient", "X-ray-like", "CT"
    }  # fmt: skip
    assert groups["rotated 90°"] == groups["inverted contrast"] == "near"
    assert groups["grey photograph"] == groups["photograph in head ellipse"] == "stress"
    # the near kinds are the given slices made foreign, one each
    assert len(first["rotated 90°"][1]) == 3 and first["rotated 90°"][1][0].shape == (40, 48, 3)
    assert np.array_equal(first["inverted contrast"][1][0], 255 - _slices()[0])
    other = probes.probe_set(_slices(), seed=2)
    assert not np.array_equal(first["noise"][1][0], other["noise"][1][0])


def test_the_stress_kinds_take_away_what_the_gate_looks_at():
    grey = probes.probe_set([], seed=0)["grey photograph"][1]
    assert all(np.array_equal(g[..., 0], g[..., 2]) for g in grey)  # no colour left
    ellipse = probes.in_head_ellipse(probes.photographs()[0])
    assert ellipse[0, 0].max() == 0 and ellipse[-1, -1].max() == 0  # dark corners, like air
    assert probes.sagittal_mri().shape == (256, 256, 3)


def test_probe_files_are_read_as_predict_reads_a_file(tmp_path):
    """The bundled pictures with transparency (a logo, a product photograph) become what
    ``brainmri predict`` would be shown: alpha composited on black, not on a viewer's white."""
    from brainmri.data.scans import read_pixels

    name = "Minduka_Present_Blue_Pack.png"
    file = tmp_path / name
    file.write_bytes(probes._sample(name))
    assert np.array_equal(probes.photographs()[1], read_pixels(file))
    assert probes.photographs()[1][0, 0].max() == 0  # a transparent corner is black
