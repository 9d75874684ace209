"""The exported SavedModel prepares whole scans itself (issue 35, item 2): brainmri.serving's
TensorFlow twin of brain_box, crop_square and the INTER_AREA resize, compared with OpenCV's
on synthetic heads and (marked realdata) on the Kaggle Testing scans, and the served
probabilities compared with predict_scans'."""

from __future__ import annotations

from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest

from brainmri import config, predict, runs, serving
from brainmri import model as mdl
from brainmri.config import CLASS_NAMES
from brainmri.data import images, scans
from brainmri.phantom import render_slice

tf = pytest.importorskip("tensorflow")


def _sharp_model(size: int, calibration: list[Path]) -> keras.Model:
    """The smoke profile's tiny CNN, untrained, its logits scaled by 30 and centred on the
    calibration scans: probabilities far from uniform whose class moves with the input, so a
    difference in preparation shows."""
    params = config.flat_params(config.load_profile("smoke"))
    keras.utils.set_random_seed(5)
    model = mdl.build_model({**params, "image_size": size})
    x = np.stack([scans.read_scan(p, size) for p in calibration] or [np.zeros((size, size, 3))])
    x = x.astype(np.float32)
    mean = keras.ops.convert_to_numpy(mdl.logits_model(model)(x, training=False)).mean(0)
    layer = model.get_layer(mdl.LOGITS_LAYER)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 30.0, (bias - mean) * 30.0])
    return model


@pytest.fixture(scope="module")
def tf_box():
    spec = tf.TensorSpec([None, None, 3], tf.uint8)
    return tf.function(lambda x: tf.stack(serving.brain_box(x)), input_signature=[spec])


def _head_scan(seed: int) -> np.ndarray:
    """A phantom head on a black canvas of another size and aspect ratio, off centre, with a
    small bright label (text-like) that the opening or the tenth-of-the-area rule drops."""
    rng = np.random.default_rng(seed)
    head, _ = render_slice(CLASS_NAMES[seed % 4], rng, int(rng.integers(64, 120)))
    height, width = int(rng.integers(130, 200)), int(rng.integers(130, 200))
    canvas = np.zeros((height, width), np.uint8)
    top = int(rng.integers(-10, height - len(head) + 10))
    left = int(rng.integers(-10, width - len(head) + 10))
    target = canvas[max(0, top) : top + len(head), max(0, left) : left + len(head)]
    target[...] = head[max(0, -top) :, max(0, -left) :][: target.shape[0], : target.shape[1]]
    canvas[3:9, width - 20 : width - 4] = 200  # a label: thin, bright
    if seed % 3 == 0:
        canvas[height - 14 : height - 6, 2:10] = 180  # a speck that survives the opening
    return cv2.cvtColor(canvas, cv2.COLOR_GRAY2RGB)


def _iou(a, b) -> float:
    (x0, y0, s0), (x1, y1, s1) = a, b
    ix = max(0, min(x0 + s0, x1 + s1) - max(x0, x1))
    iy = max(0, min(y0 + s0, y1 + s1) - max(y0, y1))
    return ix * iy / (s0 * s0 + s1 * s1 - ix * iy)


def test_the_tf_box_is_brain_box_on_synthetic_heads_and_edge_cases(tf_box):
    cases = [_head_scan(seed) for seed in range(12)]
    blank = np.zeros((40, 70, 3), np.uint8)
    ring = np.zeros((120, 120), np.uint8)
    cv2.circle(ring, (60, 60), 45, 150, 12)  # a hole holding a small region: not its own contour
    cv2.circle(ring, (60, 60), 6, 150, -1)
    cv2.rectangle(ring, (0, 100), (30, 119), 150, -1)  # touches the image's edge, > a tenth
    cases += [blank, cv2.cvtColor(ring, cv2.COLOR_GRAY2RGB)]
    colour = _head_scan(20)
    colour[..., 0] //= 2  # unequal channels: OpenCV's fixed-point grey level
    cases.append(colour)
    for rgb in cases:
        assert tuple(int(v) for v in tf_box(rgb).numpy()) == images.brain_box(rgb)
    assert images.brain_box(blank) == (0, -15, 70)  # the whole image's square


def test_the_tf_blur_and_resize_match_opencv():
    colours = np.random.default_rng(0).integers(0, 256, (400, 500, 3), dtype=np.uint8)
    ours = serving.grey_level(tf.constant(colours)).numpy()
    assert np.array_equal(ours, cv2.cvtColor(colours, cv2.COLOR_RGB2GRAY))  # bit-exact
    rgb = _head_scan(3)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    blurred = serving.gaussian_blur_5(serving.grey_level(tf.constant(rgb))).numpy()
    assert np.array_equal(blurred, cv2.GaussianBlur(grey, (5, 5), 0))  # bit-exact
    for size in (48, 64, 150, 300):  # shrink, shrink one side and enlarge the other, enlarge
        ours = serving.resize(tf.constant(rgb), size).numpy().astype(int)
        theirs = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA).astype(int)
        assert np.abs(ours - theirs).max() <= 1 and np.abs(ours - theirs).mean() < 0.2
    for crop in (True, False):  # the whole preparation, as data.images.fit_image
        ours = serving.prepare_scan(tf.constant(rgb), 48, crop=crop).numpy().astype(int)
        assert np.abs(ours - images.fit_image(rgb, 48, crop=crop)).max() <= 1


