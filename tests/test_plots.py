"""plots.map_figure: one colour scale and one colorbar per figure, row labels that fit their row."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.text import Annotation

from adlib import plots


def test_map_figure_has_one_scale_one_colorbar_and_wrapped_row_labels() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    rows = {
        "short": rng.random((2, 32, 32)),
        "sigma=0.015 x mean patch norm, a long label": 5 + rng.random((2, 32, 32)),
    }
    fig = plots.map_figure(images, rows, np.zeros((2, 32, 32), bool), ["a", "b"], size=1.6)
    assert len(fig.axes) == 3 * 2 + 1  # images, two rows of maps, one colorbar
    maps = [im for ax in fig.axes[:6] for im in ax.get_images()][2:]  # the first two are the images
    assert {(im.norm.vmin, im.norm.vmax) for im in maps} == {(maps[0].norm.vmin, maps[0].norm.vmax)}
    assert maps[0].norm.vmin < 0.1 and maps[0].norm.vmax > 5.9  # one scale spans both rows (1st-99.9th pct)
    labels = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "short" in labels
    long = next(t for t in labels if t.startswith("sigma"))
    assert "\n" in long and max(len(line) for line in long.split("\n")) <= int(1.6 * 13)
    matplotlib.pyplot.close(fig)


def test_pipeline_text_stays_inside_its_box() -> None:
    stages = [
        ("test image", "[N, 3, 256, 256]"),
        ("6 component experts", "[M] -> [n, 32, 32]"),
        ("a stage whose name is far too long for one box", "[N, 18] -> top-3 and a long note as well"),
    ]
    fig = plots.pipeline(stages, width=1.55)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    boxes = [p.get_window_extent(renderer) for p in ax.patches]
    texts = [t for t in ax.texts if not isinstance(t, Annotation)]  # the arrows are annotations
    assert len(boxes) == len(stages) and len(texts) == 2 * len(stages)
    for i, box in enumerate(boxes):
        for text in texts[2 * i : 2 * i + 2]:
            ext = text.get_window_extent(renderer)
            assert box.x0 <= ext.x0 and ext.x1 <= box.x1, (text.get_text(), ext, box)
            assert box.y0 <= ext.y0 and ext.y1 <= box.y1, (text.get_text(), ext, box)
    assert texts[2].get_text() == "6 component\nexperts"  # broken into two lines, not cut off
    assert texts[0].get_text() == "test image"  # what fits stays on one line
    matplotlib.pyplot.close(fig)


def _gap_under_title_in(fig) -> float:
    """Inches between the bottom of the suptitle and the top of the highest column title (negative: overlap)."""
    renderer = fig.canvas.get_renderer()
    sup = fig._suptitle.get_window_extent(renderer)
    heads = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    return (sup.y0 - max(h.y1 for h in heads)) / fig.dpi


def test_map_figure_band_under_the_title_is_narrow_whatever_the_height() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    for n_rows in (1, 6):  # a fixed fraction of the height left ~1 inch empty under the title of a 6-row figure
        rows = {f"row {r}": rng.random((3, 32, 32)) for r in range(n_rows)}
        fig = plots.map_figure(images, rows, None, ["good\ngrain (unseen)", "hole\nb (seen)", "c"], title="a title")
        gap = _gap_under_title_in(fig)
        assert 0 <= gap < 0.3, (n_rows, gap)
        matplotlib.pyplot.close(fig)


def test_example_titles_name_defect_subclass_and_seen_or_unseen() -> None:
    from adlib.config import get_profile
    from adlib.data.synthetic import make_builtin

    P = get_profile("ci")
    [shift] = make_builtin("texture_shift", P, seed=0)
    names, subs = shift.subclass_names, shift.test.subclasses
    unseen = next(i for i in range(len(subs)) if names[subs[i]] in shift.unseen_subclasses)
    seen = next(i for i in range(len(subs)) if names[subs[i]] not in shift.unseen_subclasses)
    t_unseen, t_seen = plots.example_titles(shift, [unseen, seen])
    assert t_unseen == f"{shift.test.defect_types[unseen]}\n{names[subs[unseen]].split('_', 1)[1]} (unseen)"
    assert t_seen == f"{shift.test.defect_types[seen]}\n{names[subs[seen]].split('_', 1)[1]} (seen)"
    plain = make_builtin("textures", P, seed=0)[0]  # no subclasses: the defect type alone
    assert plots.example_titles(plain, [0, len(plain.test) - 1]) == [
        plain.test.defect_types[0],
        plain.test.defect_types[-1],
    ]
