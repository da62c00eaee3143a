"""``builtin-texture_shift``: seen and unseen subclasses of one category (Adapted-MoE on Texture-AD)."""

from __future__ import annotations

import numpy as np

from ..container import ADCategory, concat_splits
from .draw import TextureSpec, clear_caches
from .textures import texture_split

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
                texture_split(spec, image_size, n_train, 0, rng, f"{prefix}/train/{name}", subclass=i, with_masks=False)
            )
        rng = np.random.default_rng([seed, 1, i, 1])
        test.append(
            texture_split(spec, image_size, n_test_good, n_test_bad, rng, f"{prefix}/test/{name}", defects, subclass=i)
        )
    clear_caches()
    return ADCategory(
        dataset="builtin-texture_shift",
        category="fabric",
        train=concat_splits(train),
        test=concat_splits(test),
        source=f"skimage.data gravel/grass/brick crops under {n_subclasses} looks, seed {seed}",
        subclass_names=names,
        unseen_subclasses=names[n_seen:],
    )
