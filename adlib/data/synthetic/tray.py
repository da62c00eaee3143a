"""``builtin-logical``: tray scenes with missing, extra, swapped and wrongly coloured parts (MVTec LOCO)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..container import ADCategory, ADSplit
from .draw import (
    Stroke,
    TextureSpec,
    apply_stroke,
    blob_shape,
    box_shape,
    clear_caches,
    crop_texture,
    curve_shape,
    pack_split,
    to_uint8,
)

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
    sy, sx, dy, dx = box_shape(part.y * size, part.x * size, extent, size)
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
    img = crop_texture(TRAY_BACKGROUND, size, rng)  # [S, S, 3]
    grain = 0.85 + 0.3 * crop_texture(PART_GRAIN, size, rng).mean(axis=2, keepdims=True)  # [S, S, 1]
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
        apply_stroke(img, np.zeros_like(mask), _part_stroke(p, c, grain))
    for stroke in changed:
        mask[stroke.box] |= stroke.alpha >= 0.5
    if kind in STRUCTURAL_DEFECTS:
        apply_stroke(img, mask, _part_damage(kind, img, parts, grain, rng), draw=draw)
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
        box, alpha = curve_shape(
            size, rng, length=r * rng.uniform(1.0, 1.6), width=max(1.2, size / 256 * rng.uniform(1.5, 3)), center=centre
        )
        strength = rng.uniform(0.4, 0.8)
        patch = img[box] * (1 - strength) + (0.05 if rng.random() < 0.6 else 1.0) * strength
    elif kind == "dent":
        area = (r * rng.uniform(0.4, 0.7)) ** 2 * np.pi / size**2
        box, alpha, rho = blob_shape(size, rng, area=area, soft=1.5, aspect_max=1.8, wobble=0.2, center=centre)
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
        images[i] = to_uint8(img)
    return pack_split(images, masks, kinds, prefix, with_masks)


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
    clear_caches()
    return ADCategory("builtin-logical", "tray", train, test, f"tray scenes on skimage.data.gravel, seed {seed}")
