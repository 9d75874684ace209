"""Drawing one synthetic axial brain-MRI slice of a class, with its tumour mask.

Every slice is drawn in two stages from one random generator. First everything that does not
depend on the class (head shape and pose, skull, parenchyma texture, ventricles, intensity
scale, bias field, noise fields); then the class's lesion. With the same generator state the
four classes therefore give the same head and differ only at and around the lesion, so nothing
outside the lesion can reveal the class.

Geometry is computed on a normalised pixel grid (x, y in [-1, 1]) rotated into the head frame
(u lateral, v anterior-posterior, v > 0 towards the bottom of the image). The drawing is
hand-written with numpy/OpenCV because no maintained library generates labelled 2D slices with
class-specific lesions (phantoms such as BrainWeb are fixed 3D volumes, not generators).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from brainmri.config import CLASS_NAMES, TUMOUR_CLASSES

FORMAT_VERSION = 3
"""Bump when the rendering changes, so existing phantom folders are regenerated."""
MIN_SIZE = 32

_GLIOMA, _MENINGIOMA, _PITUITARY = TUMOUR_CLASSES


# --- small numeric helpers --------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Return a smooth random field (about unit amplitude) with `cells` blobs across the image."""
    # Upsampling a coarse random grid is a cheap, resolution-independent low-pass noise.
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    """Return the cubic smoothstep of t clipped to [0, 1]."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _polar_radius(
    rng: np.random.Generator, radius: float, wobble: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw harmonics (orders, amplitudes, phases) of an irregular blob outline of mean `radius`."""
    orders = np.arange(2, 7, dtype=np.float32)
    amps = (rng.uniform(0.2, 1.0, orders.size) * wobble / orders**0.7).astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, orders.size).astype(np.float32)
    return orders, amps * radius, phases


def _outline(angle: np.ndarray, radius: float, harmonics: tuple[np.ndarray, ...]) -> np.ndarray:
    """Return the blob outline radius at each polar angle."""
    orders, amps, phases = harmonics
    out = np.full(angle.shape, radius, np.float32)
    for k, a, p in zip(orders, amps, phases, strict=True):
        out += a * np.cos(k * angle + p)
    return out


# --- the class-independent head ---------------------------------------------------------------


@dataclass
class _Head:
    """Head geometry in the rotated frame plus the class-independent finishing fields."""

    u: np.ndarray  # lateral coordinate of every pixel (normalised units)
    v: np.ndarray  # anterior-posterior coordinate, positive towards the image bottom
    a: float  # outer skull semi-axes
    b: float
    ai: float  # inner skull semi-axes (brain cavity)
    bi: float
    d_in: np.ndarray  # elliptical radius w.r.t. the inner skull (1 = inner skull surface)
    brain: np.ndarray  # bool: parenchyma (inside the cortical surface)
    image: np.ndarray  # float32 anatomy in [0, 1] before blur, bias and noise
    lesion_texture: np.ndarray  # smooth field used for lesion heterogeneity
    blur_sigma: float
    gain: np.ndarray  # multiplicative bias field times global scale
    offset: float
    noise: tuple[np.ndarray, np.ndarray]  # two Gaussian fields for Rician noise


