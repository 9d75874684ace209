"""What an image file declares before any decoder runs: its format by content, its size, and
the pixel limit that keeps a small file from decoding to gigabytes (a "decompression bomb").

OpenCV and PIL pick their decoder by content and allocate what a header declares, so every file is
measured here first, by parsers of its own for the formats this project reads, and refused by
name when it cannot be measured.
"""

from __future__ import annotations

import io
import struct
from typing import NamedTuple

from PIL import Image


class DecodeError(ValueError):
    """A file that is not a readable image; the message is the manifest's reason."""


MAX_PIXELS = 40_000_000
"""The most pixels an image may have before it is decoded (params: data.max_image_pixels has
the same default). An MRI slice has well under a million; a small PNG can declare 30000x30000
(a "decompression bomb": 876 KB on disk, 5.5 GB once decoded), so the header is checked first."""


_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"BM": "BMP",
}
"""Leading bytes of the formats in IMAGE_EXTENSIONS."""

_FORMAT_OF_SUFFIX = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
"""The one format each extension in IMAGE_EXTENSIONS may hold. OpenCV and PIL choose their
decoder by content, so without this a Radiance HDR named .png would reach a float decoder that
nothing measured first."""

_OTHER_SIGNATURES = {
    b"#?RADIANCE": "Radiance HDR",
    b"#?RGBE": "Radiance HDR",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n": "JPEG 2000",
    b"\xff\x4f\xff\x51": "JPEG 2000",
    b"v/1\x01": "OpenEXR",
    b"\x59\xa6\x6a\x95": "Sun raster",
    b"PF\n": "PFM",
    b"Pf\n": "PFM",
}
"""Leading bytes of formats some decoder here would read but this project does not accept: named
in the reason a file is refused for."""

MAX_BYTES_PER_PIXEL = 8
"""The most decoded bytes per pixel the limit allows on average (16-bit RGBA): an image of
MAX_PIXELS pixels then decodes to at most 320 MB, and a float or 32-bit multi-channel TIFF,
up to 24 bytes a pixel, counts for what it decodes to."""


class ImageHeader(NamedTuple):
    """What a file's header declares, read before any decoder runs."""

    format: str
    """"JPEG", "PNG", "BMP" or "TIFF"."""
    width: int
    height: int
    bytes_per_pixel: int
    """Decoded bytes per pixel (channels x bytes per sample), an upper bound."""
    mode: str | None
    """PIL's mode where PIL could open the header, else None."""


def _content_format(data: bytes) -> str | None:
    """The format the leading bytes name: one of _SIGNATURES' or _OTHER_SIGNATURES', or None."""
    for signatures in (_SIGNATURES, _OTHER_SIGNATURES):
        for signature, name in signatures.items():
            if data.startswith(signature):
                return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[128:132] == b"DICM":
        return "DICOM"
    if len(data) > 2 and data[:1] == b"P" and data[1:2] in b"1234567" and data[2:3].isspace():
        return "PNM"
    return None


def _png_size(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, bytes per pixel) from the IHDR chunk, which PNG puts first."""
    if data[12:16] != b"IHDR" or len(data) < 26:
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    # palette images decode to BGR(A); 16-bit samples stay 16-bit (IMREAD_UNCHANGED)
    channels = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}.get(colour)
    if channels is None:
        return None
    return width, height, channels * (2 if depth == 16 else 1)


_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""The start-of-frame markers (baseline, progressive, lossless, arithmetic); C4, C8 and CC are
other segments."""


def _jpeg_size(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, bytes per pixel) from the first start-of-frame segment, walking the
    segments as libjpeg does (a second frame header is an error to it)."""
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a segment
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _JPEG_FRAMES:
            if pos + 10 > end:
                return None
            precision, height, width, components = struct.unpack(">BHHB", data[pos + 4 : pos + 10])
            return width, height, components * (2 if precision > 8 else 1)
        if length < 2:
            return None
        pos += 2 + length
    return None


def _bmp_size(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, bytes per pixel) from the BITMAPCOREHEADER or BITMAPINFOHEADER."""
    if len(data) < 26:
        return None
    header = int.from_bytes(data[14:18], "little")
    if header == 12:  # OS/2: 16-bit sizes
        width, height = struct.unpack("<HH", data[18:22])
    elif header >= 40 and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
    else:
        return None
    return abs(width), abs(height), 4  # decoded as BGR, or BGRA from 32 bits


