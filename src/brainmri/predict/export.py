"""The model as a TensorFlow SavedModel for serving, the scan preparation inside it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def export_savedmodel(model: Any, target: str | Path, *, crop_to_brain: bool = False) -> Path:
    """Write a TensorFlow SavedModel that prepares whole scans and classifies them.

    TF Serving, or any TensorFlow runtime, can then run the model without this package. The
    ``serve`` signature takes ``scans``, a uint8 (N, H, W, 3) RGB batch of whole scans of any
    one size (H, W >= 3; scans of different sizes go in separate calls) and prepares each in
    TensorFlow ops as ``brainmri predict`` does (:mod:`brainmri.serving`): cut to the square
    around the head where the training run did (``crop_to_brain``), resized to the model's
    input size with area averaging; it returns ``probabilities`` (N, 4), the model's raw
    (uncalibrated) class probabilities, and ``boxes`` (N, 3), each scan's head square
    ``(x0, y0, side)`` in its pixels (the whole image's square where nothing was cut). The
    ``serve_prepared`` signature takes ``images``, a uint8 (N, size, size, 3) batch already
    prepared (``read_scan(path, size, crop=...)``), and returns ``probabilities``.

    Args:
        model: a trained classifier.
        target: the SavedModel folder to create; it must not exist.
        crop_to_brain: whether the model was trained on images cut to the head
            (``model.crop_to_brain``; :func:`brainmri.runs.crop_to_brain_of`).

    Returns:
        The folder written.

    Raises:
        FileExistsError: target exists.
        OSError: the folder cannot be written (read-only, under a file, disk full, TensorFlow's
            own file errors); the message names the target and the problem in one line.
    """
    import shutil
    import tempfile

    import keras
    import tensorflow as tf

    from brainmri import serving

    target = Path(target)
    if target.exists():
        raise FileExistsError(f"{target}: exists; choose a new folder for the export")
    size = int(model.input_shape[1])

    def classify(images):
        return model(tf.cast(images, tf.float32), training=False)

    def scan_box(scan):
        if crop_to_brain:
            return tf.stack(serving.brain_box(scan))
        height, width = tf.shape(scan)[0], tf.shape(scan)[1]
        side = tf.maximum(height, width)
        return tf.stack([(width - side) // 2, (height - side) // 2, side])

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="scans")])
    def serve(scans):
        boxes = tf.map_fn(scan_box, scans, fn_output_signature=tf.TensorSpec([3], tf.int32))

        def prepare(args):
            scan, box = args
            if crop_to_brain:
                scan = serving.crop_square(scan, box[0], box[1], box[2])
            return serving.resize(scan, size)

        images = tf.map_fn(
            prepare, (scans, boxes), fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8)
        )
        return {"probabilities": classify(images), "boxes": boxes}

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")])
    def serve_prepared(images):
        return {"probabilities": classify(images)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve)
    archive.add_endpoint("serve_prepared", serve_prepared)
    # Written beside the target and renamed into place: a failed export (a full disk) leaves no
    # half SavedModel under the name a server would load. Python creates the folders, so a
    # read-only file system or a file in the path is an OSError with its errno.
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        archive.write_out(str(partial), verbose=False)
        os.rename(partial, target)
    except tf.errors.OpError as exc:
        problem = (exc.message or type(exc).__name__).strip().splitlines()[0]
        if "No space left on device" in problem:
            problem = "no space left on device"
        raise OSError(f"{target}: TensorFlow could not write the SavedModel ({problem})") from None
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return target
