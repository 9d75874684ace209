"""brainmri.reports.notebooks: TensorFlow's start-up noise dropped, figures kept with alt texts."""

from __future__ import annotations

import base64
import re

import cv2
import matplotlib.pyplot as plt
import nbformat
import numpy as np
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from brainmri.reports import (
    clean_notebook_outputs,
    drop_library_noise,
    embedded_images,
    export_notebook_html,
)

# Lines as TensorFlow 2.21 writes them on a CPU machine (copied from an executed notebook).
NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796019021.447410   16553 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n"
    "E0000 00:00:1796019025.582524   16553 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
    "I0000 00:00:1796026345.351880   30179 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.\n"
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    "with the appropriate compiler flags.\n"
)
REAL = (
    "/x/keras/src/trainers/trainer.py:74: UserWarning: something real happened\n"
    "E0000 00:00:1796019025.582524   16553 op_kernel.cc:1830] OP_REQUIRES failed: real error\n"
)


def _png(seed: int) -> str:
    image = np.random.default_rng(seed).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    return base64.b64encode(cv2.imencode(".png", image)[1].tobytes()).decode()


def _executed_notebook(path):
    nb = new_notebook()
    cell = new_code_cell("import tensorflow")
    cell.outputs = [
        new_output("stream", name="stderr", text=NOISE),
        new_output("stream", name="stderr", text=NOISE + REAL),
        new_output("stream", name="stdout", text="trained\n"),
    ]
    figure = new_code_cell("save_figure(fig, folder, 'eval_roc')")
    figure.outputs = [
        new_output(
            "display_data",
            data={"image/png": _png(0), "text/plain": "<figure eval_roc>"},
            metadata={"image/png": {"alt": "eval_roc"}},
        ),
        new_output("display_data", data={"image/png": _png(1), "text/plain": "<Figure>"}),
    ]
    nb.cells = [new_markdown_cell("# Report"), cell, figure]
    nbformat.write(nb, path)
    return path


def test_noise_lines_go_and_real_warnings_and_errors_stay():
    assert drop_library_noise(NOISE) == ""
    assert drop_library_noise(NOISE + REAL) == REAL
    assert drop_library_noise(REAL + NOISE) == REAL


def test_clean_notebook_outputs_rewrites_only_stderr(tmp_path):
    path = _executed_notebook(tmp_path / "03_train.ipynb")
    clean_notebook_outputs(path)
    outputs = nbformat.read(path, as_version=4).cells[1].outputs
    # The all-noise output is gone, the mixed one keeps its real lines, stdout is untouched.
    assert [o.get("name") for o in outputs] == ["stderr", "stdout"]
    assert outputs[0].text == REAL and outputs[1].text == "trained\n"


def test_clean_notebook_outputs_leaves_a_clean_notebook_unchanged(tmp_path):
    path = _executed_notebook(tmp_path / "nb.ipynb")
    clean_notebook_outputs(path)
    before = path.stat().st_mtime_ns, path.read_bytes()
    clean_notebook_outputs(path)
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before


def test_html_embeds_every_figure_as_a_decodable_png_with_its_alt_text(tmp_path):
    path = _executed_notebook(tmp_path / "04_evaluate.ipynb")
    clean_notebook_outputs(path)
    html = export_notebook_html(path, tmp_path / "04_evaluate.html").read_text()
    images = embedded_images(html)
    assert [alt for alt, _ in images] == ["eval_roc", "figure"]
    for _, data in images:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape == (20, 30, 3)
    assert "absl" not in html and "UserWarning: something real happened" in html
    assert "import tensorflow" not in html  # code hidden by default
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="https?://', html)
    plt.close("all")
