"""The lesion-erasure test on constructed heads and a model that reads only bright lesions."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
from keras import layers

from brainmri import config
from brainmri.explain import erasure

SIZE = 64


def head_image(
    lesion: tuple[slice, slice] | None = (slice(20, 28), slice(14, 22)),
    dark: tuple[slice, slice] | None = None,
):
    """A grey disc (the head) on black, with a bright square lesion; and the lesion's mask.

    ``dark`` adds a black patch (a ventricle, say) in the brain: erasing it changes the image
    about as much as erasing the lesion, which plain grey brain does not.
    """
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    disc = (yy - 31.5) ** 2 + (xx - 31.5) ** 2 < 26**2
    image = np.where(disc, 100.0, 0.0).astype(np.float32)
    mask = np.zeros((SIZE, SIZE), bool)
    if lesion is not None:
        mask[lesion] = True
        image[mask] = 230.0
    if dark is not None:
        image[dark] = 0.0
    return np.repeat(image[..., None], 3, axis=-1), mask, disc


def bright_spot_model() -> keras.Model:
    """Class 0 (glioma) exactly when the image holds pixels above 200: the lesion and nothing else."""
    inp = keras.Input((SIZE, SIZE, 3))
    bright = layers.ReLU(threshold=200.0)(inp)  # 0 below 200
    pooled = layers.GlobalAveragePooling2D()(bright)
    logits = layers.Dense(len(config.CLASS_NAMES), name=config.LOGITS_LAYER)(pooled)
    model = keras.Model(inp, layers.Activation("softmax")(logits))
    kernel = np.zeros((3, len(config.CLASS_NAMES)), np.float32)
    kernel[:, 0] = 1.0  # about 11 for the 8x8 lesion, 0 without it
    bias = np.array([0.0, 3.0, 0.0, 0.0], np.float32)  # meningioma without a lesion
    model.get_layer(config.LOGITS_LAYER).set_weights([kernel, bias])
    return model


def test_brain_region_is_the_filled_head_silhouette():
    image, _, disc = head_image()
    image[30:34, 30:34] = 0.0  # a dark hole inside the head is still head
    region = erasure.brain_region(image)
    assert (region & disc).sum() / (region | disc).sum() > 0.9  # the blur moves the edge a pixel
    assert region[31, 31]
    assert not erasure.brain_region(np.zeros((SIZE, SIZE, 3))).any()


def test_control_is_the_mirrored_lesion_when_it_fits():
    _, mask, disc = head_image()
    control = erasure.control_region(mask, disc & ~mask)
    assert control.sum() == mask.sum()
    np.testing.assert_array_equal(control, mask[:, ::-1])


def test_control_moves_elsewhere_when_the_mirror_touches_the_lesion():
    _, mask, disc = head_image(lesion=(slice(28, 36), slice(28, 36)))  # on the midline
    control = erasure.control_region(mask, disc & ~mask, seed=3)
    assert control is not None and control.sum() == mask.sum()
    grown = np.zeros_like(mask)
    grown[25:39, 25:39] = True  # 3 px of margin
    assert not (control & grown).any()
    assert disc[control].mean() >= 0.9
    again = erasure.control_region(mask, disc & ~mask, seed=3)
    np.testing.assert_array_equal(again, control)  # seeded


def test_no_control_when_the_lesion_fills_the_brain():
    _, mask, disc = head_image(lesion=(slice(8, 56), slice(8, 56)))
    assert erasure.control_region(mask, disc & ~mask) is None
    assert erasure.control_region(np.zeros_like(mask), disc) is None


def test_erase_fills_the_region_from_its_surroundings_only():
    image, mask, _ = head_image()
    erased = erasure.erase(image, mask)
    assert erased.dtype == np.float32 and erased.shape == image.shape
    assert np.abs(erased[mask] - 100.0).max() < 15.0  # tissue grey, not the lesion's 230
    far = np.ones_like(mask)
    far[10:38, 4:32] = False
    np.testing.assert_array_equal(erased[far], image[far])


def test_pixel_change_is_the_mean_absolute_change_over_the_image():
    image = np.zeros((4, 5, 3), np.float32)
    erased = image.copy()
    erased[0, 0] = 60.0  # 3 of 60 values change by 60
    erased[1, 1, 0] = -30.0  # and one by 30 (either sign)
    assert erasure.pixel_change(image, erased) == pytest.approx((3 * 60 + 30) / 60)
    with pytest.raises(ValueError, match="differ in shape"):
        erasure.pixel_change(image, erased[:2])


def test_erase_changes_only_the_grown_region_and_blends_linearly():
    image, mask, _ = head_image()
    image = image + 0.3  # off the 8-bit grid cv2.inpaint works on
    full = erasure.erase(image, mask)
    grown = np.zeros_like(mask)
    grown[18:30, 12:24] = True  # the 8x8 lesion grown by 2 px
    np.testing.assert_array_equal(full[~grown], image[~grown])  # not rounded
    half = erasure.erase(image, mask, strength=0.5)
    np.testing.assert_allclose(half[mask], (image[mask] + full[mask]) / 2, atol=1e-4)
    assert erasure.pixel_change(image, half) == pytest.approx(
        0.5 * erasure.pixel_change(image, full), rel=1e-5
    )
    with pytest.raises(ValueError, match="strength"):
        erasure.erase(image, mask, strength=1.5)


def test_a_matched_control_changes_the_image_as_much_as_the_lesion_erasure():
    image, mask, disc = head_image(dark=(slice(38, 47), slice(26, 35)))  # the patch: below
    lesion_change = erasure.pixel_change(image, erasure.erase(image, mask))
    # The first placement that fits, the mirror image on plain grey brain, changes the image
    # ~50x less than erasing the lesion does: comparing the two says nothing about the model.
    mirror = erasure.control_region(mask, disc & ~mask)
    assert erasure.pixel_change(image, erasure.erase(image, mirror)) < 0.05 * lesion_change
    matched = erasure.matched_control(image, mask, disc & ~mask, seed=0)
    assert matched is not None and matched.strength == 1.0
    assert abs(matched.change - lesion_change) <= erasure.MATCH_TOLERANCE * lesion_change
    assert matched.region.sum() == mask.sum() and not (matched.region & mask).any()
    assert matched.region[38:47, 26:35].any()  # found on the dark patch, the only structure
    np.testing.assert_array_equal(matched.erased, erasure.erase(image, matched.region))
    assert erasure.pixel_change(image, matched.erased) == matched.change


def test_a_control_that_changes_the_image_more_is_blended_down_to_match():
    # A 10x10 dark patch around the mirror place: its erasure changes the image ~20% more than
    # the lesion's, and nothing else in the brain changes it enough.
    image, mask, disc = head_image(dark=(slice(19, 29), slice(41, 51)))
    lesion_change = erasure.pixel_change(image, erasure.erase(image, mask))
    matched = erasure.matched_control(image, mask, disc & ~mask, seed=0)
    full = erasure.pixel_change(image, erasure.erase(image, matched.region))
    assert full > (1 + erasure.MATCH_TOLERANCE) * lesion_change
    assert matched.strength == pytest.approx(lesion_change / full)
    assert matched.change == pytest.approx(lesion_change, rel=1e-4)
    np.testing.assert_array_equal(matched.region, mask[:, ::-1])  # the mirror, scaled


def test_no_matched_control_when_no_brain_changes_as_much_as_the_lesion():
    image, mask, disc = head_image()  # plain grey brain: every erasure there changes ~nothing
    assert erasure.control_region(mask, disc & ~mask) is not None  # places fit, ...
    assert erasure.matched_control(image, mask, disc & ~mask) is None  # ... none matches


def test_a_model_that_reads_the_lesion_loses_it_only_when_the_lesion_is_erased():
    model = bright_spot_model()
    images, masks = [], []
    for lesion, dark in (
        ((slice(20, 28), slice(14, 22)), (slice(20, 29), slice(42, 51))),  # at the mirror
        ((slice(36, 44), slice(40, 48)), (slice(14, 23), slice(24, 33))),  # elsewhere
    ):
        image, mask, _ = head_image(lesion, dark)  # dark patches: no evidence for the model
        images.append(image)
        masks.append(mask)
    plain, plain_mask, _ = head_image()
    table, batches = erasure.erasure_test(
        model, np.stack([*images, plain]), [*masks, plain_mask], [0, 0, 0], seed=1
    )
    assert table["control"].tolist() == [True, True, False]  # plain brain: nothing to match
    usable = table[table["control"]]
    gap = (usable["pixel_change_control"] - usable["pixel_change_lesion"]).abs()
    assert (gap <= erasure.MATCH_TOLERANCE * usable["pixel_change_lesion"]).all()
    assert (table["pixel_change_lesion"] > 1.0).all()
    assert np.isnan(table["pixel_change_control"][2]) and np.isnan(table["control_strength"][2])
    assert (table["p_original"] > 0.9).all()
    assert (table["p_lesion_erased"] < 0.1).all()  # the lesion was the evidence
    np.testing.assert_allclose(usable["p_control_erased"], usable["p_original"], atol=1e-4)
    assert (usable["pred_lesion_erased"] == 1).all() and (usable["pred_control_erased"] == 0).all()
    assert batches["lesion"].shape == (3, SIZE, SIZE, 3)
    np.testing.assert_array_equal(batches["control"][2], plain)  # no control: the original
    summary = erasure.summarise_erasure(table)
    assert set(summary) == {"glioma"}
    glioma = summary["glioma"]
    assert glioma["n"] == 2 and glioma["no_control"] == 1
    assert glioma["drop_lesion"] > 0.8 and abs(glioma["drop_control"]) < 1e-3
    assert glioma["changed_lesion"] == 1.0 and glioma["changed_control"] == 0.0
    assert glioma["lesion_costs_more"] == 1.0
    assert glioma["lesion_minus_control"] == pytest.approx(
        glioma["drop_lesion"] - glioma["drop_control"]
    )
    assert 0.8 < glioma["lesion_minus_control_low"] <= glioma["lesion_minus_control_high"]
    assert glioma["pixel_change_control"] == pytest.approx(
        glioma["pixel_change_lesion"], rel=erasure.MATCH_TOLERANCE
    )


def _table(drop_lesion, drop_control, *, strength=None, label="glioma") -> pd.DataFrame:
    """A per-image erasure table with the given falls of p(true class); controls everywhere."""
    n = len(drop_lesion)
    return pd.DataFrame(
        {
            "label": label,
            "control": True,
            "p_original": 1.0,
            "p_lesion_erased": 1.0 - np.asarray(drop_lesion, float),
            "p_control_erased": 1.0 - np.asarray(drop_control, float),
            "pred_original": 0,
            "pred_lesion_erased": 0,
            "pred_control_erased": 0,
            "pixel_change_lesion": np.linspace(2.0, 4.0, n),
            "pixel_change_control": np.linspace(1.8, 3.8, n),
            "control_strength": np.ones(n) if strength is None else strength,
        }
    )


def test_summary_pairs_the_falls_with_a_bootstrap_interval_over_images():
    table = _table([0.5, 0.6, 0.7, 0.8], [0.4, 0.4, 0.4, 0.4], strength=[1, 1, 0.8, 1])
    skipped = _table([0.9], [0.0]).assign(control=False, pixel_change_control=np.nan)
    glioma = erasure.summarise_erasure(pd.concat([table, skipped]))["glioma"]
    assert glioma["n"] == 4 and glioma["no_control"] == 1  # the skipped image counts nowhere
    assert glioma["lesion_minus_control"] == pytest.approx(0.25)  # mean of 0.1, 0.2, 0.3, 0.4
    low, high = glioma["lesion_minus_control_low"], glioma["lesion_minus_control_high"]
    assert 0.1 <= low < 0.25 < high <= 0.4
    assert glioma["pixel_change_lesion"] == pytest.approx(3.0)
    assert glioma["pixel_change_control"] == pytest.approx(2.8)
    assert glioma["control_scaled"] == 0.25
    # equal differences on every image: nothing to resample, the interval is the point
    same = erasure.summarise_erasure(_table([0.3] * 5, [0.1] * 5))["glioma"]
    assert same["lesion_minus_control_low"] == pytest.approx(0.2)
    assert same["lesion_minus_control_high"] == pytest.approx(0.2)


def test_the_paired_interval_has_the_width_of_a_mean_over_images():
    rng = np.random.default_rng(7)
    difference = rng.normal(0.1, 0.2, 400)  # lesion minus control, per image
    glioma = erasure.summarise_erasure(_table(0.5 + difference, np.full(400, 0.5)))["glioma"]
    low, high = glioma["lesion_minus_control_low"], glioma["lesion_minus_control_high"]
    mean = difference.mean()
    assert glioma["lesion_minus_control"] == pytest.approx(mean)
    assert abs((low + high) / 2 - mean) < 0.1 * (high - low)  # about centred on it
    normal_width = 2 * 1.96 * difference.std() / np.sqrt(400)
    assert high - low == pytest.approx(normal_width, rel=0.15)
    wider = erasure.summarise_erasure(_table(0.5 + difference, np.full(400, 0.5)), level=0.99)
    assert (
        wider["glioma"]["lesion_minus_control_high"] - wider["glioma"]["lesion_minus_control_low"]
        > high - low
    )
    with pytest.raises(ValueError, match="level"):
        erasure.summarise_erasure(_table([0.1], [0.0]), level=1.0)


def test_mismatched_inputs_are_refused():
    image, mask, _ = head_image()
    with pytest.raises(ValueError, match="differ in length: 1, 2, 1"):
        erasure.erasure_test(bright_spot_model(), image[None], [mask, mask], [0])


def test_examples_figure_titles_each_panel_with_the_true_class_probability():
    import matplotlib

    matplotlib.use("Agg")
    from brainmri.plotting import explain as pex

    image, mask, _ = head_image()
    table, erased = erasure.erasure_test(bright_spot_model(), image[None], [mask], [0])
    fig = pex.plot_erasure_examples(image[None], erased, table, [0])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("original\np(glioma) = 1.00")
    assert titles[1].startswith("lesion erased\np(glioma) = 0.0")
    assert titles[2].startswith("control erased\np(glioma) = 1.00")
    with pytest.raises(ValueError, match="at least one image"):
        pex.plot_erasure_examples(image[None], erased, table, [])


def test_context_test_separates_a_lesion_reader_from_a_margin_reader():
    model = bright_spot_model()  # class 0 for any pixel above 200, wherever it is
    with_lesion, _, _ = head_image()
    marked, _, _ = head_image(lesion=None)
    marked[1:4, 1:12] = 255.0  # a white text mark in the black margin, outside the head
    table = erasure.context_test(model, np.stack([with_lesion, marked]), [0, 0])
    lesion, mark = table.iloc[0], table.iloc[1]
    # The lesion is brain: kept by the brain-only view, gone from the outside-only view.
    assert (lesion.pred_original, lesion.pred_brain_only, lesion.pred_outside_only) == (0, 0, 1)
    # The mark is outside: the reverse. A class read from outside the brain is a shortcut.
    assert (mark.pred_original, mark.pred_brain_only, mark.pred_outside_only) == (0, 1, 0)
    assert 0.4 < lesion.brain_share < 0.6  # the head's disc: pi 26^2 / 64^2
    summary = erasure.summarise_context(table)
    assert summary["all"] == {
        "n": 2,
        "accuracy_original": 1.0,
        "accuracy_brain_only": 0.5,
        "accuracy_outside_only": 0.5,
    }
    with pytest.raises(ValueError, match="differ in length: 2, 1"):
        erasure.context_test(model, np.stack([with_lesion, marked]), [0])


def test_a_class_without_any_control_region_has_undefined_means():
    image, mask, _ = head_image(lesion=(slice(8, 56), slice(8, 56)))  # fills the head
    table, _ = erasure.erasure_test(bright_spot_model(), image[None], [mask], [0])
    assert not table["control"].any()
    summary = erasure.summarise_erasure(table)["glioma"]
    assert summary["n"] == 0 and summary["no_control"] == 1
    assert summary["drop_lesion"] is None and summary["lesion_costs_more"] is None
    assert summary["lesion_minus_control_low"] is None and summary["pixel_change_lesion"] is None


def test_the_index_page_shows_the_paired_interval_and_pixel_changes():
    from brainmri.reports import index

    summary = erasure.summarise_erasure(_table([0.5, 0.6, 0.7, 0.8], [0.4, 0.4, 0.4, 0.4]))
    row = index.erasure_table({"gradcam": {"erasure": summary}}).iloc[0]
    assert row["lesion minus control"] == 0.25 and row["no matched control"] == 0
    assert 0.1 <= row["95% low"] < 0.25 < row["95% high"] <= 0.4
    assert row["mean pixel change, lesion"] == 3.0 and row["mean pixel change, control"] == 2.8
