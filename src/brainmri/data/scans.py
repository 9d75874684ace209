"""New scans as model inputs: JPEG, PNG, BMP, TIFF and DICOM slices (pydicom's modality and VOI
LUTs, MONOCHROME1 inverted), through the data set's one normalisation (`fit_image`); finding
the scans a user names (a file, a folder or a glob), each skipped entry with its reason."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np

from brainmri.config import IMAGE_EXTENSIONS
from brainmri.data.headers import MAX_PIXELS, DecodeError
from brainmri.data.images import decode_image_bytes, fit_image, to_rgb8

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


def _not_a_file(path: Path) -> str | None:
    """Why path is not a regular file to read (a folder, a FIFO, a broken link...), or None.

    Checked before the file is opened: opening a FIFO would wait for a writer forever.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "broken symbolic link" if path.is_symlink() else "no such file"
    except OSError as exc:
        return f"cannot read the file ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        if path.is_symlink():
            return "symbolic link to a folder, not followed (name the folder itself to include it)"
        return "a folder, not a file"
    kinds = {stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISSOCK: "a socket"}
    kind = next((name for test, name in kinds.items() if test(mode)), "a device")
    return f"{kind}, not a regular file"


def _read_file(path: Path) -> bytes:
    """The bytes of a regular file; anything else is refused without blocking on it."""
    reason = _not_a_file(path)
    if reason is not None:
        raise ScanError(reason)
    try:
        # O_NONBLOCK: should the file be swapped for a FIFO after the check, open does not wait
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ScanError(f"cannot read the file ({exc.strerror or exc})") from None
    with open(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ScanError("not a regular file")
        try:
            return handle.read()
        except OSError as exc:
            raise ScanError(f"cannot read the file ({exc.strerror or exc})") from None


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

    reason = _not_a_file(path)
    if reason is not None:
        raise ScanError(reason)
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
    return fit_image(read_pixels(path, max_pixels=max_pixels), size, crop=crop)


def read_pixels(path: Path, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Any supported scan at its own size, as uint8 RGB (before :func:`fit_image`): what the
    out-of-distribution gate (``brainmri.ood.gate``) looks at.

    Args:
        path: an image or DICOM file.
        max_pixels: the most pixels the file's header may declare.

    Returns:
        The (H, W, 3) uint8 pixels.

    Raises:
        ScanError: the file is not a supported, readable image (the message says why).
    """
    path = Path(path)
    data = _read_file(path)
    if _is_dicom(path, data[:132]):
        del data  # pydicom reads the file itself
        return read_dicom(path, max_pixels)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        try:
            return to_rgb8(decode_image_bytes(data, max_pixels, path.suffix)[0])
        except DecodeError as exc:
            raise ScanError(str(exc)) from None
    raise ScanError(
        f"unsupported file type {path.suffix or '(none)'!r}: expected an image "
        f"({', '.join(IMAGE_EXTENSIONS)}) or DICOM ({', '.join(DICOM_EXTENSIONS)})"
    )


def _walk(folder: Path) -> list[Path]:
    """Every entry under folder to list: files, and what is neither file nor folder (a broken
    link, a FIFO) so that it is listed with its reason. Hidden names are left out. A symbolic
    link to a folder is listed, not followed: it may loop back or lead to a whole disk."""
    entries = []
    for parent, folders, files in os.walk(folder):
        base = Path(parent)
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        entries += [base / name for name in folders if (base / name).is_symlink()]
        entries += [base / name for name in files if not name.startswith(".")]
    return entries


def find_scans(target: str | Path) -> list[Path]:
    """The entries to predict: one file, everything under a folder (recursively), or a glob.

    Every entry found is returned, also what cannot be read (a broken link, a FIFO, a link to
    a folder), so that the prediction lists it with its reason (:func:`read_scan` refuses it
    without opening it). A folder the glob matches is walked like a folder named; a symbolic
    link to a folder is followed only when it is the target itself. Hidden files and folders
    are skipped; the order is sorted, so reruns list the same rows.

    Args:
        target: a file, a folder or a glob pattern (``~`` expanded).

    Returns:
        The entries, sorted.

    Raises:
        FileNotFoundError: nothing matches target.
    """
    path = Path(target).expanduser()
    if path.is_dir():
        found = _walk(path)
    elif path.exists() or path.is_symlink():
        found = [path]  # a file, or a FIFO or broken link named: listed with its reason
    else:
        anchor = Path(path.anchor or ".")
        parts = path.relative_to(anchor).parts if path.is_absolute() else path.parts
        # the folders written out before the first wildcard: hidden or not, the user named them
        fixed = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), 0)
        base = anchor.joinpath(*parts[:fixed])
        found = []
        for match in base.glob(str(Path(*parts[fixed:]))) if parts[fixed:] else []:
            if any(part.startswith(".") for part in match.relative_to(base).parts):
                continue
            is_folder = match.is_dir() and not match.is_symlink()
            found += _walk(match) if is_folder else [match]
    entries = sorted(set(found))
    if not entries:
        raise FileNotFoundError(f"{target}: no such file, folder or matching files")
    return entries
