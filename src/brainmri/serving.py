"""The scan preparation of ``brainmri predict`` in TensorFlow ops, for the exported SavedModel.

:func:`prepare_scan` turns one whole uint8 RGB scan, of any size, into the model's input as
``data.images.fit_image`` does: optionally cut to the square around the head
(:func:`brain_box`, the TensorFlow twin of ``data.images.brain_box``), then resized. Only core
TensorFlow ops are used (no ``numpy_function``, no TensorFlow Addons), so a SavedModel built on
them serves from TF Serving or any TensorFlow runtime without this package.

How faithful each step is (measured on the Kaggle set's 1,311 Testing scans, tests/test_export.py):

- grey level: OpenCV's fixed-point RGB to grey (weights 9798, 19235, 3735 over 2**15,
  rounded), bit-exact;
- the 5x5 Gaussian blur: OpenCV's uint8 kernel (1, 4, 6, 4, 1)/16 on reflected borders, rounded
  half up, bit-exact;
- the threshold and the opening (erode, dilate twice with 3x3, i.e. once with 5x5; the image's
  edge neither erodes nor dilates): exact;
- the regions: ``cv2.findContours`` (external contours) becomes 8-connected components of the
  mask with its holes filled (background not 4-connected to the image's edge), found by label
  propagation with pointer jumping; a region's ``contourArea`` becomes Pick's formula
  (pixels - boundary pixels / 2 - 1), exact for the polygon through the boundary pixels' centres
  that a contour of such a region is;
- the square, the crop with black beyond the edge: exact;
- the resize: where both sides shrink (a whole scan, or a head square, larger than the input),
  ``tf.image.resize(..., "area")``, ``cv2.INTER_AREA``'s area-weighted mean; otherwise
  OpenCV's own two-tap formula of that case. At most one grey level apart (OpenCV's rounding);
  ``"bilinear"`` was up to 11 levels apart to enlarge, and ``antialias`` changes nothing.
"""

from __future__ import annotations

import tensorflow as tf

from brainmri.data.images import BRAIN_THRESHOLD

_GREY_WEIGHTS = (9798, 19235, 3735)
"""OpenCV's fixed-point weights of R, G and B in RGB to grey (uint8), over 2**15: equal to
cv2.cvtColor on 200,000 random colours (the 2**14 weights of older OpenCV differ on 531)."""


def grey_level(rgb: tf.Tensor) -> tf.Tensor:
    """``cv2.cvtColor(rgb, COLOR_RGB2GRAY)`` of a uint8 (H, W, 3) image, as int32 (H, W)."""
    x = tf.cast(rgb, tf.int32)
    r, g, b = _GREY_WEIGHTS
    return (x[..., 0] * r + x[..., 1] * g + x[..., 2] * b + (1 << 14)) // (1 << 15)


def gaussian_blur_5(grey: tf.Tensor) -> tf.Tensor:
    """``cv2.GaussianBlur(grey, (5, 5), 0)`` of uint8 levels (int32 (H, W) in, int32 out).

    OpenCV blurs uint8 images with the fixed kernel (1, 4, 6, 4, 1)/16 in both directions and
    rounds half up; the float32 sums here are exact integers (at most 255 * 256).
    """
    kernel = tf.constant([1.0, 4.0, 6.0, 4.0, 1.0])
    x = tf.cast(grey, tf.float32)[None, :, :, None]
    x = tf.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]], mode="REFLECT")  # OpenCV's REFLECT_101
    x = tf.nn.conv2d(x, tf.reshape(kernel, [5, 1, 1, 1]), 1, "VALID")
    x = tf.nn.conv2d(x, tf.reshape(kernel, [1, 5, 1, 1]), 1, "VALID")
    return tf.cast(tf.floor((x[0, :, :, 0] + 128.0) / 256.0), tf.int32)


def _open_5(mask: tf.Tensor) -> tf.Tensor:
    """Erode then dilate a bool (H, W) mask with a 5x5 square (OpenCV's 3x3 twice); the
    pooling's SAME padding is ignored, as OpenCV's default border neither erodes nor dilates."""
    x = tf.cast(mask, tf.float32)[None, :, :, None]
    x = -tf.nn.max_pool2d(-x, 5, 1, "SAME")
    x = tf.nn.max_pool2d(x, 5, 1, "SAME")
    return x[0, :, :, 0] > 0.5