def _draw_head(rng: np.random.Generator, size: int) -> _Head:
    """Draw and render everything that does not depend on the class."""
    # Pose and shape: axial slices are longer front-to-back than side-to-side.
    a = rng.uniform(0.70, 0.80)
    b = rng.uniform(0.82, 0.92)
    thick = rng.uniform(0.065, 0.09)
    cx, cy = rng.uniform(-0.04, 0.04, 2)
    theta = np.deg2rad(rng.uniform(-10, 10))

    coords = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1).astype(np.float32)
    dx = coords[None, :] - np.float32(cx)
    dy = coords[:, None] - np.float32(cy)
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    u = c * dx + s * dy
    v = -s * dx + c * dy

    ai, bi = a - thick, b - thick
    # The outline is an ellipse with harmonics of orders 3-5 (1-2.5% of the radius) on it. Heads
    # are not ellipses, and an affine registration maps any ellipse onto any other: without them
    # (format 2) the copy audit's registration (data.alignment) took 782 of the demo's 1,200
    # different phantoms for copies of each other.
    angle = np.arctan2(v / b, u / a)
    outline = np.ones_like(angle)
    for k in (3, 4, 5):
        outline += rng.uniform(0.01, 0.025) * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    d_out = np.sqrt((u / a) ** 2 + (v / b) ** 2) / outline
    d_in = np.sqrt((u / ai) ** 2 + (v / bi) ** 2) / outline
    phi = np.arctan2(v / bi, u / ai)

    # Skull: bright scalp/marrow ring with a darker inner table next to the brain.
    skull_level = rng.uniform(0.78, 0.92)
    skull_tex = _smooth_noise(rng, size, 24)
    image = np.zeros((size, size), np.float32)
    ring = (d_out < 1.0) & (d_in >= 1.0)
    inner_table = ring & (d_out < 1.0 - 0.7 * thick / b)
    image[ring] = skull_level + 0.04 * skull_tex[ring]
    image[inner_table] = rng.uniform(0.22, 0.32) + 0.03 * skull_tex[inner_table]

    # Brain: wavy cortical surface with a thin CSF layer outside it.
    csf_level = rng.uniform(0.08, 0.14)
    csf_w = rng.uniform(0.02, 0.04)
    edge = 1.0 - csf_w * (1.0 + 0.5 * np.sin(rng.integers(5, 9) * phi + rng.uniform(0, 6.3)))
    cavity = d_in < 1.0
    brain = d_in < edge
    image[cavity] = csf_level

    # Parenchyma: grey matter, slightly brighter gyral white matter, low-frequency texture (3-5%
    # of full scale, about half the grey-white contrast: enough that two phantoms' brains differ
    # once registered, as two patients' do).
    gm = rng.uniform(0.36, 0.42)
    wm = gm + rng.uniform(0.08, 0.12)
    wm_r = np.full(phi.shape, rng.uniform(0.74, 0.80), np.float32)
    for k in (5, 8, 13):
        wm_r += rng.uniform(0.015, 0.035) * np.sin(k * phi + rng.uniform(0, 6.3))
    wm_w = _smoothstep((wm_r - d_in) / 0.06 + 0.5)
    texture = 0.6 * _smooth_noise(rng, size, 6) + 0.4 * _smooth_noise(rng, size, 16)
    tissue = gm + (wm - gm) * wm_w + rng.uniform(0.03, 0.05) * texture

    # Sulci: thin, wiggly CSF clefts of varying depth in the outer cortex (the zero lines of a
    # smooth random field), plus the interhemispheric fissure at the front and back.
    warp = _smooth_noise(rng, size, 22)
    depth = rng.uniform(0.7, 0.78) + 0.1 * _smooth_noise(rng, size, 9)
    sulci = (np.abs(warp) < 0.11) & (d_in > depth)
    fissure = (np.abs(u) < 0.012) & (np.abs(v) > 0.68 * bi)
    parenchyma = brain & ~sulci & ~fissure
    image[parenchyma] = tissue[parenchyma]

    # Lateral ventricles: two dark banana-shaped crescents beside the midline, ")(" shaped
    # (concave laterally where the caudate nuclei indent them).
    vx = rng.uniform(0.06, 0.09) * ai
    vy = rng.uniform(-0.12, 0.02) * bi
    ra = rng.uniform(0.05, 0.075) * ai
    rb = rng.uniform(0.22, 0.32) * bi
    bend = rng.uniform(0.15, 0.3)
    tilt = np.deg2rad(rng.uniform(-6, 6))
    for side in (-1.0, 1.0):
        cos_t, sin_t = np.cos(side * tilt), np.sin(side * tilt)
        lu = cos_t * (u - side * vx) + sin_t * (v - vy)
        lv = -sin_t * (u - side * vx) + cos_t * (v - vy)
        lu = lu - side * bend * lv**2 / rb  # bend the ends laterally
        body = (lu / ra) ** 2 + (lv / rb) ** 2 < 1.0
        image[body & brain] = csf_level + 0.02

    # Acquisition: global scale and offset, smooth multiplicative bias field, Rician noise.
    bias_dir = rng.uniform(0, 2 * np.pi)
    bias_strength = rng.uniform(0.0, 0.15)
    x_img, y_img = coords[None, :], coords[:, None]
    field = 1.0 + bias_strength * (np.cos(bias_dir) * x_img + np.sin(bias_dir) * y_img)
    field = field + 0.04 * _smooth_noise(rng, size, 4)
    gain = (rng.uniform(0.85, 1.10) * field).astype(np.float32)
    offset = float(rng.uniform(-0.02, 0.03))
    sigma = np.float32(rng.uniform(0.02, 0.04))
    noise = (
        sigma * rng.standard_normal((size, size), dtype=np.float32),
        sigma * rng.standard_normal((size, size), dtype=np.float32),
    )
    lesion_texture = _smooth_noise(rng, size, 20)
    return _Head(
        u=u,
        v=v,
        a=a,
        b=b,
        ai=ai,
        bi=bi,
        d_in=d_in,
        brain=brain,
        image=image,
        lesion_texture=lesion_texture,
        blur_sigma=0.5 * size / 128,
        gain=gain,
        offset=offset,
        noise=noise,
    )


# --- the class lesions ------------------------------------------------------------------------


