"""The project's fixed facts: class names and order, the data set's folder names, layer names."""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = ("glioma", "meningioma", "notumor", "pituitary")
"""Class order used everywhere (alphabetical, as Keras' directory loaders sort them)."""
TUMOUR_CLASSES: tuple[str, ...] = ("glioma", "meningioma", "pituitary")
SPLITS: tuple[str, ...] = ("Training", "Testing")
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
LOGITS_LAYER = "logits"
"""Name of the pre-softmax Dense layer; explainability reads its scores."""
KAGGLE_DATASET = "masoudnickparvar/brain-tumor-mri-dataset"
GUIDANCE_CELLS: tuple[str, ...] = ("area", "centre")
"""How lesion guidance counts a Grad-CAM cell as on the lesion (``train.guidance_cells``)."""

DISTILLATION_TEMPERATURE = 2.0
"""The softmax temperature of ``train.guidance_distillation`` (brainmri.guidance.distillation):
Learning without Forgetting's value (Li & Hoiem 2016)."""

SERVE_PORT = 8765
"""The port `brainmri serve` asks for first (on 127.0.0.1; a busy one is replaced by a free one)."""
SERVE_MAX_UPLOAD_MB = 64
"""The default cap of `brainmri serve` on one upload request, all its files together, in MiB."""
