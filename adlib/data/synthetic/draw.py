"""Drawing tools of the built-in data: offline photos, texture crops with jitter, soft-edged shapes.

No download, ever: every image starts from a photo inside `skimage.data`. A defect is drawn with a
soft blending weight ``alpha`` in [0, 1] (``image = (1 - alpha) * clean + alpha * defect``) and its
mask is ``alpha >= 0.5`` (see the package docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from ..container import ADSplit

# ---------------------------------------------------------------------------------------------
# Source photos
# ---------------------------------------------------------------------------------------------

# skimage.data images that ship inside the scikit-image wheel (checked with 0.26); others, such as
# eagle, lily or cells3d, are fetched with pooch on first use and must not be used here.
OFFLINE_PHOTOS = (
    "brick", "grass", "gravel", "moon", "coins", "immunohistochemistry", "camera", "coffee",
    "rocket", "chelsea", "astronaut", "hubble_deep_field", "retina",
)  # fmt: skip


@cache
def load_photo(name: str) -> np.ndarray:
    """A bundled photo as uint8 RGB [H, W, 3]."""
    if name not in OFFLINE_PHOTOS:
        raise ValueError(f"photo {name!r} is not one of the offline skimage photos {OFFLINE_PHOTOS}")
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3].astype(np.uint8))


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class TextureSpec:
    """How one texture (sub)class is cut from a bundled photo."""

    name: str
    photo: str  # a name from OFFLINE_PHOTOS
    tint: tuple[float, float, float] | None = None  # RGB gains that colour a grey photo
    crop_px: float = 220.0  # side of the photo region (photo pixels) that becomes one image
    rotation: float = 0.0  # base orientation, degrees
    contrast: float = 1.0  # contrast gain around the mean grey level


@dataclass(frozen=True)
class Look:
    """Changes of material and imaging applied to every image of a subclass (all off by default).

    ``weave`` changes the material (applied before a defect is drawn); ``grain``, ``blur``,
    ``gradient`` and ``jpeg`` change the imaging (applied after, so a defect is blurred or compressed
    like the rest of the image). Lengths are in pixels of a 256-px image and scale with the size.
    """

    weave: float = 0.0  # amplitude of a multiplicative sin x sin pattern (a woven look), period `weave_period`
    weave_period: float = 10.0  # px
    grain: float = 0.0  # std of additive Gaussian sensor noise, per pixel and channel
    blur: float = 0.0  # Gaussian blur sigma, px (out-of-focus imaging)
    gradient: float = 0.0  # illumination falls from 1 + g to 1 - g across the image, left to right
    jpeg: int = 0  # JPEG quality (0: no compression)

    @property
    def is_plain(self) -> bool:
        return self == Look()


def apply_material(img: np.ndarray, look: Look) -> np.ndarray:
    """The material part of `look` (weave) on img [S, S, 3] in [0, 1]."""
    if look.weave == 0:
        return img
    size = img.shape[0]
    t = np.arange(size, dtype=np.float32) * 2 * np.pi * 256 / (look.weave_period * size)
    pattern = 1 + look.weave * np.sin(t)[:, None] * np.sin(t)[None, :]  # [S, S]
    return np.clip(img * pattern[:, :, None], 0, 1)


def apply_imaging(img: np.ndarray, look: Look, rng: np.random.Generator) -> np.ndarray:
    """The imaging part of `look` (blur, illumination gradient, grain, JPEG) on img [S, S, 3] in [0, 1].

    Draws from `rng` only when ``grain`` is on, so plain looks leave the random stream untouched.
    """
    size = img.shape[0]
    if look.blur > 0:
        img = ndimage.gaussian_filter(img, sigma=(look.blur * size / 256, look.blur * size / 256, 0))
    if look.gradient != 0:
        ramp = np.linspace(1 + look.gradient, 1 - look.gradient, size, dtype=np.float32)  # [S]
        img = img * ramp[None, :, None]
    if look.grain > 0:
        img = img + rng.normal(0, look.grain, img.shape).astype(np.float32)
    img = np.clip(img, 0, 1)
    if look.jpeg > 0:
        import io

        buf = io.BytesIO()
        Image.fromarray(to_uint8(img)).save(buf, format="JPEG", quality=look.jpeg)
        img = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255
    return img.astype(np.float32)


# Normal-image jitter: each image picks one small rotation and one scale, a position and flips.
ANGLE_JITTER = (-6.0, -3.0, 0.0, 3.0, 6.0)  # degrees
SCALE_JITTER = (0.9, 1.0, 1.12)  # zoom of the crop


@lru_cache(maxsize=32)
def _toned_photo(photo: str, tint: tuple[float, float, float] | None, contrast: float) -> Image.Image:
    """The square photo with its tint and contrast applied (at the photo's own resolution)."""
    img = load_photo(photo)  # [H, W, 3]
    side = min(img.shape[:2])
    img = img[:side, :side].astype(np.float32) / 255  # square, so the valid region below is simple
    if tint is not None:  # colour a grey photo
        img = img.mean(axis=2, keepdims=True) * np.asarray(tint, dtype=np.float32)
    if contrast != 1.0:
        img = img.mean() + (img - img.mean()) * contrast
    return Image.fromarray(to_uint8(img))


@lru_cache(maxsize=16)
def _scaled_photo(photo: str, tint: tuple[float, float, float] | None, contrast: float, px: int) -> Image.Image:
    """The toned photo resized (antialiased) to px x px."""
    return _toned_photo(photo, tint, contrast).resize((px, px), Image.BILINEAR)


@lru_cache(maxsize=64)  # up to ~100 MB at 256 px; cleared after each generator
def _variant(spec: TextureSpec, size: int, angle: float, zoom: float) -> tuple[np.ndarray, int, int]:
    """The photo of `spec`, toned, scaled and rotated, plus the range of valid crop corners.

    Returns (uint8 [L, L, 3] image, lo, hi): every `size` x `size` window whose top-left corner
    lies in [lo, hi - size] on both axes contains only photo pixels (no rotated-in border).
    """
    px = round(min(load_photo(spec.photo).shape[:2]) * size * zoom / spec.crop_px)  # crop_px photo px -> size
    turned = _scaled_photo(spec.photo, spec.tint, spec.contrast, px).rotate(
        spec.rotation + angle, resample=Image.BILINEAR
    )
    # A square of side px rotated by theta contains the centred axis-aligned square of side:
    theta = np.deg2rad(spec.rotation + angle)
    inner = int(px / (abs(np.cos(theta)) + abs(np.sin(theta)))) - 2
    if inner < size:
        raise ValueError(f"{spec}: photo too small for {size}px crops at zoom {zoom}; lower crop_px")
    lo = (px - inner) // 2
    return np.asarray(turned), lo, lo + inner


def clear_caches() -> None:
    """Free the resized and rotated photos (kept only while one generator runs)."""
    _variant.cache_clear()
    _scaled_photo.cache_clear()


def crop_texture(spec: TextureSpec, size: int, rng: np.random.Generator, jitter: bool = True) -> np.ndarray:
    """One normal image: a random crop of a random variant, flipped, with brightness jitter."""
    angle = float(rng.choice(ANGLE_JITTER)) if jitter else 0.0
    zoom = float(rng.choice(SCALE_JITTER)) if jitter else 1.0
    var, lo, hi = _variant(spec, size, angle, zoom)
    y, x = rng.integers(lo, hi - size + 1, size=2)
    img = var[y : y + size, x : x + size].astype(np.float32) / 255  # [S, S, 3]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if rng.random() < 0.5:
        img = img[::-1]
    gain, offset = rng.uniform(0.92, 1.08), rng.uniform(-0.03, 0.03)
    return np.clip(img * gain + offset, 0, 1)  # [S, S, 3] float32


# ---------------------------------------------------------------------------------------------
# Shapes: soft blending weights inside a bounding box
# ---------------------------------------------------------------------------------------------


@dataclass
class Stroke:
    """A drawn change: `alpha` [h, w] and the fully changed look `patch` [h, w, 3] at `box`."""

    box: tuple[slice, slice]
    alpha: np.ndarray  # [h, w] float32 in [0, 1]
    patch: np.ndarray  # [h, w, 3] float32


def apply_stroke(img: np.ndarray, mask: np.ndarray, stroke: Stroke, draw: bool = True) -> None:
    """Blend `stroke` into img [S, S, 3] (unless not `draw`) and add `alpha >= 0.5` to mask [S, S]."""
    if draw:
        a = stroke.alpha[:, :, None]
        img[stroke.box] = img[stroke.box] * (1 - a) + stroke.patch * a
    mask[stroke.box] |= stroke.alpha >= 0.5


def box_shape(
    cy: float, cx: float, extent: float | tuple[float, float], size: int
) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """Box of half-side `extent` (or (half-height, half-width)) around (cy, cx), clipped to the
    image, and the offsets of its pixels from the centre."""
    ey, ex = extent if isinstance(extent, tuple) else (extent, extent)
    y0, y1 = max(0, int(cy - ey)), min(size, int(np.ceil(cy + ey)) + 1)
    x0, x1 = max(0, int(cx - ex)), min(size, int(np.ceil(cx + ex)) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    return slice(y0, y1), slice(x0, x1), yy - cy, xx - cx  # offsets from the centre


def blob_shape(
    size: int,
    rng: np.random.Generator,
    area: float,
    soft: float,
    aspect_max: float = 2.0,
    wobble: float = 0.3,
    center: tuple[float, float] | None = None,
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """An irregular blob of about `area` * S^2 pixels: (box, alpha [h, w], rho [h, w]).

    The outline is an ellipse whose radius wobbles with a few random harmonics; `soft` is the
    width in pixels of the alpha ramp across the outline; rho is the normalised radius (1 on the
    outline), handy for shading.
    """
    radius = np.sqrt(area / np.pi) * size
    aspect = rng.uniform(1.0, aspect_max)
    a, b = radius * np.sqrt(aspect), radius / np.sqrt(aspect)  # semi-axes
    turn = rng.uniform(0, np.pi)
    k = np.arange(2, 6)
    amps = rng.uniform(0, wobble, size=4) / k
    phases = rng.uniform(0, 2 * np.pi, size=4)
    extent = a * (1 + amps.sum()) + soft + 2
    if center is None:
        margin = min(extent, size / 2)
        center = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
    sy, sx, dy, dx = box_shape(center[0], center[1], extent, size)
    u = (dx * np.cos(turn) + dy * np.sin(turn)) / a  # along the major axis
    v = (-dx * np.sin(turn) + dy * np.cos(turn)) / b
    rho = np.hypot(u, v)  # [h, w]
    phi = np.arctan2(v, u)
    outline = 1 + (amps[:, None, None] * np.cos(k[:, None, None] * phi + phases[:, None, None])).sum(0)
    alpha = np.clip(0.5 + (outline - rho) * b / soft, 0, 1).astype(np.float32)  # ramp ~soft px wide
    return (sy, sx), alpha, (rho / outline).astype(np.float32)


def curve_shape(
    size: int, rng: np.random.Generator, length: float, width: float, center: tuple[float, float] | None = None
) -> tuple[tuple[slice, slice], np.ndarray]:
    """A thin curved line (quadratic Bezier) of `length` px and `width` px: (box, alpha [h, w])."""
    if center is None:
        m = length / 2 + width + 2
        center = (rng.uniform(m, size - m), rng.uniform(m, size - m)) if m < size / 2 else (size / 2, size / 2)
    turn = rng.uniform(0, np.pi)
    d = np.array([np.sin(turn), np.cos(turn)]) * length / 2  # half chord (dy, dx)
    bend = np.array([-d[1], d[0]]) * rng.uniform(-0.6, 0.6)  # control point off the chord
    c = np.asarray(center)
    t = np.linspace(0, 1, int(length * 3) + 2)[:, None]
    pts = (1 - t) ** 2 * (c - d) + 2 * t * (1 - t) * (c + bend) + t**2 * (c + d)  # [P, 2]
    extent = length / 2 + np.abs(bend).max() + width + 2
    sy, sx, _, _ = box_shape(center[0], center[1], extent, size)
    on_curve = np.zeros((sy.stop - sy.start, sx.stop - sx.start), dtype=bool)
    iy = np.clip(np.round(pts[:, 0]).astype(int) - sy.start, 0, on_curve.shape[0] - 1)
    ix = np.clip(np.round(pts[:, 1]).astype(int) - sx.start, 0, on_curve.shape[1] - 1)
    on_curve[iy, ix] = True
    dist = ndimage.distance_transform_edt(~on_curve)  # [h, w] px to the nearest curve pixel
    alpha = np.clip(width / 2 + 0.5 - dist, 0, 1).astype(np.float32)
    return (sy, sx), alpha


def pack_split(
    images: np.ndarray, masks: np.ndarray, kinds: list[str], prefix: str, with_masks: bool, subclass: int | None = None
) -> ADSplit:
    """A generated split: images [N, S, S, 3], masks [N, S, S], one kind ("good" or a defect) per image."""
    return ADSplit(
        images=images,
        labels=np.array([k != "good" for k in kinds], dtype=np.int64),
        masks=masks if with_masks else None,
        defect_types=kinds,
        names=[f"{prefix}/{k}/{i:03d}" for i, k in enumerate(kinds)],
        subclasses=None if subclass is None else np.full(len(kinds), subclass, dtype=np.int64),
    )