def _glioma(head: _Head, rng: np.random.Generator) -> np.ndarray:
    """Draw an irregular, heterogeneous intra-axial mass with an oedema halo; return its mask."""
    radius = rng.uniform(0.10, 0.17)
    harmonics = _polar_radius(rng, radius, 0.32)
    reach = radius + float(np.abs(harmonics[1]).sum())
    margin = 0.08
    rho_max = 1.0 - (reach + margin) / min(head.ai, head.bi)
    rho = rng.uniform(0.3, max(rho_max, 0.31))
    ang = rng.uniform(0, 2 * np.pi)
    cu, cv = rho * head.ai * np.cos(ang), rho * head.bi * np.sin(ang)
    du, dv = head.u - cu, head.v - cv
    dist = np.sqrt(du**2 + dv**2)
    angle = np.arctan2(dv, du)
    outline = _outline(angle, radius, harmonics)
    mask = (dist < outline) & (head.d_in < 1.0)

    # Oedema: faint brighter rim, same irregular shape, fading out to 1.5-1.9 x the radius.
    halo_scale = rng.uniform(1.5, 1.9)
    halo = _smoothstep((halo_scale * outline - dist) / ((halo_scale - 1.0) * outline))
    halo_gain = rng.uniform(0.06, 0.10)
    head.image += (halo_gain * halo * (head.brain & ~mask)).astype(np.float32)

    # Enhancing rim with internal texture and (usually) a darker necrotic core.
    level = rng.uniform(0.70, 0.84)
    tex = head.lesion_texture
    lesion = level + rng.uniform(0.06, 0.10) * tex
    if rng.random() < 0.8:
        core_scale = rng.uniform(0.35, 0.6)
        core_shift = rng.uniform(-0.15, 0.15, 2) * radius
        cdist = np.sqrt((du - core_shift[0]) ** 2 + (dv - core_shift[1]) ** 2)
        core = _smoothstep((core_scale * outline - cdist) / (0.25 * outline))
        necrotic = rng.uniform(0.18, 0.30) + 0.04 * tex
        lesion = lesion + (necrotic - lesion) * core
    else:
        lesion = lesion + 0.07 * np.abs(tex)
    head.image[mask] = lesion[mask]
    return mask


def _meningioma(head: _Head, rng: np.random.Generator) -> np.ndarray:
    """Draw a round, homogeneous bright mass attached to the inner skull; return its mask."""
    radius = rng.uniform(0.11, 0.18)
    r_normal = radius * rng.uniform(0.75, 1.0)
    r_tangent = radius * rng.uniform(1.0, 1.35)
    psi = rng.uniform(0, 2 * np.pi)
    # Outward normal of the inner skull ellipse at parameter psi.
    nu, nv = np.cos(psi) / head.ai, np.sin(psi) / head.bi
    norm = np.hypot(nu, nv)
    nu, nv = nu / norm, nv / norm
    depth = r_normal * rng.uniform(0.35, 0.75)  # how far the centre sits inside the skull
    cu = head.ai * np.cos(psi) - depth * nu
    cv = head.bi * np.sin(psi) - depth * nv
    du, dv = head.u - cu, head.v - cv
    along_n = du * nu + dv * nv
    along_t = -du * nv + dv * nu
    inside = (along_n / r_normal) ** 2 + (along_t / r_tangent) ** 2 < 1.0
    mask = inside & (head.d_in < 1.0)
    level = rng.uniform(0.72, 0.86)
    lesion = level + 0.015 * head.lesion_texture
    head.image[mask] = lesion[mask]
    return mask


def _pituitary(head: _Head, rng: np.random.Generator) -> np.ndarray:
    """Draw a small round bright mass in the sellar region at the midline; return its mask."""
    radius = rng.uniform(0.07, 0.11)
    harmonics = _polar_radius(rng, radius, 0.12)
    cu = rng.normal(0.0, 0.012)
    cv = head.b * (2.0 * rng.uniform(0.65, 0.75) - 1.0)
    elong = rng.uniform(0.8, 1.0)
    turn = rng.uniform(0, np.pi)
    du, dv = head.u - cu, head.v - cv
    ru = np.cos(turn) * du + np.sin(turn) * dv
    rv = (-np.sin(turn) * du + np.cos(turn) * dv) / elong
    dist = np.sqrt(ru**2 + rv**2)
    mask = (dist < _outline(np.arctan2(rv, ru), radius, harmonics)) & (head.d_in < 1.0)
    level = rng.uniform(0.72, 0.86)
    lesion = level + 0.02 * head.lesion_texture
    head.image[mask] = lesion[mask]
    return mask


_LESIONS = {_GLIOMA: _glioma, _MENINGIOMA: _meningioma, _PITUITARY: _pituitary}


def _finish(head: _Head) -> np.ndarray:
    """Apply partial-volume blur, bias field, offset and Rician noise; quantise to uint8."""
    image = cv2.GaussianBlur(head.image, (0, 0), head.blur_sigma)
    image = image * head.gain + np.float32(head.offset)
    n1, n2 = head.noise
    image = np.sqrt((image + n1) ** 2 + n2**2)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def render_slice(label: str, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one phantom axial slice of a class: (uint8 image HxW, bool lesion mask HxW)."""
    if label not in CLASS_NAMES:
        raise ValueError(f"render_slice: unknown label {label!r}; expected one of {CLASS_NAMES}")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < MIN_SIZE:
        raise ValueError(f"render_slice: size must be an integer >= {MIN_SIZE}, got {size!r}")
    size = int(size)
    head = _draw_head(rng, size)
    lesion = _LESIONS.get(label)
    mask = lesion(head, rng) if lesion else np.zeros((size, size), bool)
    return _finish(head), mask
