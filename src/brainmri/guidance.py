"""Lesion guidance: train the model so that its Grad-CAM lands on the expert tumour mask.

"Right for the right reasons" (Ross et al. 2017) penalises the input gradients outside the
region a human marked; here the explanation penalised is the one the reports show, Grad-CAM
(Selvaraju et al. 2017), in the spirit of guided attention (Li et al. 2018, "Tell me where to
look"). For each training image with a mask, the penalty is the share of its Grad-CAM energy
that falls outside the lesion, measured at the target layer's resolution:

    cam = ReLU(sum_k alpha_k A_k),   alpha_k = mean_ij d logit_c / d A_k,ij   (held constant)
    penalty = sum_ij cam_ij (1 - m_ij) / sum_ij cam_ij

where ``A`` is the last feature map, ``c`` the true class and ``m`` says how far each
feature-map cell lies on the lesion: the fraction of the cell the mask covers (``cells="area"``),
or whether the cell's centre lies on it (``cells="centre"``). The second is what the reports read:
Grad-CAM's map is the feature-map grid upsampled bilinearly, whose values at the cell centres are
the cells' own and in between are blends of them, so the map's maximum, which the pointing game
scores, sits on a cell centre. Under ``"area"`` a cell whose corner touches the lesion earns part
of the credit, and energy moved into it leaves the maximum on a cell centre off the lesion; under
``"centre"`` only cells whose centre is on the (margin-grown) lesion count. (On the real data the
two rules localised alike: docs/studies/README.md, measured on the leaky validation split.)

Holding the channel weights ``alpha`` constant within a step (no second-order gradient) keeps the
step at the cost of one extra pass through the small head: the gradient moves the feature map,
which is what decides where the map points. Images without a mask (no tumour, or none drawn) add
nothing.

On the real data this matters: an unguided model reads glioma from outside the brain (see the
context test of 05_gradcam) and its maps miss the tumour; the penalty makes the features that
decide the class sit on the lesion.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from brainmri import config
from brainmri.explain import find_target_layer, layer_output
from brainmri.model import head_layer_names, logits_model

__all__ = ["distillation", "frozen_teacher", "outside_share", "split_at_feature_map"]

_EPS = 1e-6


def split_at_feature_map(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """The classifier cut at Grad-CAM's target layer, sharing its layers (and weights).

    Args:
        model: a classifier following the explanation methods' model contract (a 4-D feature
            map, global pooling, Dense head, ``LOGITS_LAYER`` and softmax).

    Returns:
        ``(features, head)``: image -> feature map, and feature map -> [logits, probabilities].
        ``head(features(x))`` computes exactly ``model(x)``.
    """
    layer = find_target_layer(model)
    fmap = layer_output(model, layer)
    features = keras.Model(model.inputs[0], fmap, name=f"{model.name}_features")
    x = head_in = keras.Input(tuple(fmap.shape[1:]), name="feature_map")
    logits = None
    for name in head_layer_names(model):
        x = model.get_layer(name)(x)
        if name == config.LOGITS_LAYER:
            logits = x
    return features, keras.Model(head_in, [logits, x], name=f"{model.name}_head")


def outside_share(
    head: keras.Model,
    fmap: tf.Tensor,
    labels: tf.Tensor,
    masks: tf.Tensor,
    *,
    margin: int = 0,
    cells: str = "area",
) -> tf.Tensor:
    """Each image's share of Grad-CAM energy outside its mask (0 for images without a mask).

    Args:
        head: the head of :func:`split_at_feature_map`.
        fmap: feature maps (N, h, w, C), computed under the caller's gradient tape.
        labels: one-hot labels (N, K); the true class is explained.
        masks: lesion masks (N, H, W, 1) in [0, 1] at the input resolution, all zero for an
            image without one.
        margin: grow each mask by this many pixels (a square dilation) before measuring, so
            energy next to the lesion costs nothing: the pointing game forgives the same slack
            (``gradcam.pointing_tolerance``), and the tissue around a tumour may be part of
            what tells the classes apart (a meningioma's dural attachment, the sella around a
            pituitary adenoma).
        cells: how a feature-map cell counts as on the lesion: "area", the share of the cell
            the mask covers; "centre", whether the mask covers the cell's centre (the pixel the
            upsampled map takes the cell's value at).

    Returns:
        Shares (N,) in [0, 1], differentiable with respect to fmap.
    """
    if cells not in config.GUIDANCE_CELLS:
        raise ValueError(f"cells: expected one of {config.GUIDANCE_CELLS}, got {cells!r}")
    if margin > 0:  # a square window's maximum, taken along rows then columns (2k, not k^2)
        masks = tf.cast(masks, tf.float32)
        for window in ((2 * margin + 1, 1), (1, 2 * margin + 1)):
            masks = tf.nn.max_pool2d(masks, ksize=window, strides=1, padding="SAME")
    fmap = tf.cast(fmap, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(fmap)
        logits, _ = head(fmap, training=False)  # as Grad-CAM explains: no dropout
        score = tf.reduce_sum(tf.cast(logits, tf.float32) * tf.cast(labels, tf.float32))
    # Grad-CAM's channel weights, held constant: the penalty moves the map, not the weights
    alpha = tf.stop_gradient(tf.reduce_mean(tape.gradient(score, fmap), axis=(1, 2)))
    cam = tf.nn.relu(tf.einsum("nhwc,nc->nhw", fmap, alpha))
    # how far each feature-map cell lies on the lesion: its covered share, or the mask at its
    # centre (TF's nearest-neighbour resize samples pixel floor((i + 1/2) * H / h))
    method = "area" if cells == "area" else "nearest"
    inside = tf.image.resize(tf.cast(masks, tf.float32), tf.shape(fmap)[1:3], method=method)
    inside = inside[..., 0]
    share = tf.reduce_sum(cam * (1.0 - inside), axis=(1, 2)) / (
        tf.reduce_sum(cam, axis=(1, 2)) + _EPS
    )
    # from the mask itself: under "centre" a lesion may cover no cell centre at all, and all of
    # its image's energy is then outside (a share of 1, no gradient), not an image without one
    has_mask = tf.cast(tf.reduce_max(masks, axis=(1, 2, 3)) > 0, tf.float32)
    return share * has_mask


def frozen_teacher(model: keras.Model) -> keras.Model:
    """A frozen copy of ``model`` that outputs its logits: the teacher of :func:`distillation`.

    Args:
        model: a classifier with a ``LOGITS_LAYER``, built in the strategy's scope it will run in
            (the copy is built in the current scope).

    Returns:
        image -> logits, with ``model``'s current weights, not trainable.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.trainable = False
    return logits_model(copy)


