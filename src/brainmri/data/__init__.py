"""The image dataset, from download to the train/val/test subsets of a run.

Submodules, in the order a run uses them:

- `kaggle`: Kaggle credentials, the download, safe archive extraction (DataSourceError).
- `layout`: finding the <split>/<class>/ folder tree of the dataset (DatasetLayoutError).
- `headers`: what a file declares before decoding (format by content, size) and the pixel
  limit that refuses decompression bombs.
- `images`: decoding any image file to uint8 RGB (load_image), the one normalisation, and the
  optional crop to the head (brain_box, crop_square,
  crop_like_image).
- `manifest`: the scan of every file into the manifest table; its CSV file and hash.
- `signatures`: the audit's thumbnails (whole and cut to the head, in four orientations) and
  their correlations.
- `alignment`: registering near-miss pairs onto each other (the audit's `aligned` kind).
- `audit`: copies of every kind (same bytes, as is, mirrored, re-cut), their groups (connected
  components), and the counts per split and kind.
- `splits`: the train/val/test subsets by whole copy groups under the evaluation protocol
  (grouped or official), train de-duplication, the headline test images and the leak count.

SciPy, scikit-learn, imagehash and the Kaggle API are imported by the functions that use them,
not here: the input pipeline imports this package for load_image only.
"""

from brainmri.data.audit import (
    AUDIT_COLUMNS,
    MATCH_KINDS,
    audit_duplicates,
    audit_summary,
    copy_groups,
    copy_pairs,
    threshold_pairs,
)
from brainmri.data.images import (
    brain_box,
    crop_like_image,
    crop_square,
    head_region,
    load_image,
    read_grey,
)
from brainmri.data.kaggle import (
    DataSourceError,
    KaggleCredentials,
    download_kaggle,
    kaggle_credentials,
    safe_extract,
)
from brainmri.data.layout import DatasetLayoutError, find_dataset_root
from brainmri.data.manifest import (
    SCAN_COLUMNS,
    manifest_hash,
    read_manifest,
    scan_dataset,
    write_manifest,
)
from brainmri.data.signatures import flip_signatures, mirror_signatures, pixel_signatures
from brainmri.data.splits import (
    DEDUP_CHOICES,
    PROTOCOLS,
    SUBSET_COLUMNS,
    SUBSETS,
    assign_subsets,
    subset_leaks,
)

__all__ = [
    "AUDIT_COLUMNS",
    "DEDUP_CHOICES",
    "MATCH_KINDS",
    "PROTOCOLS",
    "SCAN_COLUMNS",
    "SUBSETS",
    "SUBSET_COLUMNS",
    "DataSourceError",
    "DatasetLayoutError",
    "KaggleCredentials",
    "assign_subsets",
    "audit_duplicates",
    "audit_summary",
    "copy_groups",
    "copy_pairs",
    "flip_signatures",
    "mirror_signatures",
    "download_kaggle",
    "find_dataset_root",
    "kaggle_credentials",
    "brain_box",
    "crop_like_image",
    "crop_square",
    "head_region",
    "load_image",
    "read_grey",
    "manifest_hash",
    "pixel_signatures",
    "read_manifest",
    "safe_extract",
    "scan_dataset",
    "subset_leaks",
    "threshold_pairs",
    "write_manifest",
]
