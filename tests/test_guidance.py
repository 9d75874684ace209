"""brainmri.guidance: the cut at the feature map, the outside-the-lesion share, and that guided
training moves Grad-CAM onto the lesion."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from brainmri import config, guidance, training
from brainmri import model as mdl
from brainmri.explain import cam_functions, gradcam_weights

SIZE = 32  # 4x4 feature map: each cell is an 8x8 block of pixels


def _model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.Rescaling(1 / 255.0)(inp)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(8)(x)
    x = layers.Conv2D(16, 3, padding="same", name="conv2")(x)
    x = layers.Activation("relu", name="top_activation")(x)
    x = layers.GlobalMaxPooling2D(name="global_max_pool")(x)
    x = layers.Dense(16, activation="relu", name="head_dense1")(x)
    x = layers.Dropout(0.1, name="head_dropout1")(x)
    logits = layers.Dense(4, name=config.LOGITS_LAYER)(x)
    return keras.Model(inp, layers.Activation("softmax", name="probs")(logits))


def _batch(n: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)
    y = tf.one_hot(np.arange(n) % 4, 4).numpy()
    return x, y


def _cell_masks(n: int, cells: list[tuple[int, int]]) -> np.ndarray:
    """Masks (n, SIZE, SIZE, 1) covering whole feature-map cells."""
    m = np.zeros((n, SIZE, SIZE, 1), np.float32)
    for r, c in cells:
        m[:, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8] = 1.0
    return m


def test_the_cut_model_computes_the_classifier():
    model = _model()
    features, head = guidance.split_at_feature_map(model)
    assert features.output.shape[1:] == (4, 4, 16)
    x, _ = _batch()
    logits, probs = head(features(x))
    np.testing.assert_allclose(probs, model(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, mdl.logits_model(model)(x), rtol=1e-5, atol=1e-5)
    # the same layers: training one trains the other
    assert {id(w) for w in head.weights} <= {id(w) for w in model.weights}


def test_the_share_is_the_reports_grad_cam_energy_outside_the_mask():
    model = _model()
    features, head = guidance.split_at_feature_map(model)
    x, y = _batch()
    masks = _cell_masks(len(x), [(0, 0), (1, 2), (3, 3)])
    share = guidance.outside_share(head, features(x), y, masks).numpy()
    # the reports' Grad-CAM before upsampling: feature map and gradients of the true class's
    # logit from the explanation code, weighted in numpy
    fmap, grads, _, _ = cam_functions(model, None).gradients(x, tf.constant(y.argmax(1), tf.int32))
    cam = np.maximum(
        (fmap.numpy() * gradcam_weights(fmap.numpy(), grads.numpy())[:, None, None]).sum(-1), 0
    )
    inside = np.zeros((4, 4), bool)
    inside[0, 0] = inside[1, 2] = inside[3, 3] = True
    total = cam.sum((1, 2))
    assert (total > 0).sum() >= 4  # most maps are live (a dead head unit zeroes a class's map)
    expected = np.where(total > 0, cam[:, ~inside].sum(1) / np.maximum(total, 1e-30), 0.0)
    np.testing.assert_allclose(share, expected, atol=1e-3)  # 1e-6 guards the division


def test_the_share_is_zero_without_a_mask_and_inside_a_whole_image_mask():
    model = _model()
    features, head = guidance.split_at_feature_map(model)
    x, y = _batch()
    fmap = features(x)
    assert np.all(guidance.outside_share(head, fmap, y, np.zeros((8, SIZE, SIZE, 1))) == 0)
    everything = np.ones((8, SIZE, SIZE, 1), np.float32)
    np.testing.assert_allclose(guidance.outside_share(head, fmap, y, everything), 0.0, atol=1e-6)
    # a mask and its complement split each map's energy between them
    corner = _cell_masks(8, [(0, 0), (2, 3)])
    share = guidance.outside_share(head, fmap, y, corner).numpy()
    rest = guidance.outside_share(head, fmap, y, 1.0 - corner).numpy()
    live = share + rest > 0  # an all-zero map has nothing outside either
    assert live.sum() >= 4
    np.testing.assert_allclose((share + rest)[live], 1.0, atol=1e-3)  # 1e-6 guards the division


def test_a_margin_forgives_energy_next_to_the_mask_and_only_there():
    model = _model()
    features, head = guidance.split_at_feature_map(model)
    x, y = _batch()
    fmap = features(x)
    # a lesion filling cell (1, 1): an 8-pixel margin grows it over its neighbours, the cells
    # (0..2, 0..2), but not over row or column 3
    masks = _cell_masks(8, [(1, 1)])
    grown = _cell_masks(8, [(r, c) for r in range(3) for c in range(3)])
    np.testing.assert_allclose(
        guidance.outside_share(head, fmap, y, masks, margin=8),
        guidance.outside_share(head, fmap, y, grown),
        atol=1e-5,
    )
    tight = guidance.outside_share(head, fmap, y, masks).numpy()
    loose = guidance.outside_share(head, fmap, y, masks, margin=8).numpy()
    assert np.all(loose <= tight + 1e-6)  # growing the mask never adds energy outside it
    assert np.sum(loose < tight - 0.1) >= 2  # and here it takes some of it in
    # no mask stays no mask: the margin grows nothing from nothing
    none = np.zeros_like(masks)
    assert np.all(guidance.outside_share(head, fmap, y, none, margin=8) == 0)


def test_centre_cells_count_a_cell_by_the_mask_at_its_centre():
    """cells="centre": a cell is on the lesion when the mask covers its centre pixel (where the
    upsampled map takes the cell's value), however little else of it; otherwise not at all."""
    model = _model()
    features, head = guidance.split_at_feature_map(model)
    x, y = _batch()
    fmap = features(x)
    whole = guidance.outside_share(head, fmap, y, _cell_masks(8, [(1, 2)])).numpy()
    # cell (1, 2) spans rows 8-15 and columns 16-23; its centre is pixel (12, 20)
    dot = np.zeros((8, SIZE, SIZE, 1), np.float32)
    dot[:, 12, 20] = 1.0
    np.testing.assert_allclose(
        guidance.outside_share(head, fmap, y, dot, cells="centre"), whole, atol=1e-6
    )
    # the cell's top-left quadrant: a quarter of its area, but not its centre
    quadrant = np.zeros((8, SIZE, SIZE, 1), np.float32)
    quadrant[:, 8:12, 16:20] = 1.0
    by_area = guidance.outside_share(head, fmap, y, quadrant).numpy()
    by_centre = guidance.outside_share(head, fmap, y, quadrant, cells="centre").numpy()
    live = by_area > 0  # a map with any energy (a dead head unit zeroes a class's map)
    assert live.sum() >= 4
    # all energy counts as outside (1e-6 guards the division)
    np.testing.assert_allclose(by_centre[live], 1.0, atol=1e-3)
    assert np.all(by_centre[~live] == 0)
    assert np.all(by_area[live] < 1.0) and np.all(by_area >= whole - 1e-6)
    with pytest.raises(ValueError, match="cells: expected one of"):
        guidance.outside_share(head, fmap, y, quadrant, cells="middle")


def _shortcut_data(n: int = 32, seed: int = 2):
    """Each class twice over: a lesion at the centre (the mask) and a corner mark, as bright."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = rng.uniform(0, 40, (n, SIZE, SIZE, 3)).astype(np.float32)
    for i, k in enumerate(y):
        x[i, 8:24, 8:24] = 90 + 50 * k + rng.uniform(-10, 10, (16, 16, 3))
        x[i, :8, :8] = 90 + 50 * k
    return x, tf.one_hot(y, 4).numpy(), _cell_masks(n, [(1, 1), (1, 2), (2, 1), (2, 2)])


def _train(guide: float, steps: int = 100, seed: int = 1) -> tuple[float, float]:
    """Train the toy model on the shortcut data; return (mean outside share, accuracy) after."""
    model = _model(seed=seed)
    training.compile_model(model, 1e-2, 0.0, "never")
    run = training.TrainingSteps(model, 0.0, jit_compile=False, lesion_guidance=guide)
    x, y, masks = _shortcut_data()
    for _ in range(steps):
        run.train_step((x, y, masks))
    features, head = guidance.split_at_feature_map(model)
    share = float(np.mean(guidance.outside_share(head, features(x), y, masks)))
    accuracy = float(np.mean(model(x).numpy().argmax(1) == y.argmax(1)))
    return share, accuracy


def test_guided_steps_move_grad_cam_onto_the_lesion_and_still_learn():
    tf.config.experimental.enable_op_determinism()
    unguided, acc_unguided = _train(0.0)
    guided, acc_guided = _train(2.0)
    # unguided, the corner mark carries the class as well as the lesion and most of the map's
    # energy stays outside the lesion (0.61-0.67 for model seeds 1-3); guided, 0.00-0.31
    assert unguided > 0.5
    assert guided < unguided - 0.2
    assert acc_guided >= 0.9 and acc_unguided >= 0.9


def test_the_guided_phase_follows_fine_tuning_and_its_best_epoch_is_kept(phantom_set, tmp_path):
    from brainmri import inputs, sources
    from brainmri.config import load_profile

    p = load_profile("smoke")
    cfg = {**p["run"], **p["model"], **p["train"], "epochs": 1, "warmup_epochs": 0}
    cfg |= {"lesion_guidance": 1.0, "guidance_epochs": 1, "guidance_learning_rate": 1e-4}
    cfg |= {"guidance_distillation": 0.5}  # the teacher: the fine-tuned epoch's weights
    files = sorted((phantom_set / "Training").glob("*/*.jpg"))
    labels = [config.CLASS_NAMES.index(f.parent.name) for f in files]
    rows = sources.pd.DataFrame(
        {
            "path": [f.relative_to(phantom_set).as_posix() for f in files],
            "label": [f.parent.name for f in files],
        }
    )
    masks = sources.guidance_masks(rows, {"root": str(phantom_set), "mask_root": None}, 1.0)
    assert sum(map(bool, masks)) == 30  # every phantom tumour has its mask, notumor none
    size = cfg["image_size"]
    train = inputs.make_dataset(files, labels, size, 8, shuffle=True, masks=masks)
    val = inputs.make_dataset(files, labels, size, 8)
    model = mdl.build_model(cfg)
    out = {"model_path": tmp_path / "model.keras", "history_path": tmp_path / "history.csv"}
    state = tmp_path / "state"
    training.prepare_state(state, cfg, manifest_sha256="x", **out)
    history = training.fit(model, train, val, cfg, state_dir=state, **out)
    # one unguided fine-tuning epoch, then one guided: the same columns in both rows
    assert history["epoch"].tolist() == [0, 1]
    assert history["lesion_guidance"].tolist() == [0.0, 1.0]
    assert np.isnan(history["lesion_outside"][0]) and 0 <= history["lesion_outside"][1] <= 1
    assert history["learning_rate"].tolist() == pytest.approx([cfg["learning_rate"], 1e-4])
    # the kept model is the guided epoch's, whatever the unguided one scored
    assert training.best_epoch(history)["epoch"] == 2
    kept = mdl.load_model(out["model_path"])
    for a, b in zip(kept.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not list(state.glob("*.weights.h5"))  # no stale resume point once finished
    # a guided step on batches without masks is a mistake, not a silent unguided step
    run = training.TrainingSteps(model, 0.0, jit_compile=False, lesion_guidance=1.0)
    with pytest.raises(ValueError, match="must carry the lesion masks"):
        run.train_step(next(iter(val)))


def test_the_margin_parameter_is_a_fraction_of_the_input_side():
    """train.guidance_margin 0.067 (15/224) is 13 pixels at the cpu profile's 192 px."""
    assert training.guidance_margin_pixels({"guidance_margin": 0.067, "image_size": 192}) == 13
    assert training.guidance_margin_pixels({"guidance_margin": 0.0, "image_size": 240}) == 0


# --- distillation towards the fine-tuned model (Learning without Forgetting) --------------------


def test_distillation_is_the_softened_kl_divergence_times_t_squared():
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(0, 3, (2, 5, 4)).astype(np.float32)
    t = config.DISTILLATION_TEMPERATURE

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = softmax(teacher / t), softmax(student / t)
    expected = t**2 * np.sum(p * np.log(p / q), -1)
    np.testing.assert_allclose(guidance.distillation(teacher, student), expected, rtol=1e-5)
    np.testing.assert_allclose(guidance.distillation(teacher, teacher), 0.0, atol=1e-6)
    assert np.all(expected > 0)
    # only the student learns: the teacher's logits are targets
    teacher_t, student_t = tf.constant(teacher), tf.constant(student)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([teacher_t, student_t])
        loss = tf.reduce_sum(guidance.distillation(teacher_t, student_t))
    assert tape.gradient(loss, teacher_t) is None
    assert np.abs(tape.gradient(loss, student_t).numpy()).max() > 0


def test_the_teacher_is_a_frozen_copy_of_the_logits():
    model = _model()
    teacher = guidance.frozen_teacher(model)
    x, _ = _batch()
    before = mdl.logits_model(model)(x).numpy()
    np.testing.assert_allclose(teacher(x), before, rtol=1e-5, atol=1e-6)
    assert not teacher.trainable_weights
    # training the model leaves the teacher where the model was
    model.get_layer("conv2").kernel.assign(model.get_layer("conv2").kernel * 2.0)
    assert not np.allclose(mdl.logits_model(model)(x), before)
    np.testing.assert_allclose(teacher(x), before, rtol=1e-5, atol=1e-6)


def test_distillation_keeps_the_guided_model_nearer_its_start():
    """On the shortcut data, the guided steps with distillation end closer to the start
    model's predictions than the same steps without; without guidance it is refused."""
    tf.config.experimental.enable_op_determinism()
    x, y, masks = _shortcut_data()
    start = _model(seed=1)
    training.compile_model(start, 1e-2, 0.0, "never")
    warm = training.TrainingSteps(start, 0.0, jit_compile=False)
    for _ in range(60):  # the start: a model that has learnt the classes, unguided
        warm.train_step((x, y))
    target = mdl.logits_model(start)(x).numpy()

    def drift(weight: float) -> float:
        model = keras.models.clone_model(start)
        model.set_weights(start.get_weights())
        training.compile_model(model, 1e-2, 0.0, "never")
        run = training.TrainingSteps(
            model,
            0.0,
            jit_compile=False,
            lesion_guidance=2.0,
            teacher=guidance.frozen_teacher(start),
            distillation=weight,
        )
        for _ in range(40):
            run.train_step((x, y, masks))
        logits = mdl.logits_model(model)(x)
        return float(np.mean(guidance.distillation(target, logits)))

    free, kept = drift(0.0), drift(5.0)
    assert kept < free / 2, (kept, free)
    with pytest.raises(ValueError, match="needs a teacher model"):
        training.TrainingSteps(start, 0.0, jit_compile=False, lesion_guidance=1.0, distillation=1.0)
    with pytest.raises(ValueError, match="needs lesion_guidance > 0"):
        training.TrainingSteps(
            start, 0.0, jit_compile=False, teacher=guidance.frozen_teacher(start), distillation=1.0
        )