def distillation(
    teacher_logits: tf.Tensor,
    logits: tf.Tensor,
    *,
    temperature: float = config.DISTILLATION_TEMPERATURE,
) -> tf.Tensor:
    """Each image's KL divergence from the teacher's predictions to the student's, softened.

    The guided phase can keep what the fine-tuned model knew while it moves the explanation:
    Learning without Forgetting (Li & Hoiem 2016) adds this term with the original network's
    responses as targets, in the form of knowledge distillation (Hinton et al. 2015): both
    softmaxes at temperature ``T``, the divergence times ``T**2`` so that its gradients keep
    their scale whatever ``T``. Unlike the labels, the teacher's soft predictions carry how
    alike it finds the classes for each image (a glioma that looks like a meningioma).

    Args:
        teacher_logits: the teacher's logits (N, K), held constant.
        logits: the student's logits (N, K).
        temperature: the softmax temperature ``T``.

    Returns:
        ``T**2 * KL(softmax(teacher / T) || softmax(student / T))`` per image (N,), >= 0.
    """
    teacher = tf.stop_gradient(tf.cast(teacher_logits, tf.float32)) / temperature
    student = tf.cast(logits, tf.float32) / temperature
    target = tf.nn.softmax(teacher)
    kl = tf.reduce_sum(target * (tf.nn.log_softmax(teacher) - tf.nn.log_softmax(student)), -1)
    return temperature**2 * kl
