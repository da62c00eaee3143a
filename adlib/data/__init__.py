"""Data: the container every method sees, loaders of the public layouts, the shared sets, built-in data.

`container` (ADSplit, ADCategory) <- `loaders` (MVTec layout, LOCO, VisA, Texture-AD) <- `shared`
(`../shared/data` and the held-out rule); `synthetic/` generates the built-in sets.
"""

from .container import ADCategory, ADSplit, concat_splits
from .loaders import load_mvtec, load_mvtec_loco, load_texture_ad, load_visa, read_image, read_mask
from .shared import DATA_ROOT_ENV, HELD_OUT_SETS, SHARED_SETS, find_data_root, load_shared

__all__ = [
    "ADCategory",
    "ADSplit",
    "DATA_ROOT_ENV",
    "HELD_OUT_SETS",
    "SHARED_SETS",
    "concat_splits",
    "find_data_root",
    "load_mvtec",
    "load_mvtec_loco",
    "load_shared",
    "load_texture_ad",
    "load_visa",
    "read_image",
    "read_mask",
]