def _tiff_size(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, bytes per pixel) from the first image file directory (the page OpenCV
    decodes): ImageWidth, ImageLength, BitsPerSample and SamplesPerPixel."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 8:
        return None
    (offset,) = struct.unpack(order + "I", data[4:8])
    if offset + 2 > len(data):
        return None
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    sizes = {1: 1, 3: 2, 4: 4}  # BYTE, SHORT, LONG
    tags: dict[int, list[int]] = {}
    for i in range(count):
        entry = data[offset + 2 + 12 * i : offset + 14 + 12 * i]
        if len(entry) < 12:
            return None
        tag, kind, n = struct.unpack(order + "HHI", entry[:8])
        if tag not in (256, 257, 258, 277) or kind not in sizes:
            continue
        size = sizes[kind] * n
        raw = entry[8 : 8 + size] if size <= 4 else b""
        if size > 4:
            (at,) = struct.unpack(order + "I", entry[8:12])
            raw = data[at : at + size]
        if len(raw) < size:
            return None
        letter = {1: "B", 3: "H", 4: "I"}[kind]
        tags[tag] = list(struct.unpack(order + letter * n, raw))
    if 256 not in tags or 257 not in tags:
        return None
    samples = tags.get(277, [1])[0]
    bits = max(tags.get(258, [1]))
    return tags[256][0], tags[257][0], max(1, samples) * max(1, -(-bits // 8))


_OWN_PARSERS = {"PNG": _png_size, "JPEG": _jpeg_size, "BMP": _bmp_size, "TIFF": _tiff_size}


def measure_image(data: bytes, suffix: str | None = None) -> ImageHeader:
    """Read an image's declared size from its header, before any decoder runs.

    A small parser of each format's header reads the size whatever PIL makes of the rest of the
    file (PIL refuses a PNG for a bad checksum in a text chunk that OpenCV merely warns of);
    PIL's lazy open measures too, and where both measure, the larger counts.

    Args:
        data: the file's bytes.
        suffix: its extension; the content must then be that extension's format (OpenCV and PIL
            choose their decoder by content). None accepts any format of IMAGE_EXTENSIONS.

    Returns:
        The format, width, height, decoded bytes per pixel and PIL's mode (None where PIL
        cannot open the header).

    Raises:
        DecodeError: empty, not an image, another format than the extension says, or a
            header without a size that can be read (the message is the reason).
    """
    if not data:
        raise DecodeError("empty file")
    fmt = _content_format(data)
    expected = _FORMAT_OF_SUFFIX.get(suffix.lower()) if suffix else None
    if fmt is None:
        raise DecodeError("not an image")
    if fmt not in _FORMAT_OF_SUFFIX.values() or (expected and fmt != expected):
        wanted = (
            f"the {expected} its extension {suffix} says" if expected else "JPEG, PNG, BMP or TIFF"
        )
        raise DecodeError(f"the content is {fmt}, not {wanted}; not decoded")
    sizes, mode = [], None
    own = _OWN_PARSERS.get(fmt)
    if own is not None and (size := own(data)) is not None:
        sizes.append(size)
    try:  # header only; formats=[fmt] keeps PIL from trying another plugin on the bytes
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            mode = im.mode
            sizes.append((*im.size, 1))
    except Image.DecompressionBombError as exc:  # PIL's own, far higher, limit
        raise DecodeError(f"too large: {exc}; not decoded") from None
    except Exception:  # PIL raises OSError, ValueError, SyntaxError, ...
        pass
    if not sizes:
        raise DecodeError(
            f"truncated or corrupt: a {fmt} header without a readable size; not decoded"
        )
    width, height, _ = max(sizes, key=lambda s: s[0] * s[1])
    per_pixel = max(s[2] for s in sizes)
    return ImageHeader(fmt, width, height, per_pixel, mode)


def check_size(header: ImageHeader, max_pixels: int) -> None:
    """Refuse an image whose declared pixels, or decoded bytes, exceed the limit.

    Args:
        header: from :func:`measure_image`.
        max_pixels: the limit (``data.max_image_pixels``).

    Raises:
        DecodeError: the image is too large; the message says by how much and names the key.
    """
    width, height = header.width, header.height
    if width * height > max_pixels:
        raise DecodeError(
            f"too large: {width}x{height} pixels declared, more than the limit of "
            f"{max_pixels:,} (data.max_image_pixels); not decoded"
        )
    if width * height * header.bytes_per_pixel > max_pixels * MAX_BYTES_PER_PIXEL:
        raise DecodeError(
            f"too large: {width}x{height} pixels of {header.bytes_per_pixel} bytes declared, "
            f"more than {max_pixels:,} pixels of {MAX_BYTES_PER_PIXEL} (data.max_image_pixels); "
            "not decoded"
        )