def _neighbourhood_max(labels: tf.Tensor, *, eight: bool) -> tf.Tensor:
    """Each pixel's largest label among itself and its 8 (or 4) neighbours."""
    p = tf.pad(labels, [[1, 1], [1, 1]])
    if eight:
        rows = tf.maximum(tf.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
        return tf.maximum(tf.maximum(rows[:-2], rows[1:-1]), rows[2:])
    centre = p[1:-1, 1:-1]
    across = tf.maximum(p[1:-1, :-2], p[1:-1, 2:])
    return tf.maximum(centre, tf.maximum(across, tf.maximum(p[:-2, 1:-1], p[2:, 1:-1])))


def components(mask: tf.Tensor, *, eight: bool = True) -> tf.Tensor:
    """Connected components of a bool (H, W) mask: int32 labels, 0 off the mask.

    Every pixel starts with its own index + 1 as label; each round takes the largest label of
    the neighbourhood and then jumps to the label of the pixel that label names (which lies in
    the same component and has a label at least as large), until nothing changes: each
    component ends labelled with its last pixel's index + 1.
    """
    shape = tf.shape(mask)
    size = shape[0] * shape[1]
    start = tf.where(mask, tf.reshape(tf.range(1, size + 1), shape), 0)

    def step(labels, _changed):
        grown = tf.where(mask, _neighbourhood_max(labels, eight=eight), 0)
        flat = tf.reshape(grown, [-1])
        jumped = tf.reshape(tf.gather(tf.concat([[0], flat], 0), flat), shape)
        new = tf.where(mask, tf.maximum(grown, jumped), 0)
        return new, tf.reduce_any(new != labels)

    labels, _ = tf.while_loop(
        lambda _labels, changed: changed, step, [start, tf.constant(True)], parallel_iterations=1
    )
    return labels


def _fill_holes(mask: tf.Tensor) -> tf.Tensor:
    """The mask with its holes filled: background not 4-connected to the image's edge."""
    background = tf.logical_not(mask)
    labels = components(background, eight=False)
    edge = tf.concat([labels[0], labels[-1], labels[:, 0], labels[:, -1]], 0)
    size = tf.shape(mask)[0] * tf.shape(mask)[1]
    outside = tf.scatter_nd(edge[:, None], tf.ones_like(edge), [size + 1]) > 0
    return tf.logical_not(tf.logical_and(background, tf.gather(outside, labels)))


def brain_box(
    rgb: tf.Tensor, *, threshold: float = BRAIN_THRESHOLD
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """``data.images.brain_box`` in TensorFlow ops: the square around the head, (x0, y0, side).

    The head is the largest region brighter than ``threshold`` after a 5x5 Gaussian blur and an
    opening, with every other region of at least a tenth of its area (outer contour area, holes
    included); the square is their bounding box grown on the shorter side about its centre. No
    region: the square around the whole image.

    Args:
        rgb: a uint8 (H, W, 3) image, H and W at least 3.
        threshold: the grey level of the head.

    Returns:
        Three int32 scalars: the square's top-left corner (may be negative) and its side.
    """
    height, width = tf.shape(rgb)[0], tf.shape(rgb)[1]
    blurred = gaussian_blur_5(grey_level(rgb))
    mask = _open_5(blurred > int(threshold))  # uint8 THRESH_BINARY: strictly above floor(t)
    filled = _fill_holes(mask)
    labels = components(filled, eight=True)
    size = height * width
    # contourArea of a region's outer contour: by Pick's formula, pixels - boundary / 2 - 1,
    # the boundary being the pixels with a 4-neighbour outside the region or the image
    outside = tf.pad(tf.cast(tf.logical_not(filled), tf.int32), [[1, 1], [1, 1]], constant_values=1)
    boundary = tf.logical_and(filled, _neighbourhood_max(outside, eight=False)[1:-1, 1:-1] > 0)
    flat = tf.reshape(labels, [-1])
    weight = tf.reshape(tf.where(boundary, 0.5, 1.0), [-1])
    pixels = tf.math.unsorted_segment_sum(tf.ones_like(flat), flat, size + 1)
    present = tf.concat([[False], pixels[1:] > 0], 0)
    area = tf.math.unsorted_segment_sum(weight, flat, size + 1) - 1.0
    largest = tf.reduce_max(tf.where(present, area, -1.0))
    keep = tf.logical_and(present, area >= largest / 10.0)
    head = tf.logical_and(filled, tf.gather(keep, labels))
    rows = tf.where(tf.reduce_any(head, axis=1))[:, 0]
    columns = tf.where(tf.reduce_any(head, axis=0))[:, 0]

    def found():
        y, x = tf.cast(rows[0], tf.int32), tf.cast(columns[0], tf.int32)
        h = tf.cast(rows[-1], tf.int32) - y + 1
        w = tf.cast(columns[-1], tf.int32) - x + 1
        side = tf.maximum(w, h)
        return tf.stack([x + (w - side) // 2, y + (h - side) // 2, side])

    def whole():
        side = tf.maximum(height, width)
        return tf.stack([(width - side) // 2, (height - side) // 2, side])

    box = tf.cond(tf.size(rows) > 0, found, whole)
    return box[0], box[1], box[2]


def crop_square(rgb: tf.Tensor, x0: tf.Tensor, y0: tf.Tensor, side: tf.Tensor) -> tf.Tensor:
    """``data.images.crop_square``: the (side, side, C) square at (x0, y0), black beyond the
    image's edge."""
    height, width = tf.shape(rgb)[0], tf.shape(rgb)[1]
    top, left = tf.maximum(0, -y0), tf.maximum(0, -x0)
    bottom, right = tf.maximum(0, y0 + side - height), tf.maximum(0, x0 + side - width)
    padded = tf.pad(rgb, [[top, bottom], [left, right], [0, 0]])
    return tf.slice(padded, [y0 + top, x0 + left, 0], [side, side, -1])


def _linear_taps(source: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """OpenCV's INTER_AREA taps along one axis where it does not shrink both axes: output pixel
    d takes input pixels s and s + 1 (clamped) with weights 1 - f and f, f being the share of
    the output pixel that input pixel s + 1 covers (OpenCV's resize, the linear path)."""
    inverse = tf.cast(size, tf.float64) / tf.cast(source, tf.float64)
    d = tf.range(size, dtype=tf.float64)
    s = tf.floor(d / inverse)
    f = (d + 1.0) - (s + 1.0) * inverse
    f = tf.where(f <= 0.0, tf.zeros_like(f), f - tf.floor(f))
    last = source - 1
    first_tap = tf.clip_by_value(tf.cast(s, tf.int32), 0, last)
    second_tap = tf.clip_by_value(tf.cast(s, tf.int32) + 1, 0, last)
    return first_tap, second_tap, tf.cast(f, tf.float32)


def _resize_linear(x: tf.Tensor, size: int) -> tf.Tensor:
    """Both axes through :func:`_linear_taps` (float32 (H, W, C) in and out)."""
    for axis in (0, 1):
        first, second, f = _linear_taps(tf.shape(x)[axis], size)
        shape = [-1, 1, 1] if axis == 0 else [1, -1, 1]
        f = tf.reshape(f, shape)
        x = tf.gather(x, first, axis=axis) * (1.0 - f) + tf.gather(x, second, axis=axis) * f
    return x


def resize(rgb: tf.Tensor, size: int) -> tf.Tensor:
    """``cv2.resize(rgb, (size, size), interpolation=INTER_AREA)`` of a uint8 (H, W, 3) image,
    rounded to uint8: unchanged at size x size; where both sides shrink, each output pixel the
    area-weighted mean of the input pixels it covers (``tf.image.resize(..., "area")``);
    otherwise OpenCV's two-tap interpolation (:func:`_linear_taps`), which is the same area
    weighting on a side that grows. Within one grey level of OpenCV's (its fixed point)."""
    shape = tf.shape(rgb)

    def scaled():
        x = tf.cast(rgb, tf.float32)
        out = tf.cond(
            tf.logical_and(shape[0] >= size, shape[1] >= size),
            lambda: tf.image.resize(x, [size, size], method="area"),
            lambda: _resize_linear(x, size),
        )
        return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)

    same = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
    return tf.ensure_shape(tf.cond(same, lambda: rgb, scaled), [size, size, 3])


def prepare_scan(rgb: tf.Tensor, size: int, *, crop: bool) -> tf.Tensor:
    """``data.images.fit_image`` in TensorFlow ops: a uint8 (H, W, 3) scan of any size as the
    model's (size, size, 3) uint8 input, cut to the square around the head first with ``crop``."""
    if crop:
        rgb = crop_square(rgb, *brain_box(rgb))
    return resize(rgb, size)
