"""Image decoding: any supported image file to uint8 RGB, the one normalisation of pixels; and
the one PNG encoding of an RGB image for the pages that show them.

The input pipeline imports this for load_image, so it needs only OpenCV, PIL and NumPy.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from brainmri.data.headers import MAX_PIXELS, DecodeError, check_size, measure_image


def _pil_array(im: Image.Image) -> np.ndarray:
    """Pixels of a loaded PIL image as an array in RGB(A) channel order."""
    if im.mode.startswith("I;16"):
        return np.array(im).astype(np.uint16)  # also turns big-endian I;16B native
    if im.mode in ("L", "LA", "RGB", "RGBA", "I", "F"):
        return np.array(im)
    alpha = im.mode in ("PA", "RGBa", "La") or "transparency" in im.info
    return np.array(im.convert("RGBA" if alpha else "RGB"))


def _mode_of(array: np.ndarray) -> str:
    channels = 1 if array.ndim == 2 else array.shape[2]
    base = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}.get(channels, f"{channels}ch")
    return base if array.dtype == np.uint8 else f"{base};{array.dtype.itemsize * 8}"


def decode_image_bytes(
    data: bytes, max_pixels: int = MAX_PIXELS, suffix: str | None = None
) -> tuple[np.ndarray, str]:
    """Decode image bytes to (pixels in RGB(A) order, native dtype; PIL-style mode).

    Nothing is decoded before :func:`measure_image` has read the size from the header and the
    limit allowed it: a file that cannot be measured is refused, never handed to a decoder.
    """
    header = measure_image(data, suffix)
    check_size(header, max_pixels)
    fmt, mode = header.format, header.mode
    if fmt == "JPEG" and not data.rstrip(b"\0\r\n ").endswith(b"\xff\xd9"):
        # decoders fill in a cut or garbled scan with a warning only; the end marker tells
        raise DecodeError("truncated or corrupt: JPEG data without its end-of-image marker")
    try:  # OpenCV picks its decoder by content, which measure_image found to be fmt
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        array = None
    if array is None:
        if mode is None:
            raise DecodeError(f"truncated or corrupt: {fmt} data that no decoder can read")
        try:  # PIL reads what OpenCV cannot, or says why not (LOAD_TRUNCATED_IMAGES is off)
            with Image.open(io.BytesIO(data), formats=[fmt]) as im:
                im.load()
                return _pil_array(im), mode
        except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, ...
            raise DecodeError(f"truncated or corrupt: {exc}") from None
    if array.ndim == 3 and array.shape[2] in (3, 4):
        # BGR(A) to RGB(A) in place: a converted copy would double the largest array here
        blue = array[..., 0].copy()
        array[..., 0] = array[..., 2]
        array[..., 2] = blue
    if mode is None:
        mode = _mode_of(array)
    elif array.dtype == np.uint16 and "16" not in mode:
        mode = f"{mode};16"  # PIL reports 16-bit colour PNGs as plain RGB(A)
    return array, mode


def to_rgb8(array: np.ndarray) -> np.ndarray:
    """Normalise decoded pixels to uint8 RGB (16-bit scaled by its maximum, alpha on black)."""
    if array.dtype == np.uint16:
        # Scaled by the image's own maximum, not 65535: MRI is often 12-bit data in 16-bit files,
        # which a fixed scale would turn near-black. Zero stays black.
        peak = int(array.max())
        array = cv2.convertScaleAbs(array, alpha=255.0 / peak if peak > 0 else 0.0)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:  # 32-bit integer or float images: stretch min..max
        array = cv2.normalize(array.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX)
        array = array.astype(np.uint8)
    if array.ndim == 3 and array.shape[2] in (2, 4):
        # OpenCV's RGBA->RGB conversion drops alpha instead of compositing it on black; a
        # band of rows at a time, so the 16-bit products never span the whole image
        composited = np.empty((*array.shape[:2], array.shape[2] - 1), np.uint8)
        step = max(1, (1 << 20) // max(1, array.shape[1]))
        for top in range(0, array.shape[0], step):
            band = array[top : top + step]
            colour, alpha = band[..., :-1].astype(np.uint16), band[..., -1:].astype(np.uint16)
            composited[top : top + step] = (colour * alpha + 127) // 255
        array = composited
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(array)


BRAIN_THRESHOLD = 45
"""Grey level (0-255, after a 5x5 Gaussian blur) above which a pixel counts as head rather than
background in :func:`brain_box`: the value of the widely used brain-cropping step for this data
set (threshold, erode and dilate twice, largest contour's extreme points)."""


def head_region(
    rgb: np.ndarray, *, threshold: float | None = BRAIN_THRESHOLD
) -> tuple[tuple[int, int, int, int], float] | None:
    """The head in an MRI slice, as :func:`brain_box` finds it: its bounding rectangle and area.

    The head is the largest connected region brighter than ``threshold`` (after a 5x5 Gaussian
    blur, erosion and dilation, which drop specks and thin text), with any other region of at
    least a tenth of its area (a head the threshold splits, the orbits of an axial slice, stays
    whole).

    Args:
        rgb: a uint8 image, (H, W, 3) or (H, W).
        threshold: the grey level of the head; None adapts it to the image's contrast (half
            its Otsu threshold).

    Returns:
        ``((x, y, w, h), area)``: the regions' bounding rectangle and their summed contour area
        in pixels; None where no region is brighter than the threshold (blank, or all dark).
    """
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    blurred = cv2.GaussianBlur(grey, (5, 5), 0)
    if threshold is None:
        # Measured on 500 known copies of the Kaggle set: the fixed level 45 gave both copies one
        # head square in 47% of the pairs (a darker copy loses its scalp), half Otsu's in 69%.
        otsu, _ = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        threshold = otsu / 2
    _, binary = cv2.threshold(blurred, float(threshold), 255, cv2.THRESH_BINARY)
    binary = cv2.dilate(cv2.erode(binary, None, iterations=2), None, iterations=2)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    areas = [cv2.contourArea(c) for c in contours]
    largest = max(areas)
    kept = [c for c, a in zip(contours, areas, strict=True) if a >= largest / 10]
    x, y, w, h = cv2.boundingRect(np.concatenate(kept))
    return (x, y, w, h), float(sum(a for a in areas if a >= largest / 10))


def brain_box(
    rgb: np.ndarray, *, threshold: float | None = BRAIN_THRESHOLD
) -> tuple[int, int, int]:
    """The square around the head in an MRI slice: ``(x0, y0, side)`` in pixels.

    The head is :func:`head_region`'s: the largest connected region brighter than
    :data:`BRAIN_THRESHOLD` (after erosion and dilation, which drop specks and thin text), with
    any other region of at least a tenth of its area; the square is their bounding box grown
    on the shorter side, about the box's centre, so that resizing keeps the aspect ratio. The
    square may reach past the image, where :func:`crop_square` pads with black. An image with no
    such region (blank, or all dark) gets the square around the whole image.

    Args:
        rgb: a uint8 image, (H, W, 3) or (H, W).
        threshold: the grey level of the head; None adapts it to the image's contrast (half
            its Otsu threshold), which finds one box for copies of a slice whose contrast
            differs (the copy audit); the model's crop keeps the fixed level.

    Returns:
        ``(x0, y0, side)``: the square's top-left corner (may be negative) and its side.
    """
    region = head_region(rgb, threshold=threshold)
    if region is None:
        height, width = rgb.shape[:2]
        side = max(height, width)
        return (width - side) // 2, (height - side) // 2, side
    (x, y, w, h), _ = region
    side = max(w, h)
    return x + (w - side) // 2, y + (h - side) // 2, side


def crop_square(array: np.ndarray, box: tuple[int, ...]) -> np.ndarray:
    """Cut the square ``box`` (:func:`brain_box`) out of an image or mask, black beyond its edge.

    Args:
        array: (H, W) or (H, W, C) pixels.
        box: ``(x0, y0, side)``, or ``(x0, y0, width, height)`` for a rectangle (the square of
            an image seen in a mask of another aspect ratio).

    Returns:
        The (side, side[, C]) square, or the (height, width[, C]) rectangle.
    """
    x0, y0, w, h = box if len(box) == 4 else (*box, box[2])
    height, width = array.shape[:2]
    pad = [(max(0, -y0), max(0, y0 + h - height)), (max(0, -x0), max(0, x0 + w - width))]
    padded = np.pad(array, pad + [(0, 0)] * (array.ndim - 2))
    top, left = y0 + pad[0][0], x0 + pad[1][0]
    return padded[top : top + h, left : left + w]


def read_rgb(path: Path) -> np.ndarray:
    """The file's pixels at their own size as uint8 RGB (errors name the file)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    try:
        return to_rgb8(decode_image_bytes(data, suffix=path.suffix)[0])
    except DecodeError as exc:
        raise ValueError(f"{path}: unreadable image: {exc}") from None


def read_grey(path: Path | str) -> np.ndarray:
    """A file's pixels as one uint8 grey channel, through the same size guard as every image.

    Args:
        path: an image file (a tumour mask, say).

    Returns:
        A 2-D uint8 array at the file's own size.

    Raises:
        ValueError: unreadable, or larger than the pixel limit (the message names the file).
    """
    return cv2.cvtColor(read_rgb(Path(path)), cv2.COLOR_RGB2GRAY)


def crop_like_image(mask: np.ndarray, image_path: Path) -> np.ndarray:
    """Cut a mask to the square that ``load_image(image_path, ..., crop=True)`` cuts from its
    image, so that mask and image stay aligned.

    Args:
        mask: the image's mask, (H, W), at the image's size or another (the square is scaled).
        image_path: the image the mask belongs to.

    Returns:
        The mask's cut of the image's square (resize it as the image is resized: it is square
        unless the mask's aspect ratio differs from the image's).

    Raises:
        ValueError: the image cannot be read (the message names the file).
    """
    rgb = read_rgb(Path(image_path))
    x0, y0, side = brain_box(rgb)
    sy, sx = mask.shape[0] / rgb.shape[0], mask.shape[1] / rgb.shape[1]
    if (sy, sx) == (1.0, 1.0):
        return crop_square(mask, (x0, y0, side))
    # the image's square, in the mask's pixels: a rectangle where the aspect ratios differ
    box = (round(x0 * sx), round(y0 * sy), max(1, round(side * sx)), max(1, round(side * sy)))
    return crop_square(mask, box)


def load_image(path: Path, size: int, *, crop: bool = False) -> np.ndarray:
    """Return an image file as uint8 RGB of shape (size, size, 3): the one normalisation.

    Args:
        path: the image file (any format OpenCV or PIL reads, any bit depth or channels).
        size: the side of the square output, in pixels.
        crop: first cut the image to the square around the head (:func:`brain_box`), so that
            the black margins and the share of the frame the head fills (which differ between
            the classes' source collections) carry no signal (``model.crop_to_brain``).

    Returns:
        The pixels, 16-bit data scaled by the image's maximum, alpha composited on black,
        optionally cropped to the head, resized with area interpolation when the image is not
        already size x size.

    Raises:
        ValueError: size is not positive, or the file cannot be read or decoded (the
            message names the file).
    """
    path, size = Path(path), int(size)
    if size < 1:
        raise ValueError(f"{path}: image size must be a positive integer, got {size}")
    return fit_image(read_rgb(path), size, crop=crop)


def fit_image(rgb: np.ndarray, size: int, *, crop: bool = False) -> np.ndarray:
    """Decoded uint8 RGB pixels as a model input: optionally cut to the head, then resized.

    The one place both the data set's images (:func:`load_image`) and new scans
    (``data.scans.read_scan``, DICOM included) become size x size.

    Args:
        rgb: (H, W, 3) uint8 pixels.
        size: the side of the square output.
        crop: first cut to the square around the head (:func:`brain_box`).

    Returns:
        The (size, size, 3) pixels, resized with area interpolation where needed.
    """
    if crop:
        rgb = crop_square(rgb, brain_box(rgb))
    if rgb.shape[:2] != (size, size):
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return rgb


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of a uint8 RGB image (the served page, predict's report and the explorer).

    Args:
        rgb: an (H, W, 3) uint8 array in RGB channel order.

    Returns:
        The PNG file's bytes.

    Raises:
        ValueError: the array is not a non-empty (H, W, 3) uint8 image, or OpenCV could not
            encode it.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or not rgb.size:
        raise ValueError(
            f"encode_png: expected a non-empty (H, W, 3) uint8 RGB image, got a {rgb.shape} {rgb.dtype} array"
        )
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"encode_png: OpenCV could not encode a {rgb.shape} {rgb.dtype} array")
    return data.tobytes()
