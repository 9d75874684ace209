"""The default profile's whole code path (EfficientNetB1 at 240 px) on real images, offline.

Keras downloads B1's ImageNet weights on first use, which cannot happen here; the profile's
other mechanism, ``model.weights: <path>``, loads a local file instead. A randomly initialised
no-top B1 saved to a file stands in for the ImageNet one: the test is about the code path
(load, train, evaluate, explain), not about accuracy.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from brainmri import evaluation, explain, inputs, training
from brainmri import model as mdl
from brainmri.config import CLASS_NAMES, load_profile

pytestmark = pytest.mark.realdata


def _files(real_data, split: str, per_class: int, skip: int = 0) -> tuple[list, list[int]]:
    files, labels = [], []
    for index, name in enumerate(CLASS_NAMES):
        chosen = sorted((real_data / split / name).glob("*.jpg"))[skip : skip + per_class]
        files += chosen
        labels += [index] * len(chosen)
    return files, labels


@pytest.fixture(scope="module")
def b1_weights(tmp_path_factory):
    """A no-top EfficientNetB1 weights file whose stem kernel is known."""
    source = keras.applications.EfficientNetB1(
        include_top=False, weights=None, input_shape=(240, 240, 3)
    )
    stem = source.get_layer("stem_conv")
    stem.kernel.assign(np.full(stem.kernel.shape, 0.01, dtype="float32"))
    path = tmp_path_factory.mktemp("weights") / "b1_notop.weights.h5"
    source.save_weights(path)
    return path


@pytest.mark.slow
def test_reference_recipe_trains_evaluates_and_explains_with_a_local_weights_file(
    tmp_path, real_data, project_root, b1_weights
):
    p = load_profile("default", root=project_root)
    # XLA compiling B1's training step takes a minute here and is no part of the code path under test.
    cfg = {**p["run"], **p["model"], **p["train"], "weights": str(b1_weights), "epochs": 1}
    cfg["jit_compile"] = "never"
    model = mdl.build_model(cfg, project_root)
    assert model.input_shape == (None, 240, 240, 3)
    np.testing.assert_allclose(model.get_layer("stem_conv").get_weights()[0], 0.01)

    train = inputs.make_dataset(
        *_files(real_data, "Training", 2),
        240,
        cfg["batch_size"],
        shuffle=True,
        seed=cfg["seed"],
        augment=inputs.augmentation(cfg, cfg["seed"]),
    )
    val = inputs.make_dataset(*_files(real_data, "Training", 1, skip=2), 240, cfg["batch_size"])
    files = {"model_path": tmp_path / "model.keras", "history_path": tmp_path / "history.csv"}
    trained, history, status = training.train_or_resume(
        model, train, val, cfg, manifest_sha256="reference", state_dir=tmp_path / "s", **files
    )
    assert status == "fresh" and len(history) == 1 and np.isfinite(history["loss"]).all()

    test_files, test_labels = _files(real_data, "Testing", 2)
    logits, probs = mdl.predict_files(trained, test_files, batch_size=8)
    block = evaluation.evaluate_split(
        np.array(test_labels),
        probs,
        logits,
        [str(f) for f in test_files],
        n_resamples=20,
        seed=0,
        n_bins=5,
        temperature=1.0,
    )
    assert block["summary"]["n"] == len(test_files)

    assert explain.find_target_layer(trained) == "top_activation"
    maps = explain.gradcam(trained, inputs.load_batch(test_files[:2], 240))
    assert maps.shape == (2, 240, 240) and np.isfinite(maps).all()


# Keras warns once per layer it cannot match before it raises on the first misfit shape.
@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")
def test_reference_recipe_names_a_weights_file_of_another_backbone(tmp_path, project_root):
    other = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(96, 96, 3))
    path = tmp_path / "mobilenet.weights.h5"
    other.save_weights(path)
    params = {**load_profile("default", root=project_root)["model"], "weights": str(path)}
    with pytest.raises(mdl.WeightsUnavailableError, match="mobilenet.weights.h5.*efficientnet_b1"):
        mdl.build_model(params)
