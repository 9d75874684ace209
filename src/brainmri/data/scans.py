"""New scans as model inputs: JPEG, PNG, BMP, TIFF and DICOM slices (pydicom's modality and VOI
LUTs, MONOCHROME1 inverted), through the data set's one normalisation (`fit_image`); finding
the scans a user names (a file, a folder or a glob), each skipped file with its reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainmri.config import IMAGE_EXTENSIONS
from brainmri.data.images import _decode_image_bytes, _DecodeError, _to_rgb8, fit_image

DICOM_EXTENSIONS = (".dcm", ".dicom")
"""Suffixes read as DICOM (a file without a suffix is tried as DICOM when it says so)."""


class ScanError(ValueError):
    """A file that cannot be predicted; the message is the reason listed for it."""


# --- reading scans --------------------------------------------------------------------------


def _is_dicom(path: Path, head: bytes) -> bool:
    return path.suffix.lower() in DICOM_EXTENSIONS or head[128:132] == b"DICM"


def read_dicom(path: Path) -> np.ndarray:
    """One DICOM slice as uint8 RGB: modality LUT, VOI LUT (window), MONOCHROME1 inverted.

    Args:
        path: a single-frame DICOM file with pixel data (8, 12 or 16 bits).

    Returns:
        The slice, (H, W, 3) uint8, scaled from its windowed range to 0..255.

    Raises:
        ScanError: not DICOM, no pixel data, more than one frame, or colour data.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises InvalidDicomError, OSError, ...
        raise ScanError(f"not a readable DICOM file ({exc})") from None
    if "PixelData" not in ds:
        raise ScanError("DICOM without pixel data (not an image)")
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise ScanError(f"multi-frame DICOM ({ds.NumberOfFrames} frames): give one slice per file")
    if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
        raise ScanError("colour DICOM: expected a grey-level MRI slice")
    try:
        pixels = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float64)
    except Exception as exc:
        raise ScanError(f"DICOM pixel data cannot be decoded ({exc})") from None
    low, high = float(pixels.min()), float(pixels.max())
    scaled = (pixels - low) / (high - low) * 255.0 if high > low else np.zeros_like(pixels)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        scaled = 255.0 - scaled  # MONOCHROME1: high values are dark
    grey = np.round(scaled).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def read_scan(path: Path, size: int, *, crop: bool = False) -> np.ndarray:
    """Any supported scan as the model's input: uint8 RGB (size, size, 3), cut to the square
    around the head first with ``crop`` (as the model's training run did: ``crop_to_brain``).

    Raises:
        ScanError: the file is not a supported, readable image (the message says why).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ScanError(f"cannot read the file ({exc.strerror or exc})") from None
    if _is_dicom(path, data[:132]):
        rgb = read_dicom(path)
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        try:
            rgb = _to_rgb8(_decode_image_bytes(data, suffix=path.suffix)[0])
        except _DecodeError as exc:
            raise ScanError(str(exc)) from None
    else:
        raise ScanError(
            f"unsupported file type {path.suffix or '(none)'!r}: expected an image "
            f"({', '.join(IMAGE_EXTENSIONS)}) or DICOM ({', '.join(DICOM_EXTENSIONS)})"
        )
    return fit_image(rgb, size, crop=crop)


def find_scans(target: str | Path) -> list[Path]:
    """The files to predict: one file, every file under a folder (recursively), or a glob.

    Hidden files and folders are skipped; the order is sorted, so reruns list the same rows.

    Raises:
        FileNotFoundError: nothing matches target.
    """
    path = Path(target).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = path.rglob("*")
        base = path
    else:
        anchor = Path(path.anchor or ".")
        pattern = str(path.relative_to(anchor)) if path.is_absolute() else str(path)
        found, base = anchor.glob(pattern), anchor
    files = sorted(
        p
        for p in found
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(base).parts)
    )
    if not files:
        raise FileNotFoundError(f"{target}: no such file, folder or matching files")
    return files
