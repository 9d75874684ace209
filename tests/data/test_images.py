"""Image decoding: every mode normalised to uint8 RGB, unreadable files named, light imports."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from brainmri import data


def test_load_image_normalises_every_mode(tmp_path, picture):
    deep = tmp_path / "deep.png"
    cv2.imwrite(str(deep), np.array([[0, 32768], [65535, 1000]], np.uint16))
    out = data.load_image(deep, 2)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[..., 0].tolist() == [[0, 128], [255, 4]]  # scaled by 255/65535
    assert (out[..., 0] == out[..., 2]).all()
    # 12-bit data in a 16-bit file uses the full grey range, not 1/16 of it.
    cv2.imwrite(str(deep), np.array([[0, 2048], [4095, 100]], np.uint16))
    assert data.load_image(deep, 2)[..., 0].tolist() == [[0, 128], [255, 6]]

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 2] = 200  # red, in OpenCV's BGRA order
    rgba[0, :, 3] = 255
    rgba[1, :, 3] = 0
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    out = data.load_image(tmp_path / "rgba.png", 2)
    assert out[0].tolist() == [[200, 0, 0]] * 2  # opaque: its colour, as RGB
    assert out[1].tolist() == [[0, 0, 0]] * 2  # transparent: black

    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    assert data.load_image(tmp_path / "palette.png", 2).tolist() == [[[0, 255, 0]] * 2] * 2

    grey = picture(5, size=40)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    out = data.load_image(tmp_path / "grey.png", 20)
    assert out.shape == (20, 20, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    expected = cv2.resize(grey, (20, 20), interpolation=cv2.INTER_AREA)
    assert np.array_equal(out[..., 0], expected)

    colour = picture(6, size=32, colour=True)  # BGR as OpenCV writes it
    cv2.imwrite(str(tmp_path / "colour.png"), colour)
    assert np.array_equal(data.load_image(tmp_path / "colour.png", 32), colour[..., ::-1])


def test_load_image_names_the_unreadable_file(tmp_path, write_file, jpeg, picture):
    good = jpeg(picture(1))
    cases = {
        "empty.jpg": b"",
        "text.jpg": b"hello",
        "truncated.jpg": good[: len(good) // 2],
    }
    for name, payload in cases.items():
        path = write_file(tmp_path / name, payload)
        with pytest.raises(ValueError, match=name):
            data.load_image(path, 8)
    with pytest.raises(ValueError, match="missing.jpg"):
        data.load_image(tmp_path / "missing.jpg", 8)


def test_importing_the_input_pipeline_leaves_out_scan_and_download_libraries():
    # TensorFlow imports SciPy and scikit-learn on its own, so after brainmri.inputs only
    # imagehash and the Kaggle clients are avoidable; brainmri.data alone must avoid all five.
    code = (
        "import json, sys\n"
        "names = ('imagehash', 'scipy', 'sklearn', 'kaggle', 'opendatasets')\n"
        "def loaded():\n"
        "    return sorted(n for n in names if n in sys.modules)\n"
        "import brainmri.data\n"
        "after_data = loaded()\n"
        "import brainmri.inputs\n"
        "print(json.dumps([after_data, loaded()]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    after_data, after_inputs = json.loads(run.stdout.strip().splitlines()[-1])
    assert after_data == []
    assert not {"imagehash", "kaggle", "opendatasets"} & set(after_inputs), after_inputs


def _head(shape=(60, 80), box=(10, 20, 30, 24)):
    """A dark frame with one bright 'head' rectangle (x, y, w, h) and a speck of text."""
    image = np.zeros(shape, np.uint8)
    x, y, w, h = box
    image[y : y + h, x : x + w] = 150
    image[2, 2] = 255  # a single bright pixel: erosion removes it
    return image


def test_brain_box_is_the_square_around_the_largest_bright_region():
    x0, y0, side = data.brain_box(_head())
    # the 30x24 head at (10, 20), one pixel wider each side where the blur lifts its edge above
    # the threshold; the square is centred on it (4 rows above, 4 below)
    assert (x0, y0, side) == (9, 16, 32)
    rgb = cv2.cvtColor(_head(), cv2.COLOR_GRAY2RGB)
    assert data.brain_box(rgb) == (x0, y0, side)
    # nothing above the threshold: the square around the whole image, centred
    assert data.brain_box(np.full((40, 50), 20, np.uint8)) == (0, -5, 50)


def test_crop_square_pads_with_black_beyond_the_edge():
    image = np.arange(1, 26, dtype=np.uint8).reshape(5, 5)
    assert data.crop_square(image, (1, 1, 2)).tolist() == [[7, 8], [12, 13]]
    out = data.crop_square(image, (-1, 3, 3))
    assert out.tolist() == [[0, 16, 17], [0, 21, 22], [0, 0, 0]]
    assert data.crop_square(np.ones((4, 4, 3), np.uint8), (0, 0, 6)).shape == (6, 6, 3)
    assert data.crop_square(image, (3, 0, 3, 2)).tolist() == [[4, 5, 0], [9, 10, 0]]


def test_crop_cuts_image_and_mask_alike(tmp_path):
    """A cropped image fills the frame with the head; its mask is cut by the same square."""
    image = _head(shape=(100, 100), box=(30, 40, 40, 40))
    image[50:70, 40:60] = 250  # the 'lesion'
    cv2.imwrite(str(tmp_path / "scan.png"), image)
    plain = data.load_image(tmp_path / "scan.png", 40)
    cropped = data.load_image(tmp_path / "scan.png", 40, crop=True)
    assert plain[..., 0].mean() < 40 < cropped[..., 0].mean()  # mostly black, then mostly head
    assert np.array_equal(cropped, data.load_image(tmp_path / "scan.png", 40, crop=True))
    lesion = (image == 250).astype(np.uint8) * 255
    x0, y0, side = data.brain_box(image)
    assert np.array_equal(
        data.crop_like_image(lesion, tmp_path / "scan.png"), lesion[y0 : y0 + side, x0 : x0 + side]
    )

    # a mask at another size is cut by the scaled square: the same region once resized
    def resized(mask):
        return cv2.resize(mask, (40, 40), interpolation=cv2.INTER_NEAREST) > 127

    full = resized(data.crop_like_image(lesion, tmp_path / "scan.png"))
    half = cv2.resize(lesion, (50, 50), interpolation=cv2.INTER_NEAREST)
    cut = resized(data.crop_like_image(half, tmp_path / "scan.png"))
    assert (cut & full).sum() / (cut | full).sum() > 0.8
    # a mask of another aspect ratio (100x100 image, 60x120 mask): the image's square maps to
    # a rectangle of the mask, which resizes onto the same region
    wide = cv2.resize(lesion, (120, 60), interpolation=cv2.INTER_NEAREST)
    cut = resized(data.crop_like_image(wide, tmp_path / "scan.png"))
    assert (cut & full).sum() / (cut | full).sum() > 0.8
    with pytest.raises(ValueError, match="missing.png"):
        data.crop_like_image(lesion, tmp_path / "missing.png")


def test_encode_png_round_trips_rgb_pixels_and_refuses_a_non_image():
    from brainmri.data.images import decode_image_bytes, encode_png

    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red: a BGR mix-up would read back blue
    rgb[2:4, 3:5] = (10, 120, 250)
    pixels, mode = decode_image_bytes(encode_png(rgb))
    assert mode == "RGB" and np.array_equal(pixels, rgb)
    with pytest.raises(ValueError, match=r"encode_png: .*\(0, 0, 3\)"):
        encode_png(np.zeros((0, 0, 3), np.uint8))
