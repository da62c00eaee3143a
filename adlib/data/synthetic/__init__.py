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

Modules: `draw` (photos, crops, shapes), `textures`, `shift` (texture_shift), `tray` (logical).
"""

from __future__ import annotations

from ...config import Profile
from ..container import ADCategory
from .shift import SHIFT_SUBCLASSES, SUBTLE_STRENGTH, make_texture_shift, subtle_subclasses
from .textures import TEXTURE_DEFECTS, TEXTURES, make_textures
from .tray import LOGICAL_DEFECTS, STRUCTURAL_DEFECTS, TRAY_DEFECTS, make_logical

__all__ = [
    "BUILTIN_SETS",
    "LOGICAL_DEFECTS",
    "SHIFT_SUBCLASSES",
    "SUBTLE_STRENGTH",
    "STRUCTURAL_DEFECTS",
    "TEXTURES",
    "TEXTURE_DEFECTS",
    "TRAY_DEFECTS",
    "make_builtin",
    "make_logical",
    "make_texture_shift",
    "make_textures",
    "subtle_subclasses",
]

BUILTIN_SETS = ("textures", "texture_shift", "texture_shift_subtle", "logical")


def make_builtin(name: str, profile: Profile, seed: int = 0) -> list[ADCategory]:
    """Generate the built-in set `name` (one of ``BUILTIN_SETS``) at the sizes of `profile`
    (image_size, n_train, n_test_good, n_test_bad; per subclass for the texture_shift sets)."""
    sizes = (profile.image_size, profile.n_train, profile.n_test_good, profile.n_test_bad)
    if name == "textures":
        return make_textures(*sizes, seed=seed)
    if name == "texture_shift":
        return [make_texture_shift(*sizes, seed=seed)]
    if name == "texture_shift_subtle":
        return [make_texture_shift(*sizes, seed=seed, variant="subtle")]
    if name == "logical":
        return [make_logical(*sizes, seed=seed)]
    raise ValueError(f"unknown built-in set {name!r}; valid: {list(BUILTIN_SETS)}")
