"""``builtin-textures``: five texture classes with synthetic structural defects (MVTec AD's texture half)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..container import ADCategory, ADSplit
from .draw import (
    Look,
    Stroke,
    TextureSpec,
    apply_imaging,
    apply_material,
    apply_stroke,
    blob_shape,
    clear_caches,
    crop_texture,
    curve_shape,
    load_photo,
    pack_split,
    to_uint8,
)

TEXTURES: tuple[TextureSpec, ...] = (
    TextureSpec("brick", "brick", tint=(1.0, 0.70, 0.58), crop_px=240),
    TextureSpec("grass", "grass", tint=(0.72, 1.0, 0.55), crop_px=256),
    TextureSpec("gravel", "gravel", tint=(1.0, 0.90, 0.74), crop_px=240),
    TextureSpec("tissue", "immunohistochemistry", crop_px=240),
    TextureSpec("moon", "moon", crop_px=256, contrast=1.6),
)

# Photos a cut-paste defect may take its patch from (never the class's own photo).
DONOR_PHOTOS = ("brick", "grass", "gravel", "immunohistochemistry", "moon", "coffee", "chelsea", "astronaut")


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
        box, alpha = curve_shape(
            size, rng, length=size * rng.uniform(0.25, 0.6), width=max(1.2, px * rng.uniform(1.5, 3.5))
        )
        target = 1.0 if rng.random() < 0.5 else 0.05  # a bright or a dark scratch
        strength = rng.uniform(0.3, 0.75)
        patch = img[box] * (1 - strength) + target * strength
    elif kind == "stain":
        box, alpha, _ = blob_shape(size, rng, area=rng.uniform(0.01, 0.06), soft=px * rng.uniform(4, 10), wobble=0.4)
        colour = rng.uniform(0.55, 1.0, size=3).astype(np.float32) * rng.uniform(0.6, 0.9)
        smear = px * rng.uniform(1.0, 3.0)  # a liquid stain also washes out the texture
        patch = ndimage.gaussian_filter(img[box], sigma=(smear, smear, 0)) * colour
    elif kind == "hole":
        box, alpha, r = blob_shape(
            size, rng, area=rng.uniform(0.006, 0.03), soft=1.5 * px + 0.5, aspect_max=1.6, wobble=0.2
        )
        depth = rng.uniform(0.05, 0.3)  # how much light is left at the bottom of the hole
        rim = np.clip((r - 0.75) / 0.25, 0, 1)[:, :, None]  # 0 inside, 1 at the outline
        shade = depth + (1 - depth) * 0.4 * r[:, :, None]  # darker towards the centre
        patch = img[box] * (shade * (1 - rim) + rng.uniform(1.1, 1.4) * rim)
    elif kind == "cut_paste":
        box, alpha, _ = blob_shape(size, rng, area=rng.uniform(0.01, 0.06), soft=1.0 * px + 0.5, wobble=0.45)
        donor_photo = rng.choice([p for p in DONOR_PHOTOS if p != spec.photo])
        crop_px = min(spec.crop_px * rng.choice([0.75, 1.0, 1.33]), 0.9 * min(load_photo(donor_photo).shape[:2]))
        donor = TextureSpec("donor", str(donor_photo), crop_px=float(crop_px))
        piece = crop_texture(donor, size, rng, jitter=False)[box]  # [h, w, 3]
        # Match the local mean and contrast partly: the stronger the match, the subtler the defect.
        match = rng.uniform(0.3, 1.0)
        here = img[box]
        matched = (piece - piece.mean((0, 1))) / (piece.std((0, 1)) + 1e-3) * here.std((0, 1)) + here.mean((0, 1))
        patch = match * matched + (1 - match) * piece
    elif kind == "color":
        box, alpha, _ = blob_shape(size, rng, area=rng.uniform(0.015, 0.07), soft=px * rng.uniform(2, 6), wobble=0.35)
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


def texture_split(
    spec: TextureSpec,
    size: int,
    n_good: int,
    n_bad: int,
    rng: np.random.Generator,
    prefix: str,
    defects: bool = True,
    subclass: int | None = None,
    with_masks: bool = True,
    look: Look = Look(),
) -> ADSplit:
    """n_good normal crops then n_bad crops with one defect each (types cycle in a seeded order).

    Train splits pass `with_masks=False`: like the file loaders, they carry no masks. `look` changes
    the material before a defect is drawn and the imaging after (``draw.Look``).
    """
    order = rng.permutation(len(TEXTURE_DEFECTS))
    kinds = ["good"] * n_good + [TEXTURE_DEFECTS[order[i % len(order)]] for i in range(n_bad)]
    images = np.zeros((len(kinds), size, size, 3), dtype=np.uint8)  # [N, S, S, 3]
    masks = np.zeros((len(kinds), size, size), dtype=bool)  # [N, S, S]
    for i, kind in enumerate(kinds):
        img = apply_material(crop_texture(spec, size, rng), look)
        if kind != "good":
            stroke = _texture_defect(kind, img, rng, spec)  # drawn even if not applied: same stream
            apply_stroke(img, masks[i], stroke, draw=defects)
        images[i] = to_uint8(img if look.is_plain else apply_imaging(img, look, rng))
    return pack_split(images, masks, kinds, prefix, with_masks, subclass)


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
        train = texture_split(
            spec, image_size, n_train, 0, np.random.default_rng([seed, 0, cid, 0]), f"{prefix}/train", with_masks=False
        )
        test = texture_split(
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
    clear_caches()
    return out
