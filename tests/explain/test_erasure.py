"""The lesion-erasure test on constructed heads and a model that reads only bright lesions."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from brainmri import config
from brainmri.explain import erasure

SIZE = 64


def head_image(lesion: tuple[slice, slice] | None = (slice(20, 28), slice(14, 22))):
    """A grey disc (the head) on black, with a bright square lesion; and the lesion's mask."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    disc = (yy - 31.5) ** 2 + (xx - 31.5) ** 2 < 26**2
    image = np.where(disc, 100.0, 0.0).astype(np.float32)
    mask = np.zeros((SIZE, SIZE), bool)
    if lesion is not None:
        mask[lesion] = True
        image[mask] = 230.0
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


def test_a_model_that_reads_the_lesion_loses_it_only_when_the_lesion_is_erased():
    model = bright_spot_model()
    images, masks = [], []
    for lesion in ((slice(20, 28), slice(14, 22)), (slice(36, 44), slice(40, 48))):
        image, mask, _ = head_image(lesion)
        images.append(image)
        masks.append(mask)
    table, batches = erasure.erasure_test(model, np.stack(images), masks, [0, 0], seed=1)
    assert table["control"].all()
    assert (table["p_original"] > 0.9).all()
    assert (table["p_lesion_erased"] < 0.1).all()  # the lesion was the evidence
    np.testing.assert_allclose(table["p_control_erased"], table["p_original"], atol=1e-4)
    assert (table["pred_lesion_erased"] == 1).all() and (table["pred_control_erased"] == 0).all()
    assert batches["lesion"].shape == (2, SIZE, SIZE, 3)
    summary = erasure.summarise_erasure(table)
    assert set(summary) == {"glioma"}
    glioma = summary["glioma"]
    assert glioma["n"] == 2 and glioma["no_control"] == 0
    assert glioma["drop_lesion"] > 0.8 and abs(glioma["drop_control"]) < 1e-3
    assert glioma["changed_lesion"] == 1.0 and glioma["changed_control"] == 0.0
    assert glioma["lesion_costs_more"] == 1.0


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
