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
