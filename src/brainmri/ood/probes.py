"""The probe set of the OOD guard: foreign inputs from what installed packages ship or can be
generated, deterministic (seeded), each at its own size as a user's file would be read.

Kinds are grouped: ``far`` (plainly not a brain MRI slice: photographs, noise, blank and
gradient images, logos, X-ray-like drawings, CT and other modalities, terrain maps),
``near`` (brain MRI slices made foreign: turned a quarter, contrast inverted; MRI of another
kind), and ``stress`` (attempts to slip past the guard: grey photographs, a photograph cut to a
head-like ellipse on black, validation slices in another scanner-like contrast).
"""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from brainmri.data.images import decode_image_bytes, to_rgb8

GROUPS = ("far", "near", "stress")
"""The probe groups, in reporting order."""


def _rgb(grey_or_rgb: np.ndarray) -> np.ndarray:
    a = np.clip(np.round(grey_or_rgb), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(cv2.cvtColor(a, cv2.COLOR_GRAY2RGB) if a.ndim == 2 else a)


def _sample(name: str) -> bytes:
    import matplotlib

    return (Path(matplotlib.get_data_path()) / "sample_data" / name).read_bytes()


def _decode(data: bytes) -> np.ndarray:
    """Encoded image bytes to uint8 RGB exactly as ``brainmri predict`` reads a file (alpha
    composited on black): a probe must be what the guard would be shown."""
    return to_rgb8(decode_image_bytes(data)[0])


def photographs() -> list[np.ndarray]:
    """matplotlib's bundled photographs: Grace Hopper, and a product photograph."""
    return [_decode(_sample("grace_hopper.jpg")), _decode(_sample("Minduka_Present_Blue_Pack.png"))]


def _crops(images: Sequence[np.ndarray], rng: np.random.Generator, per: int) -> list[np.ndarray]:
    """Each image whole, mirrored, and cut to ``per`` random squares of half to all its side."""
    out = []
    for image in images:
        out += [image, image[:, ::-1].copy()]
        h, w = image.shape[:2]
        for _ in range(per):
            side = int(min(h, w) * rng.uniform(0.5, 1.0))
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            out.append(np.ascontiguousarray(image[y : y + side, x : x + side]))
    return out


def _figure_pixels(draw, size: int = 384, face: str = "white") -> np.ndarray:
    """An RGB array of a matplotlib figure drawn by ``draw(ax)`` (Agg, no window)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size / 96, size / 96), dpi=96, facecolor=face)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_facecolor(face)
    draw(ax)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


def logos() -> list[np.ndarray]:
    """matplotlib's logo, and drawn logos: words and shapes, in colour and in grey, on white
    and on black."""
    from matplotlib.patches import Circle, RegularPolygon

    def words(text: str, colour: str):
        return lambda ax: ax.text(
            0.5, 0.5, text, ha="center", va="center", fontsize=40, color=colour, weight="bold"
        )

    def shapes(colours: Sequence[str]):
        def draw(ax):
            ax.add_patch(Circle((0.35, 0.55), 0.25, color=colours[0]))
            ax.add_patch(RegularPolygon((0.65, 0.4), 5, radius=0.25, color=colours[1]))

        return draw

    out = [_decode(_sample("logo2.png"))]
    out.append(_figure_pixels(words("brainmri", "tab:blue")))
    out.append(_figure_pixels(words("LOGO", "black")))
    out.append(_figure_pixels(words("MRI", "white"), face="black"))
    out.append(_figure_pixels(shapes(["tab:red", "tab:green"])))
    out.append(_figure_pixels(shapes(["0.3", "0.6"])))
    out.append(_figure_pixels(shapes(["0.9", "0.7"]), face="black"))
    out.append(_figure_pixels(shapes(["tab:orange", "tab:purple"]), face="black"))
    return out


def noise(rng: np.random.Generator) -> list[np.ndarray]:
    """Uniform, Gaussian, colour, salt-and-pepper and smoothed (blob) noise at a few sizes."""
    out = []
    for size in (192, 256, 512):
        out.append(_rgb(rng.uniform(0, 255, (size, size))))
        out.append(_rgb(rng.normal(128, 50, (size, size))))
        out.append(_rgb(rng.uniform(0, 255, (size, size, 3))))
        out.append(_rgb((rng.random((size, size)) < 0.5) * 255.0))
        blobs = cv2.GaussianBlur(rng.normal(0, 1, (size, size)), (0, 0), size / 24)
        out.append(_rgb(cv2.normalize(blobs, None, 0, 255, cv2.NORM_MINMAX)))
    return out


def blanks() -> list[np.ndarray]:
    """Constant images: black, white, mid grey, and black with one-level dither."""
    out = [_rgb(np.full((256, 256), v, np.float64)) for v in (0, 255, 128, 60)]
    out.append(_rgb((np.indices((256, 256)).sum(0) % 2).astype(np.float64)))
    return out


def gradients() -> list[np.ndarray]:
    """Linear ramps across and down, a diagonal one, and radial ones (bright middle, dark
    edges: the coarsest head-like picture)."""
    y, x = np.mgrid[0:256, 0:256] / 255.0
    r = np.hypot(x - 0.5, y - 0.5) / np.sqrt(0.5)
    return [
        _rgb(x * 255),
        _rgb(y * 255),
        _rgb((x + y) / 2 * 255),
        _rgb((1 - r) * 255),
        _rgb(np.clip(1 - 2 * r, 0, 1) * 255),
        _rgb(r * 255),
    ]


def xray_like(rng: np.random.Generator, count: int = 6) -> list[np.ndarray]:
    """Chest-radiograph-like drawings: a bright body, two dark lungs, a spine, ribs, the heart,
    blurred, with quantum-like noise; some collimated on black, some filling the frame."""
    out = []
    for i in range(count):
        size = 512
        img = np.full((size, size), 25.0 if i % 2 else 90.0, np.float64)
        c = size / 2 + rng.normal(0, 10, 2)
        cv2.ellipse(img, (int(c[0]), int(c[1] + 20)), (200, 240), 0, 0, 360, 170, -1)
        for side in (-1, 1):
            centre = (int(c[0] + side * 95), int(c[1]))
            axes = (int(70 + rng.normal(0, 6)), int(150 + rng.normal(0, 8)))
            cv2.ellipse(img, centre, axes, side * 8, 0, 360, 55, -1)
            for rib in range(7):
                cy = int(c[1] - 130 + rib * 40)
                cv2.ellipse(img, (int(c[0]), cy), (150, 40), 0, 180 + (side > 0) * -180 + 10,
                            270 + (side > 0) * -180 + 80, 120, 6)  # fmt: skip
        cv2.rectangle(img, (int(c[0] - 18), 0), (int(c[0] + 18), size), 200, -1)
        cv2.ellipse(img, (int(c[0] + 35), int(c[1] + 70)), (80, 65), 20, 0, 360, 150, -1)
        img = cv2.GaussianBlur(img, (0, 0), 6) + rng.normal(0, 6, img.shape)
        out.append(_rgb(img))
    return out


def dicom_slices() -> dict[str, list[np.ndarray]]:
    """pydicom's bundled test slices read as predict reads DICOM: CT (CT_small, 693_J2KI), other
    modalities (a whole-body NM, a liver segmentation), and an MR (MR_small, 64 px)."""
    from pydicom.data import get_testdata_file

    from brainmri.data.scans import ScanError, read_dicom

    def read(names: Sequence[str]) -> list[np.ndarray]:
        out = []
        for name in names:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = get_testdata_file(name)
            if path is None:
                continue
            try:
                out.append(read_dicom(Path(path)))
            except ScanError:  # a codec the machine lacks: that file is not a probe here
                continue
        return out

    return {
        "CT": read(["CT_small.dcm", "693_J2KI.dcm"]),
        "other modality": read(["JPEG2000.dcm", "liver_1frame.dcm"]),
        "MR_small": read(["MR_small.dcm"]),
    }


def terrain_maps() -> list[np.ndarray]:
    """matplotlib's elevation grids (topobathy, Jacksboro fault) as grey images: natural,
    smooth, grey, unlike a slice."""
    import io

    out = []
    for name, key in (("topobathy.npz", "topo"), ("jacksboro_fault_dem.npz", "elevation")):
        with np.load(io.BytesIO(_sample(name))) as npz:
            grid = np.asarray(npz[key], np.float64)
        out.append(to_rgb8(grid))  # stretched min..max, as predict reads float images
    return out


def sagittal_mri() -> np.ndarray:
    """matplotlib's s1045.ima: a 256 x 256 sagittal head MRI (16-bit), scaled by its maximum
    as the data's one normalisation scales 16-bit images."""
    grid = np.frombuffer(gzip.decompress(_sample("s1045.ima.gz")), np.uint16).reshape(256, 256)
    return to_rgb8(grid)


def in_head_ellipse(image: np.ndarray) -> np.ndarray:
    """A picture cut to the ellipse inscribed in its centre square, on black: head-shaped."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    side = min(h, w)
    square = grey[
        (h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side
    ]
    canvas = np.zeros((int(side * 1.25), int(side * 1.25)), np.uint8)
    mask = np.zeros_like(canvas)
    centre = (canvas.shape[1] // 2, canvas.shape[0] // 2)
    cv2.ellipse(mask, centre, (int(side * 0.4), int(side * 0.48)), 0, 0, 360, 255, -1)
    top = (canvas.shape[0] - side) // 2
    canvas[top : top + side, top : top + side] = square
    return _rgb(np.where(mask > 0, canvas, 0))


def contrast_variants(slices: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Slices in another scanner-like contrast: gamma 0.5 and 2, and CLAHE-equalised, in turn."""
    clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8))
    out = []
    for i, rgb in enumerate(slices):
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64) / 255
        kind = i % 3
        if kind == 0:
            out.append(_rgb(grey**0.5 * 255))
        elif kind == 1:
            out.append(_rgb(grey**2.0 * 255))
        else:
            out.append(_rgb(clahe.apply((grey * 255).astype(np.uint8))))
    return out


