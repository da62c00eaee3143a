"""Built-in anomaly-detection data, generated on the fly from photographs bundled with scikit-image.

No download, ever: every image starts from a photo inside `skimage.data` (brick, grass, gravel,
immunohistochemistry, moon, ...), and everything else is seeded numpy. Three sets, one per setting
that the notebooks teach:

* ``builtin-textures`` (:func:`make_textures`): five texture classes, like the texture half of
  MVTec AD. Normal images are random crops of a photo; anomalies are synthetic *structural*
  defects (scratch, stain, hole, cut-paste patch, colour shift) with exact pixel masks.
* ``builtin-texture_shift`` (:func:`make_texture_shift`): one category, ``fabric``, with eight
  subclasses of different tint, scale, orientation and source texture. Training holds only the
  first five; the test split holds all eight. This is the setting of Adapted-MoE on Texture-AD:
  normal test images of an *unseen* subclass look unlike every training image.
* ``builtin-logical`` (:func:`make_logical`): ``tray`` scenes with a fixed layout of coloured
  parts, like MVTec LOCO AD. Most anomalies are *logical* (a part missing, an extra part, two
  parts swapped, a wrong colour): each part looks like a normal part, what is wrong is the
  count, the place or the colour. Two *structural* types (scratch, dent) damage one part.

Masks. A defect is drawn with a soft blending weight ``alpha`` in [0, 1]
(``image = (1 - alpha) * clean + alpha * defect``) and its mask is ``alpha >= 0.5``. So the mask
holds every pixel that changed by at least half the defect's contrast; a soft rim a few pixels wide
around it changes less and is left out of the mask. Pixels farther away are bit-identical to the
clean image: pass ``defects=False`` to any generator to get that clean twin of every test image
(same labels and masks, no defect drawn).

Determinism. Everything derives from ``np.random.default_rng([seed, ...])``; train and test use
separate streams, so changing ``n_test_bad`` does not change the training images.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache, lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from adlib.config import Profile
from adlib.data import ADCategory, ADSplit, concat_splits

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
def _photo(name: str) -> np.ndarray:
    """A bundled photo as uint8 RGB [H, W, 3]."""
    if name not in OFFLINE_PHOTOS:
        raise ValueError(f"photo {name!r} is not one of the offline skimage photos {OFFLINE_PHOTOS}")
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3].astype(np.uint8))


def _to_uint8(img: np.ndarray) -> np.ndarray:
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


TEXTURES: tuple[TextureSpec, ...] = (
    TextureSpec("brick", "brick", tint=(1.0, 0.70, 0.58), crop_px=240),
    TextureSpec("grass", "grass", tint=(0.72, 1.0, 0.55), crop_px=256),
    TextureSpec("gravel", "gravel", tint=(1.0, 0.90, 0.74), crop_px=240),
    TextureSpec("tissue", "immunohistochemistry", crop_px=240),
    TextureSpec("moon", "moon", crop_px=256, contrast=1.6),
)

# Photos a cut-paste defect may take its patch from (never the class's own photo).
DONOR_PHOTOS = ("brick", "grass", "gravel", "immunohistochemistry", "moon", "coffee", "chelsea", "astronaut")

# Normal-image jitter: each image picks one small rotation and one scale, a position and flips.
ANGLE_JITTER = (-6.0, -3.0, 0.0, 3.0, 6.0)  # degrees
SCALE_JITTER = (0.9, 1.0, 1.12)  # zoom of the crop


@lru_cache(maxsize=32)
def _toned_photo(photo: str, tint: tuple[float, float, float] | None, contrast: float) -> Image.Image:
    """The square photo with its tint and contrast applied (at the photo's own resolution)."""
    img = _photo(photo)  # [H, W, 3]
    side = min(img.shape[:2])
    img = img[:side, :side].astype(np.float32) / 255  # square, so the valid region below is simple
    if tint is not None:  # colour a grey photo
        img = img.mean(axis=2, keepdims=True) * np.asarray(tint, dtype=np.float32)
    if contrast != 1.0:
        img = img.mean() + (img - img.mean()) * contrast
    return Image.fromarray(_to_uint8(img))


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
    px = round(min(_photo(spec.photo).shape[:2]) * size * zoom / spec.crop_px)  # crop_px photo px -> size
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


def _clear_caches() -> None:
    """Free the resized and rotated photos (kept only while one generator runs)."""
    _variant.cache_clear()
    _scaled_photo.cache_clear()


def _crop_texture(spec: TextureSpec, size: int, rng: np.random.Generator, jitter: bool = True) -> np.ndarray:
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


def _apply(img: np.ndarray, mask: np.ndarray, stroke: Stroke, draw: bool = True) -> None:
    """Blend `stroke` into img [S, S, 3] (unless not `draw`) and add `alpha >= 0.5` to mask [S, S]."""
    if draw:
        a = stroke.alpha[:, :, None]
        img[stroke.box] = img[stroke.box] * (1 - a) + stroke.patch * a
    mask[stroke.box] |= stroke.alpha >= 0.5


def _box(
    cy: float, cx: float, extent: float | tuple[float, float], size: int
) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """Box of half-side `extent` (or (half-height, half-width)) around (cy, cx), clipped to the
    image, and the offsets of its pixels from the centre."""
    ey, ex = extent if isinstance(extent, tuple) else (extent, extent)
    y0, y1 = max(0, int(cy - ey)), min(size, int(np.ceil(cy + ey)) + 1)
    x0, x1 = max(0, int(cx - ex)), min(size, int(np.ceil(cx + ex)) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    return slice(y0, y1), slice(x0, x1), yy - cy, xx - cx  # offsets from the centre


def _blob(
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
    sy, sx, dy, dx = _box(center[0], center[1], extent, size)
    u = (dx * np.cos(turn) + dy * np.sin(turn)) / a  # along the major axis
    v = (-dx * np.sin(turn) + dy * np.cos(turn)) / b
    rho = np.hypot(u, v)  # [h, w]
    phi = np.arctan2(v, u)
    outline = 1 + (amps[:, None, None] * np.cos(k[:, None, None] * phi + phases[:, None, None])).sum(0)
    alpha = np.clip(0.5 + (outline - rho) * b / soft, 0, 1).astype(np.float32)  # ramp ~soft px wide
    return (sy, sx), alpha, (rho / outline).astype(np.float32)


def _curve(
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
    sy, sx, _, _ = _box(center[0], center[1], extent, size)
    on_curve = np.zeros((sy.stop - sy.start, sx.stop - sx.start), dtype=bool)
    iy = np.clip(np.round(pts[:, 0]).astype(int) - sy.start, 0, on_curve.shape[0] - 1)
    ix = np.clip(np.round(pts[:, 1]).astype(int) - sx.start, 0, on_curve.shape[1] - 1)
    on_curve[iy, ix] = True
    dist = ndimage.distance_transform_edt(~on_curve)  # [h, w] px to the nearest curve pixel
    alpha = np.clip(width / 2 + 0.5 - dist, 0, 1).astype(np.float32)
    return (sy, sx), alpha


# ---------------------------------------------------------------------------------------------
# Structural defects on textures
# ---------------------------------------------------------------------------------------------

TEXTURE_DEFECTS = ("scratch", "stain", "hole", "cut_paste", "color")


def _hue_rotation(degrees: float) -> np.ndarray:
    """3x3 RGB matrix that rotates colours about the grey axis by `degrees`."""
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    k = 1 / 3
    w = np.sqrt(k)
    return np.array(
        [
            [c + (1 - c) * k, k * (1 - c) - w * s, k * (1 - c) + w * s],
            [k * (1 - c) + w * s, c + k * (1 - c), k * (1 - c) - w * s],
            [k * (1 - c) - w * s, k * (1 - c) + w * s, c + k * (1 - c)],
        ],
        dtype=np.float32,
    )


def _texture_defect(kind: str, img: np.ndarray, rng: np.random.Generator, spec: TextureSpec) -> Stroke:
    """Draw one structural defect of `kind` for img [S, S, 3]; sizes scale with S."""
    size = img.shape[0]
    px = size / 256  # one pixel at 256 px
    if kind == "scratch":
        box, alpha = _curve(size, rng, length=size * rng.uniform(0.25, 0.6), width=max(1.2, px * rng.uniform(1.5, 3.5)))
        target = 1.0 if rng.random() < 0.5 else 0.05  # a bright or a dark scratch
        strength = rng.uniform(0.3, 0.75)
        patch = img[box] * (1 - strength) + target * strength
    elif kind == "stain":
        box, alpha, _ = _blob(size, rng, area=rng.uniform(0.01, 0.06), soft=px * rng.uniform(4, 10), wobble=0.4)
        colour = rng.uniform(0.55, 1.0, size=3).astype(np.float32) * rng.uniform(0.6, 0.9)
        smear = px * rng.uniform(1.0, 3.0)  # a liquid stain also washes out the texture
        patch = ndimage.gaussian_filter(img[box], sigma=(smear, smear, 0)) * colour
    elif kind == "hole":
        box, alpha, r = _blob(size, rng, area=rng.uniform(0.006, 0.03), soft=1.5 * px + 0.5, aspect_max=1.6, wobble=0.2)
        depth = rng.uniform(0.05, 0.3)  # how much light is left at the bottom of the hole
        rim = np.clip((r - 0.75) / 0.25, 0, 1)[:, :, None]  # 0 inside, 1 at the outline
        shade = depth + (1 - depth) * 0.4 * r[:, :, None]  # darker towards the centre
        patch = img[box] * (shade * (1 - rim) + rng.uniform(1.1, 1.4) * rim)
    elif kind == "cut_paste":
        box, alpha, _ = _blob(size, rng, area=rng.uniform(0.01, 0.06), soft=1.0 * px + 0.5, wobble=0.45)
        donor_photo = rng.choice([p for p in DONOR_PHOTOS if p != spec.photo])
        crop_px = min(spec.crop_px * rng.choice([0.75, 1.0, 1.33]), 0.9 * min(_photo(donor_photo).shape[:2]))
        donor = TextureSpec("donor", str(donor_photo), crop_px=float(crop_px))
        piece = _crop_texture(donor, size, rng, jitter=False)[box]  # [h, w, 3]
        # Match the local mean and contrast partly: the stronger the match, the subtler the defect.
        match = rng.uniform(0.3, 1.0)
        here = img[box]
        matched = (piece - piece.mean((0, 1))) / (piece.std((0, 1)) + 1e-3) * here.std((0, 1)) + here.mean((0, 1))
        patch = match * matched + (1 - match) * piece
    elif kind == "color":
        box, alpha, _ = _blob(size, rng, area=rng.uniform(0.015, 0.07), soft=px * rng.uniform(2, 6), wobble=0.35)
        here = img[box]
        turned = here @ _hue_rotation(rng.choice([-1, 1]) * rng.uniform(30, 90)).T
        grey = here.mean(axis=2, keepdims=True)
        direction = rng.normal(size=3).astype(np.float32)
        direction -= direction.mean()  # a pure colour change, no brightness change
        direction /= np.linalg.norm(direction) + 1e-6
        patch = grey + (turned - grey) * rng.uniform(1.2, 2.0) + direction * rng.uniform(0.06, 0.16)
    else:
        raise ValueError(f"unknown texture defect {kind!r}; valid: {TEXTURE_DEFECTS}")
    return Stroke(box, alpha, np.clip(patch, 0, 1).astype(np.float32))


def _texture_split(
    spec: TextureSpec,
    size: int,
    n_good: int,
    n_bad: int,
    rng: np.random.Generator,
    prefix: str,
    defects: bool = True,
    subclass: int | None = None,
    with_masks: bool = True,
) -> ADSplit:
    """n_good normal crops then n_bad crops with one defect each (types cycle in a seeded order).

    Train splits pass `with_masks=False`: like the file loaders, they carry no masks.
    """
    order = rng.permutation(len(TEXTURE_DEFECTS))
    kinds = ["good"] * n_good + [TEXTURE_DEFECTS[order[i % len(order)]] for i in range(n_bad)]
    images = np.zeros((len(kinds), size, size, 3), dtype=np.uint8)  # [N, S, S, 3]
    masks = np.zeros((len(kinds), size, size), dtype=bool)  # [N, S, S]
    for i, kind in enumerate(kinds):
        img = _crop_texture(spec, size, rng)
        if kind != "good":
            stroke = _texture_defect(kind, img, rng, spec)  # drawn even if not applied: same stream
            _apply(img, masks[i], stroke, draw=defects)
        images[i] = _to_uint8(img)
    return ADSplit(
        images=images,
        labels=np.array([k != "good" for k in kinds], dtype=np.int64),
        masks=masks if with_masks else None,
        defect_types=kinds,
        names=[f"{prefix}/{k}/{i:03d}" for i, k in enumerate(kinds)],
        subclasses=None if subclass is None else np.full(len(kinds), subclass, dtype=np.int64),
    )


def _texture_by_name(name: str) -> TextureSpec:
    names = [t.name for t in TEXTURES]
    if name not in names:
        raise ValueError(f"unknown texture class {name!r}; valid: {names}")
    return TEXTURES[names.index(name)]


def make_textures(
    image_size: int,
    n_train: int,
    n_test_good: int,
    n_test_bad: int,
    seed: int = 0,
    classes: list[str] | None = None,
    defects: bool = True,
) -> list[ADCategory]:
    """The ``builtin-textures`` set: one ADCategory per texture class (all of TEXTURES by default).

    Train: `n_train` normal crops. Test: `n_test_good` normal crops, then `n_test_bad` crops with
    one structural defect each, the types of TEXTURE_DEFECTS taken in turn (seeded order), each
    covering about 0.5% to 7% of the image. `defects=False` gives the clean twins (see module doc).
    """
    specs = TEXTURES if classes is None else tuple(_texture_by_name(c) for c in classes)
    out = []
    for spec in specs:
        cid = [t.name for t in TEXTURES].index(spec.name)  # stable stream id, whatever `classes` is
        prefix = f"builtin-textures/{spec.name}"
        train = _texture_split(
            spec, image_size, n_train, 0, np.random.default_rng([seed, 0, cid, 0]), f"{prefix}/train", with_masks=False
        )
        test = _texture_split(
            spec,
            image_size,
            n_test_good,
            n_test_bad,
            np.random.default_rng([seed, 0, cid, 1]),
            f"{prefix}/test",
            defects,
        )
        source = f"skimage.data.{spec.photo}() crops, seed {seed}"
        out.append(ADCategory("builtin-textures", spec.name, train, test, source))
    _clear_caches()
    return out


# ---------------------------------------------------------------------------------------------
# Texture shift: seen and unseen subclasses (Adapted-MoE on Texture-AD)
# ---------------------------------------------------------------------------------------------

# Subclasses of the "fabric" category: three source photos under different tints, scales,
# orientations and contrasts. With n_subclasses=8, n_unseen=3 the last three (a turned grey
# brick, a coarse rose gravel at 45 degrees, a flat blue grass) never appear in training.
SHIFT_SUBCLASSES: tuple[TextureSpec, ...] = (
    TextureSpec("gravel_warm", "gravel", tint=(1.0, 0.86, 0.70), crop_px=200),
    TextureSpec("grass_green", "grass", tint=(0.70, 1.0, 0.58), crop_px=200),
    TextureSpec("brick_red", "brick", tint=(1.0, 0.68, 0.56), crop_px=240),
    TextureSpec("gravel_cool_fine", "gravel", tint=(0.72, 0.86, 1.0), crop_px=300, contrast=1.2),
    TextureSpec("grass_straw_turned", "grass", tint=(1.0, 0.92, 0.60), crop_px=170, rotation=90),
    TextureSpec("brick_grey_turned", "brick", tint=(0.85, 0.87, 0.95), crop_px=200, rotation=90),
    TextureSpec("gravel_rose_coarse", "gravel", tint=(1.0, 0.74, 0.84), crop_px=140, rotation=45),
    TextureSpec("grass_blue_flat", "grass", tint=(0.62, 0.80, 1.0), crop_px=220, contrast=0.6),
    TextureSpec("brick_sand_fine", "brick", tint=(1.0, 0.94, 0.66), crop_px=320),
    TextureSpec("gravel_green_turned", "gravel", tint=(0.78, 1.0, 0.78), crop_px=220, rotation=45),
    TextureSpec("grass_violet", "grass", tint=(0.85, 0.70, 1.0), crop_px=200, contrast=1.3),
    TextureSpec("brick_dark_coarse", "brick", tint=(0.60, 0.50, 0.45), crop_px=170),
)


def make_texture_shift(
    image_size: int,
    n_train: int,
    n_test_good: int,
    n_test_bad: int,
    seed: int = 0,
    n_subclasses: int = 8,
    n_unseen: int = 3,
    defects: bool = True,
) -> ADCategory:
    """The ``builtin-texture_shift`` set: category ``fabric`` with `n_subclasses` subclasses.

    The first ``n_subclasses - n_unseen`` subclasses are *seen*: `n_train` normal images each in
    train. Test holds `n_test_good` normal and `n_test_bad` defective images of *every* subclass
    (same defects as :func:`make_textures`); `split.subclasses` indexes `subclass_names`
    (``"s0_gravel_warm"``, ...) and `unseen_subclasses` names those absent from train.
    """
    if not 1 <= n_subclasses <= len(SHIFT_SUBCLASSES):
        raise ValueError(f"n_subclasses must be in [1, {len(SHIFT_SUBCLASSES)}], got {n_subclasses}")
    if not 0 <= n_unseen < n_subclasses:
        raise ValueError(f"n_unseen must be in [0, n_subclasses), got {n_unseen} with n_subclasses={n_subclasses}")
    specs = SHIFT_SUBCLASSES[:n_subclasses]
    names = [f"s{i}_{spec.name}" for i, spec in enumerate(specs)]
    n_seen = n_subclasses - n_unseen
    prefix = "builtin-texture_shift/fabric"
    train, test = [], []
    for i, (spec, name) in enumerate(zip(specs, names, strict=True)):
        if i < n_seen:
            rng = np.random.default_rng([seed, 1, i, 0])
            train.append(
                _texture_split(
                    spec, image_size, n_train, 0, rng, f"{prefix}/train/{name}", subclass=i, with_masks=False
                )
            )
        rng = np.random.default_rng([seed, 1, i, 1])
        test.append(
            _texture_split(spec, image_size, n_test_good, n_test_bad, rng, f"{prefix}/test/{name}", defects, subclass=i)
        )
    _clear_caches()
    return ADCategory(
        dataset="builtin-texture_shift",
        category="fabric",
        train=concat_splits(train),
        test=concat_splits(test),
        source=f"skimage.data gravel/grass/brick crops under {n_subclasses} looks, seed {seed}",
        subclass_names=names,
        unseen_subclasses=names[n_seen:],
    )


# ---------------------------------------------------------------------------------------------
# Logical anomalies: tray scenes (MVTec LOCO AD)
# ---------------------------------------------------------------------------------------------

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.18, 0.14),
    "blue": (0.18, 0.36, 0.86),
    "yellow": (0.95, 0.80, 0.18),
    "green": (0.20, 0.68, 0.30),
    "white": (0.92, 0.92, 0.88),
}


@dataclass(frozen=True)
class Part:
    """One component of a tray scene. Positions and sizes are fractions of the image side."""

    kind: str  # "disc" (size = radius), "square" (size = half side) or "bar" (size = half length)
    colour: str  # a key of PALETTE
    y: float  # centre
    x: float
    size: float
    angle: float = 0.0  # degrees (squares and bars)


# The normal layout: two red discs and a blue square, a yellow bar, two green squares around a
# white disc. FREE_SLOTS are empty places where an "extra" part can appear.
TRAY_LAYOUT: tuple[Part, ...] = (
    Part("disc", "red", 0.22, 0.16, 0.085),
    Part("disc", "red", 0.22, 0.40, 0.085),
    Part("square", "blue", 0.22, 0.82, 0.075),
    Part("bar", "yellow", 0.52, 0.50, 0.33),
    Part("square", "green", 0.80, 0.18, 0.065),
    Part("disc", "white", 0.80, 0.50, 0.06),
    Part("square", "green", 0.80, 0.82, 0.065),
)
FREE_SLOTS = ((0.22, 0.61), (0.80, 0.34), (0.80, 0.66))
EXTRA_PARTS = (("disc", "red", 0.06), ("disc", "white", 0.055), ("square", "green", 0.05), ("square", "blue", 0.05))
SWAP_PAIRS = ((1, 2), (0, 2), (4, 5), (5, 6))  # indices into TRAY_LAYOUT: different kind or colour
BAR_HALF_WIDTH = 0.05

LOGICAL_DEFECTS = ("missing", "extra", "swapped", "wrong_color")
STRUCTURAL_DEFECTS = ("scratch", "dent")
TRAY_DEFECTS = LOGICAL_DEFECTS + STRUCTURAL_DEFECTS

TRAY_BACKGROUND = TextureSpec("tray", "gravel", tint=(0.42, 0.42, 0.46), crop_px=300, contrast=0.5)
PART_GRAIN = TextureSpec("grain", "moon", crop_px=260, contrast=1.5)  # surface grain of the parts


def _jitter_part(part: Part, rng: np.random.Generator) -> Part:
    """Small random changes that every normal scene has: position, size, angle."""
    dy, dx = rng.uniform(-0.02, 0.02, size=2)
    return replace(
        part, y=part.y + dy, x=part.x + dx, size=part.size * rng.uniform(0.95, 1.05), angle=rng.uniform(-6, 6)
    )


def _part_stroke(part: Part, rgb: np.ndarray, grain: np.ndarray) -> Stroke:
    """Render one part over its bounding box: alpha from a signed distance (1 px ramp)."""
    size = grain.shape[0]
    r = part.size * size
    t = np.deg2rad(part.angle)
    if part.kind == "bar":  # a long thin box: half-length r, half-width hw, turned by t
        hw = BAR_HALF_WIDTH * size
        extent = (r * abs(np.sin(t)) + hw * np.cos(t) + 2, r * np.cos(t) + hw * abs(np.sin(t)) + 2)
    else:
        extent = r * (np.cos(t) + abs(np.sin(t))) + 2
    sy, sx, dy, dx = _box(part.y * size, part.x * size, extent, size)
    u, v = dx * np.cos(t) + dy * np.sin(t), -dx * np.sin(t) + dy * np.cos(t)  # part coordinates
    if part.kind == "disc":
        sdf = np.hypot(dy, dx) - r  # [h, w] px, negative inside
        rel = np.hypot(dy, dx) / r
    elif part.kind == "square":
        sdf = np.maximum(np.abs(u), np.abs(v)) - r
        rel = np.maximum(np.abs(u), np.abs(v)) / r
    elif part.kind == "bar":
        sdf = np.maximum(np.abs(u) - r, np.abs(v) - hw)
        rel = np.abs(v) / hw
    else:
        raise ValueError(f"unknown part kind {part.kind!r}")
    alpha = np.clip(0.5 - sdf, 0, 1).astype(np.float32)
    shade = (1.05 - 0.25 * np.clip(rel, 0, 1) ** 2)[:, :, None]  # a little relief
    patch = rgb * shade * grain[sy, sx]
    return Stroke((sy, sx), alpha, np.clip(patch, 0, 1).astype(np.float32))


def _colour(name: str, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(PALETTE[name], dtype=np.float32) * rng.uniform(0.93, 1.07, size=3).astype(np.float32)


def _tray_image(kind: str, size: int, rng: np.random.Generator, draw: bool) -> tuple[np.ndarray, np.ndarray]:
    """One tray scene with anomaly `kind` ("good" for none): (float [S, S, 3], mask bool [S, S])."""
    img = _crop_texture(TRAY_BACKGROUND, size, rng)  # [S, S, 3]
    grain = 0.85 + 0.3 * _crop_texture(PART_GRAIN, size, rng).mean(axis=2, keepdims=True)  # [S, S, 1]
    parts = [_jitter_part(p, rng) for p in TRAY_LAYOUT]
    colours = [_colour(p.colour, rng) for p in parts]
    mask = np.zeros((size, size), dtype=bool)
    # The normal scene, and what the anomaly changes in it.
    new_parts, new_colours = list(parts), list(colours)
    changed: list[Stroke] = []  # footprints that make up the mask of a logical anomaly
    if kind == "missing":
        i = int(rng.integers(len(parts)))
        changed.append(_part_stroke(parts[i], colours[i], grain))
        del new_parts[i], new_colours[i]
    elif kind == "extra":
        (y, x), (what, colour, s) = (
            FREE_SLOTS[rng.integers(len(FREE_SLOTS))],
            EXTRA_PARTS[rng.integers(len(EXTRA_PARTS))],
        )
        extra = _jitter_part(Part(what, colour, y, x, s), rng)
        new_parts.append(extra)
        new_colours.append(_colour(colour, rng))
        changed.append(_part_stroke(extra, new_colours[-1], grain))
    elif kind == "swapped":
        i, j = SWAP_PAIRS[rng.integers(len(SWAP_PAIRS))]
        new_parts[i] = replace(parts[i], y=parts[j].y, x=parts[j].x)
        new_parts[j] = replace(parts[j], y=parts[i].y, x=parts[i].x)
        changed += [
            _part_stroke(p, colours[k], grain)
            for k, p in ((i, parts[i]), (j, parts[j]), (i, new_parts[i]), (j, new_parts[j]))
        ]
    elif kind == "wrong_color":
        i = int(rng.integers(len(parts)))
        # the colour of another part of the same kind, so the wrong part still looks plausible
        other = sorted({p.colour for p in TRAY_LAYOUT if p.kind == parts[i].kind} - {parts[i].colour})
        other = other or [c for c in PALETTE if c != parts[i].colour]
        new_colours[i] = _colour(other[rng.integers(len(other))], rng)
        changed.append(_part_stroke(parts[i], colours[i], grain))
    for p, c in zip(new_parts if draw else parts, new_colours if draw else colours, strict=True):
        _apply(img, np.zeros_like(mask), _part_stroke(p, c, grain))
    for stroke in changed:
        mask[stroke.box] |= stroke.alpha >= 0.5
    if kind in STRUCTURAL_DEFECTS:
        _apply(img, mask, _part_damage(kind, img, parts, grain, rng), draw=draw)
    return img, mask


def _part_damage(kind: str, img: np.ndarray, parts: list[Part], grain: np.ndarray, rng: np.random.Generator) -> Stroke:
    """A scratch or a dent on one part; alpha is cut to the part's footprint."""
    size = img.shape[0]
    i = int(rng.integers(len(parts)))
    part = parts[i]
    body = np.zeros((size, size), dtype=np.float32)  # the part's alpha over the whole image
    footprint = _part_stroke(part, np.ones(3, np.float32), grain)
    body[footprint.box] = footprint.alpha
    r = part.size * size if part.kind != "bar" else BAR_HALF_WIDTH * size * 2
    centre = (part.y * size + rng.uniform(-0.3, 0.3) * r, part.x * size + rng.uniform(-0.3, 0.3) * r)
    if kind == "scratch":
        box, alpha = _curve(
            size, rng, length=r * rng.uniform(1.0, 1.6), width=max(1.2, size / 256 * rng.uniform(1.5, 3)), center=centre
        )
        strength = rng.uniform(0.4, 0.8)
        patch = img[box] * (1 - strength) + (0.05 if rng.random() < 0.6 else 1.0) * strength
    elif kind == "dent":
        area = (r * rng.uniform(0.4, 0.7)) ** 2 * np.pi / size**2
        box, alpha, rho = _blob(size, rng, area=area, soft=1.5, aspect_max=1.8, wobble=0.2, center=centre)
        light = rng.uniform(-1, 1)  # light from one side: one half darker, the other brighter
        side = np.clip(np.linspace(-1, 1, alpha.shape[1])[None, :] * light, -1, 1)[:, :, None]
        patch = img[box] * (rng.uniform(0.55, 0.75) + 0.35 * side * (1 - rho[:, :, None]))
    else:
        raise ValueError(f"unknown structural defect {kind!r}; valid: {STRUCTURAL_DEFECTS}")
    alpha = alpha * body[box]
    return Stroke(box, alpha.astype(np.float32), np.clip(patch, 0, 1).astype(np.float32))


def _tray_split(
    size: int,
    n_good: int,
    n_bad: int,
    rng: np.random.Generator,
    prefix: str,
    draw: bool = True,
    with_masks: bool = True,
) -> ADSplit:
    """n_good normal scenes then n_bad scenes with one anomaly each (types cycle in a seeded order)."""
    order = rng.permutation(len(TRAY_DEFECTS))
    kinds = ["good"] * n_good + [TRAY_DEFECTS[order[i % len(order)]] for i in range(n_bad)]
    images = np.zeros((len(kinds), size, size, 3), dtype=np.uint8)  # [N, S, S, 3]
    masks = np.zeros((len(kinds), size, size), dtype=bool)  # [N, S, S]
    for i, kind in enumerate(kinds):
        img, masks[i] = _tray_image(kind, size, rng, draw)
        images[i] = _to_uint8(img)
    return ADSplit(
        images=images,
        labels=np.array([k != "good" for k in kinds], dtype=np.int64),
        masks=masks if with_masks else None,
        defect_types=kinds,
        names=[f"{prefix}/{k}/{i:03d}" for i, k in enumerate(kinds)],
    )


def make_logical(
    image_size: int, n_train: int, n_test_good: int, n_test_bad: int, seed: int = 0, defects: bool = True
) -> ADCategory:
    """The ``builtin-logical`` set: category ``tray``, parts in a fixed layout on a dim background.

    Test anomalies cycle through LOGICAL_DEFECTS (missing: mask = where the part should be; extra:
    the added part; swapped: both parts, old and new places; wrong_color: that part) and
    STRUCTURAL_DEFECTS (scratch, dent: the damaged pixels of one part).
    """
    prefix = "builtin-logical/tray"
    train = _tray_split(
        image_size, n_train, 0, np.random.default_rng([seed, 2, 0]), f"{prefix}/train", with_masks=False
    )
    test = _tray_split(
        image_size, n_test_good, n_test_bad, np.random.default_rng([seed, 2, 1]), f"{prefix}/test", defects
    )
    _clear_caches()
    return ADCategory("builtin-logical", "tray", train, test, f"tray scenes on skimage.data.gravel, seed {seed}")


# ---------------------------------------------------------------------------------------------
# By name, sized by a run profile
# ---------------------------------------------------------------------------------------------

BUILTIN_SETS = ("textures", "texture_shift", "logical")


def make_builtin(name: str, profile: Profile, seed: int = 0) -> list[ADCategory]:
    """Generate the built-in set `name` ("textures", "texture_shift" or "logical") at the sizes of
    `profile` (image_size, n_train, n_test_good, n_test_bad; per subclass for texture_shift)."""
    sizes = (profile.image_size, profile.n_train, profile.n_test_good, profile.n_test_bad)
    if name == "textures":
        return make_textures(*sizes, seed=seed)
    if name == "texture_shift":
        return [make_texture_shift(*sizes, seed=seed)]
    if name == "logical":
        return [make_logical(*sizes, seed=seed)]
    raise ValueError(f"unknown built-in set {name!r}; valid: {list(BUILTIN_SETS)}")