def _served(target: Path, files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """The SavedModel's probabilities and boxes of each file, one whole scan per call."""
    loaded = tf.saved_model.load(str(target))
    probabilities, boxes = [], []
    for path in files:
        scan = images.read_rgb(path)  # the file decoded as predict decodes it, nothing else
        out = loaded.signatures["serve"](scans=tf.constant(scan[None]))
        probabilities.append(out["probabilities"].numpy()[0])
        boxes.append(tuple(out["boxes"].numpy()[0]))
    return np.array(probabilities), np.array(boxes)


def _predicted(files: list[Path], model, crop: bool, out: Path) -> np.ndarray:
    info = runs.RunInfo(Path("model.keras"), "0" * 64, crop_to_brain=crop)
    table = predict.predict_scans(files, model, info, out, overlays=False, progress=False)
    assert (table["status"] == "ok").all()
    return table[[f"p_{c}" for c in CLASS_NAMES]].to_numpy(float)


def _agreement(served: np.ndarray, expected: np.ndarray) -> tuple[float, float, float]:
    """(share of the same class, share within 1e-3 in every probability, max |dp|)."""
    same = float((served.argmax(1) == expected.argmax(1)).mean())
    delta = np.abs(served - expected).max(1)
    return same, float((delta <= 1e-3).mean()), float(delta.max())


@pytest.mark.parametrize("crop", [True, False])
def test_the_savedmodel_serves_whole_scans_as_predict_scans(tmp_path, crop):
    files = []
    for seed in range(16):
        path = tmp_path / f"scan{seed}.png"
        cv2.imwrite(str(path), _head_scan(seed)[..., 0])
        files.append(path)
    model = _sharp_model(48, files)
    target = predict.export_savedmodel(model, tmp_path / "saved", crop_to_brain=crop)
    served, boxes = _served(target, files)
    expected = _predicted(files, model, crop, tmp_path / "predicted")
    same, close, worst = _agreement(served, expected)
    assert same == 1.0 and close == 1.0, (same, close, worst)
    assert len(set(expected.argmax(1))) > 1  # the class moves with the input
    for path, box in zip(files, boxes, strict=True):
        rgb = images.read_rgb(path)
        if crop:
            assert tuple(box) == images.brain_box(rgb)
        else:
            side = max(rgb.shape[:2])
            assert tuple(box) == ((rgb.shape[1] - side) // 2, (rgb.shape[0] - side) // 2, side)
    # a batch of scans of one size is prepared scan by scan, as one call per scan
    batch = np.stack([_head_scan(1)] * 3)
    loaded = tf.saved_model.load(str(target))
    together = loaded.signatures["serve"](scans=tf.constant(batch))["probabilities"].numpy()
    alone = loaded.signatures["serve"](scans=tf.constant(batch[:1]))["probabilities"].numpy()
    assert np.allclose(together, alone, atol=1e-6)


def test_serve_prepared_keeps_the_images_at_the_input_size(tmp_path):
    model = _sharp_model(32, [])
    target = predict.export_savedmodel(model, tmp_path / "saved", crop_to_brain=True)
    batch = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    loaded = tf.saved_model.load(str(target))
    served = loaded.serve_prepared(tf.constant(batch))["probabilities"].numpy()
    expected = keras.ops.convert_to_numpy(model(batch.astype(np.float32), training=False))
    assert np.allclose(served, expected, atol=1e-6)


def _testing_sample(real_data: Path, step: int) -> list[Path]:
    return sorted((real_data / "Testing").glob("*/*.jpg"))[::step]


@pytest.mark.slow  # all 1,311 Testing scans: 25 s, too long for the edit loop
@pytest.mark.realdata
def test_the_tf_box_is_brain_box_on_real_scans(real_data, tf_box):
    files = _testing_sample(real_data, 10)  # 132 of the 1,311 Testing scans
    ious, near = [], []
    for path in files:
        rgb = images.read_rgb(path)
        ours, theirs = tuple(int(v) for v in tf_box(rgb).numpy()), images.brain_box(rgb)
        ious.append(_iou(ours, theirs))
        near.append(max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) <= 2)
    # measured on all 1,311 Testing scans: every box identical (mean IoU 1.0, all within 0 px)
    assert np.mean(ious) > 0.999 and np.mean(near) >= 0.99, (np.mean(ious), np.mean(near))


@pytest.mark.slow  # a SavedModel export and 66 real scans: 15 s
@pytest.mark.realdata
def test_the_savedmodel_serves_real_scans_as_predict_scans(real_data, tmp_path):
    files = _testing_sample(real_data, 20)  # 66 scans, mostly 512x512, some other sizes
    model = _sharp_model(64, files)
    target = predict.export_savedmodel(model, tmp_path / "saved", crop_to_brain=True)
    served, boxes = _served(target, files)
    expected = _predicted(files, model, True, tmp_path / "predicted")
    same, close, worst = _agreement(served, expected)
    # measured on these 66 (this model at 128 px): the same class for all 66, max |dp| 1.0e-6
    assert same >= 0.99 and close >= 0.99, (same, close, worst)
    assert [tuple(b) for b in boxes] == [images.brain_box(images.read_rgb(p)) for p in files]
    frame = pd.DataFrame(np.abs(served - expected), columns=CLASS_NAMES)
    assert frame.to_numpy().max() < 0.05