def probe_set(
    val_slices: Sequence[np.ndarray], *, seed: int = 0
) -> dict[str, tuple[str, list[np.ndarray]]]:
    """Every probe kind with its group and its images (uint8 RGB at their own sizes).

    Args:
        val_slices: some validation slices at their own size (uint8 RGB), made foreign for the
            near kinds (a few dozen is enough).
        seed: the seed of every random choice (crops, noise, drawings).

    Returns:
        ``{kind: (group, images)}``, far kinds first, then near, then stress.
    """
    rng = np.random.default_rng(seed)
    photos = photographs()
    grey_photos = [_rgb(cv2.cvtColor(p, cv2.COLOR_RGB2GRAY)) for p in photos]
    dicoms = dicom_slices()
    slices = [np.ascontiguousarray(s) for s in val_slices]
    probes: dict[str, tuple[str, list[np.ndarray]]] = {
        "photograph": ("far", _crops(photos, rng, 4)),
        "logo": ("far", logos()),
        "noise": ("far", noise(rng)),
        "blank": ("far", blanks()),
        "gradient": ("far", gradients()),
        "X-ray-like": ("far", xray_like(rng)),
        "CT": ("far", dicoms["CT"]),
        "other modality": ("far", dicoms["other modality"]),
        "terrain map": ("far", terrain_maps()),
        "rotated 90°": ("near", [np.ascontiguousarray(np.rot90(s)) for s in slices]),
        "inverted contrast": ("near", [255 - s for s in slices]),
        "other MRI": ("near", [sagittal_mri(), *dicoms["MR_small"]]),
        "grey photograph": ("stress", _crops(grey_photos, rng, 4)),
        "photograph in head ellipse": (
            "stress",
            [in_head_ellipse(p) for p in _crops(photos, rng, 2)],
        ),
        "MRI in another contrast": ("stress", contrast_variants(slices)),
    }
    return {kind: (group, images) for kind, (group, images) in probes.items() if images}
