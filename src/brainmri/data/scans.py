"""New scans as model inputs: JPEG, PNG, BMP, TIFF and DICOM slices (pydicom's modality and VOI
LUTs, MONOCHROME1 inverted), through the data set's one normalisation (`fit_image`); finding
the scans a user names (a file, a folder or a glob), each skipped file with its reason."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from brainmri.config import IMAGE_EXTENSIONS
from brainmri.data.images import (
    MAX_PIXELS,
    _decode_image_bytes,
    _DecodeError,
    _to_rgb8,
    fit_image,
)

DICOM_EXTENSIONS = (".dcm", ".dicom")
"""Suffixes read as DICOM (a file without a suffix is tried as DICOM when it says so)."""

_BAND_PIXELS = 1 << 20
"""Pixels per band when a DICOM slice is windowed and scaled: pydicom's LUTs return float64,
so a band at a time keeps those copies at 8 MB whatever the slice's size."""


class ScanError(ValueError):
    """A file that cannot be predicted; the message is the reason listed for it."""


# --- reading scans --------------------------------------------------------------------------


def _is_dicom(path: Path, head: bytes) -> bool:
    return path.suffix.lower() in DICOM_EXTENSIONS or head[128:132] == b"DICM"


def read_dicom(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One DICOM slice as uint8 RGB: modality LUT, VOI LUT (window), MONOCHROME1 inverted.

    The header's size is checked before the pixel data is decoded, and the LUTs are applied a
    band of rows at a time, so a small compressed file declaring a huge slice is refused and a
    large slice allowed by the limit never takes several float64 copies of itself.

    Args:
        path: a single-frame DICOM file with pixel data (8, 12 or 16 bits).
        max_pixels: the most pixels (rows x columns x frames x samples) the header may declare
            (``data.max_image_pixels``).

    Returns:
        The slice, (H, W, 3) uint8, scaled from its windowed range to 0..255.

    Raises:
        ScanError: not DICOM, no pixel data, too large, not exactly one frame, or colour data.
    """
    # pydicom warns of header values it works around (a frame count of 0, say); the checks
    # below turn what matters into the reason a file is skipped, the rest stays off the console
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _read_dicom(Path(path), max_pixels)


def _header_int(ds, keyword: str, default: int) -> int:
    value = ds.get(keyword, default)
    try:
        return default if value in (None, "") else int(value)
    except (TypeError, ValueError):
        raise ScanError(f"invalid DICOM header: {keyword} {value!r} is not a number") from None


def _read_dicom(path: Path, max_pixels: int) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)  # the pixel data stays encoded until pixel_array
    except Exception as exc:  # pydicom raises InvalidDicomError, OSError, ...
        raise ScanError(f"not a readable DICOM file ({exc})") from None
    if "PixelData" not in ds:
        raise ScanError("DICOM without pixel data (not an image)")
    frames = _header_int(ds, "NumberOfFrames", 1)
    samples = _header_int(ds, "SamplesPerPixel", 1)
    rows, columns = _header_int(ds, "Rows", 0), _header_int(ds, "Columns", 0)
    if frames < 1:
        raise ScanError(f"invalid DICOM header: NumberOfFrames {frames}; expected 1 (one slice)")
    if rows < 1 or columns < 1:
        raise ScanError(f"invalid DICOM header: {rows} rows and {columns} columns")
    if rows * columns * frames * samples > max_pixels:
        times = "".join(
            f" x {n} {what}" for n, what in ((frames, "frames"), (samples, "samples")) if n > 1
        )
        raise ScanError(
            f"too large: {columns}x{rows} pixels{times} declared, more than the limit of "
            f"{max_pixels:,} (data.max_image_pixels); not decoded"
        )
    if frames > 1:
        raise ScanError(f"multi-frame DICOM ({frames} frames): give one slice per file")
    if samples != 1:
        raise ScanError("colour DICOM: expected a grey-level MRI slice")
    try:
        stored = ds.pixel_array
        if stored.shape != (rows, columns):
            raise ValueError(f"{stored.shape} pixels decoded, the header says {(rows, columns)}")
        step = max(1, _BAND_PIXELS // columns)
        bands = [slice(top, top + step) for top in range(0, rows, step)]

        def windowed(band: slice) -> np.ndarray:
            return apply_voi_lut(apply_modality_lut(stored[band], ds), ds)

        low, high = np.inf, -np.inf
        for band in bands:  # first pass: the windowed range
            values = windowed(band)
            low, high = min(low, float(values.min())), max(high, float(values.max()))
        grey = np.zeros((rows, columns), np.uint8)
        inverted = getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1"
        for band in bands:  # second pass: that range to 0..255
            if high > low:
                scaled = (windowed(band).astype(np.float64) - low) / (high - low) * 255.0
            else:
                scaled = np.zeros(grey[band].shape)
            if inverted:
                scaled = 255.0 - scaled  # MONOCHROME1: high values are dark
            grey[band] = np.round(scaled)
    except Exception as exc:
        raise ScanError(f"DICOM pixel data cannot be decoded ({exc})") from None
    return np.repeat(grey[..., None], 3, axis=2)


def read_scan(
    path: Path, size: int, *, crop: bool = False, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Any supported scan as the model's input: uint8 RGB (size, size, 3), cut to the square
    around the head first with ``crop`` (as the model's training run did: ``crop_to_brain``).

    Args:
        path: an image or DICOM file.
        size: the side of the square output.
        crop: first cut to the square around the head.
        max_pixels: the most pixels the file's header may declare (``data.max_image_pixels``):
            a larger file is refused before it is decoded.

    Returns:
        The (size, size, 3) uint8 pixels.

    Raises:
        ScanError: the file is not a supported, readable image (the message says why).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ScanError(f"cannot read the file ({exc.strerror or exc})") from None
    if _is_dicom(path, data[:132]):
        del data  # pydicom reads the file itself
        rgb = read_dicom(path, max_pixels)
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        try:
            rgb = _to_rgb8(_decode_image_bytes(data, max_pixels, path.suffix)[0])
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
