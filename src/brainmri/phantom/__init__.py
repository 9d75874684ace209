"""Synthetic axial brain-MRI "phantoms" with known tumour masks: the offline data set.

Every slice is drawn from one random generator, the class-independent head first and the
class's lesion last, so the four classes of one generator state differ only at the lesion.
Images and 0/255 PNG masks are written in the Kaggle layout with a parallel ``masks/`` tree.

Submodules:

- `render`: one slice of a class and its mask (:func:`render_slice`).
- `dataset`: the data set on disk (:func:`generate_phantom_dataset`).
- `masks`: where an image's mask is and reading it (:func:`mask_path`, :func:`load_mask`), for
  the phantom set and for expert masks laid out the same way.
"""

from brainmri.phantom.dataset import (
    GENERATOR,
    JPEG_QUALITY,
    MANIFEST_NAME,
    generate_phantom_dataset,
)
from brainmri.phantom.masks import MASKS_DIR, load_mask, mask_path
from brainmri.phantom.render import FORMAT_VERSION, MIN_SIZE, render_slice

__all__ = [
    "FORMAT_VERSION",
    "GENERATOR",
    "JPEG_QUALITY",
    "MANIFEST_NAME",
    "MASKS_DIR",
    "MIN_SIZE",
    "generate_phantom_dataset",
    "load_mask",
    "mask_path",
    "render_slice",
]
