"""Metrics against scikit-learn and against a brute-force AUPRO written from its definition."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from adlib.maps import image_scores
from adlib.metrics import METRIC_NAMES, aupro, compute_metrics, ranking_metrics, with_mean


def brute_force_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """PRO curve at every distinct pixel value, one threshold at a time, region by region."""
    regions = []  # (image index, boolean region mask)
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [(i, lab == r) for r in range(1, n + 1)]
    normal = ~masks
    xs, ys = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        above = maps >= t
        xs.append(above[normal].sum() / normal.sum())
        ys.append(float(np.mean([above[i][region].mean() for i, region in regions])))
    xs, ys = np.array(xs), np.array(ys)
    keep = xs <= fpr_limit
    x, y = list(xs[keep]), list(ys[keep])
    i = int(keep.sum())
    if i < len(xs) and x[-1] < fpr_limit:
        y.append(ys[i - 1] + (ys[i] - ys[i - 1]) * (fpr_limit - xs[i - 1]) / (xs[i] - xs[i - 1]))
        x.append(fpr_limit)
    return float(np.trapezoid(y, x) / fpr_limit)


def random_maps(rng: np.random.Generator, n: int = 6, size: int = 24, levels: int | None = None):
    masks = np.zeros((n, size, size), dtype=bool)
    maps = rng.normal(size=(n, size, size)).astype(np.float32)
    for i in range(n // 2):
        for _ in range(rng.integers(1, 3)):
            y, x = rng.integers(0, size - 6, 2)
            h, w = rng.integers(2, 7, 2)
            masks[i, y : y + h, x : x + w] = True
    maps += 1.5 * masks * rng.uniform(0.2, 1.5)
    if levels:  # coarse values force many ties
        maps = np.round(maps * levels / 4).astype(np.float32)
    return maps, masks


@pytest.mark.parametrize("seed,levels,limit", [(0, None, 0.3), (1, 6, 0.3), (2, None, 1.0), (3, 3, 0.05)])
def test_aupro_matches_brute_force(seed: int, levels: int | None, limit: float) -> None:
    maps, masks = random_maps(np.random.default_rng(seed), levels=levels)
    assert aupro(maps, masks, limit) == pytest.approx(brute_force_aupro(maps, masks, limit), abs=1e-9)


def test_aupro_known_values() -> None:
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 2:4, 2:4] = True
    perfect = masks.astype(np.float32)
    assert aupro(perfect, masks) == pytest.approx(1.0)
    # A constant map: every threshold takes all pixels at once (FPR 0 -> 1, PRO 0 -> 1).
    assert aupro(np.zeros_like(perfect), masks, 0.3) == pytest.approx(0.15)
    assert np.isnan(aupro(perfect, np.zeros_like(masks)))


def test_aupro_regions_weigh_equally() -> None:
    """A small and a large region: detecting only the large one gives PRO 1/2, not its pixel share."""
    masks = np.zeros((1, 20, 20), dtype=bool)
    masks[0, 0:10, 0:10] = True  # 100 pixels
    masks[0, 15, 15] = True  # 1 pixel, its own region (not 8-connected to the first)
    maps = np.zeros((1, 20, 20), dtype=np.float32)
    maps[0, 0:10, 0:10] = 1.0
    # Curve (0, 0) -> (0, 1/2) -> (1, 1); at FPR 0.3 PRO = 0.65; area 0.3 * (0.5 + 0.65) / 2, over 0.3.
    assert aupro(maps, masks, 0.3) == pytest.approx((0.5 + 0.65) / 2, abs=1e-12)
    assert aupro(maps, masks, 0.3) == pytest.approx(brute_force_aupro(maps, masks, 0.3), abs=1e-12)


def test_aupro_regions_are_8_connected() -> None:
    """Two pixels side by side and a third touching them diagonally make one region of 3, not 2 regions."""
    masks = np.zeros((1, 8, 8), dtype=bool)
    masks[0, 2, 2:4] = True
    masks[0, 3, 4] = True  # diagonal neighbour of (2, 3): 4-connectivity would split it off
    maps = np.zeros((1, 8, 8), dtype=np.float32)
    maps[0, 3, 4] = 1.0  # only the diagonal pixel is found
    # one region: curve (0, 0) -> (0, 1/3) -> (1, 1); at FPR 0.3 PRO = 1/3 + 0.3 * 2/3 = 8/15
    assert aupro(maps, masks, 0.3) == pytest.approx((1 / 3 + 8 / 15) / 2, abs=1e-12)  # 4-connected: 0.575


def test_aupro_regions_never_span_images() -> None:
    """The same place in two images holds two regions: a found 2x2 one and a missed single pixel."""
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 2:4, 2:4] = True
    masks[1, 2, 2] = True
    maps = np.where(masks & (np.arange(2)[:, None, None] == 0), 1.0, 0.0).astype(np.float32)
    # two regions: curve (0, 0) -> (0, 1/2) -> (1, 1), PRO 0.65 at FPR 0.3 (one 5-pixel region: 0.83)
    assert aupro(maps, masks, 0.3) == pytest.approx((0.5 + 0.65) / 2, abs=1e-12)


def _random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """1-3 small maps with quantised (tied) or continuous scores and tiny, diagonal or touching regions."""
    n, h, w = int(rng.integers(1, 4)), int(rng.integers(3, 9)), int(rng.integers(3, 9))
    kind = rng.integers(0, 3)
    if kind == 0:  # scattered pixels: many 1-2 pixel regions, diagonal contacts, 4-split regions
        masks = rng.random((n, h, w)) < rng.uniform(0.05, 0.4)
    else:  # explicit shapes: single pixels, dominoes, diagonal pairs, L shapes
        masks = np.zeros((n, h, w), dtype=bool)
        shapes = [[(0, 0)], [(0, 0), (0, 1)], [(0, 0), (1, 1)], [(0, 1), (1, 0)], [(0, 0), (1, 0), (1, 1)]]
        for _ in range(int(rng.integers(1, 4))):
            i, y, x = int(rng.integers(n)), int(rng.integers(h - 1)), int(rng.integers(w - 1))
            for dy, dx in shapes[int(rng.integers(len(shapes)))]:
                masks[i, y + dy, x + dx] = True
    scores = rng.normal(size=(n, h, w)) + rng.uniform(0, 2) * masks
    levels = [None, 1, 2, 3, 5][int(rng.integers(5))]
    if levels is not None:  # few distinct values: ties within and across normal and defect pixels
        scores = np.round(scores * levels / 2)
    return scores.astype(np.float32), masks


def test_aupro_matches_brute_force_on_many_small_cases() -> None:
    rng = np.random.default_rng(2024)
    checked = 0
    for _ in range(300):
        maps, masks = _random_case(rng)
        if masks.all() or not masks.any():
            continue
        for limit in (0.01, 0.1, 0.3, 1.0, float(rng.uniform(0.02, 0.9))):
            assert aupro(maps, masks, limit) == pytest.approx(brute_force_aupro(maps, masks, limit), abs=1e-9)
        checked += 1
    assert checked > 250


@pytest.mark.parametrize("ties", [False, True])
def test_ranking_metrics_match_sklearn(ties: bool) -> None:
    rng = np.random.default_rng(0)
    y = rng.random(3000) < 0.2
    s = rng.normal(size=3000) + y
    if ties:
        s = np.round(s, 1)
    got = ranking_metrics(s, y)
    assert got["AUROC"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert got["AP"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    p, r, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * p * r / (p + r))
    assert got["F1max"] == pytest.approx(f1.max(), abs=1e-12)


def test_iou_max_brute_force() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(500) < 0.3
    s = np.round(rng.normal(size=500) + 2 * y, 1)
    best = max(((s >= t) & y).sum() / ((s >= t) | y).sum() for t in np.unique(s))
    assert ranking_metrics(s, y)["IoU-max"] == pytest.approx(best, abs=1e-12)


def test_compute_metrics_without_masks_is_nan_not_zero() -> None:
    m = compute_metrics(np.array([0.1, 0.9, 0.2, 0.8]), np.array([0, 1, 0, 1]))
    assert m["I-AUROC"] == 1.0 and m["I-AP"] == 1.0 and m["I-F1max"] == 1.0
    assert all(np.isnan(m[k]) for k in ("P-AUROC", "P-AP", "P-F1max", "AUPRO", "IoU-max"))


def test_compute_metrics_pixel_level() -> None:
    maps, masks = random_maps(np.random.default_rng(5))
    labels = masks.reshape(len(masks), -1).any(1)
    m = compute_metrics(image_scores(maps), labels, maps, masks)
    assert m["P-AUROC"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)
    assert m["AUPRO"] == pytest.approx(brute_force_aupro(maps, masks), abs=1e-9)
    with pytest.raises(ValueError, match="same shape"):
        compute_metrics(image_scores(maps), labels, maps, masks[:, :-1])


def test_compute_metrics_returns_every_metric_by_name() -> None:
    maps, masks = random_maps(np.random.default_rng(6))
    labels = masks.reshape(len(masks), -1).any(1)
    scores = image_scores(maps)
    m = compute_metrics(scores, labels, maps, masks, fpr_limit=0.1)
    assert tuple(m) == METRIC_NAMES
    img, pix = ranking_metrics(scores, labels), ranking_metrics(maps, masks)
    expect = [img["AUROC"], img["AP"], img["F1max"], pix["AUROC"], pix["AP"], pix["F1max"]]
    assert [m[k] for k in METRIC_NAMES[:6]] == pytest.approx(expect, abs=1e-12)
    assert m["IoU-max"] == pytest.approx(pix["IoU-max"], abs=1e-12)
    assert m["AUPRO"] == pytest.approx(brute_force_aupro(maps, masks, 0.1), abs=1e-9)  # fpr_limit is passed on
    # maps without masks (or masks without maps): no pixel metrics, not an error
    assert all(np.isnan(compute_metrics(scores, labels, maps, None)[k]) for k in METRIC_NAMES[3:])
    assert all(np.isnan(compute_metrics(scores, labels, None, masks)[k]) for k in METRIC_NAMES[3:])
    with pytest.raises(ValueError, match="must match"):
        compute_metrics(scores, labels[:-1])


def test_ranking_metrics_undefined_without_both_classes() -> None:
    assert all(np.isnan(v) for v in ranking_metrics(np.array([0.1, 0.2]), np.array([0, 0])).values())
    assert all(np.isnan(v) for v in ranking_metrics(np.array([0.1, 0.2]), np.array([1, 1])).values())
    # one positive and one negative are enough: ranked right, every metric is 1
    one_each = ranking_metrics(np.array([0.1, 0.9, 0.2]), np.array([0, 1, 0]))
    assert one_each == {"AUROC": 1.0, "AP": 1.0, "F1max": 1.0, "IoU-max": 1.0}
    one_each = ranking_metrics(np.array([0.1, 0.9, 0.2]), np.array([1, 0, 1]))
    assert one_each["AUROC"] == 0.0 and one_each["AP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="differ in size"):
        ranking_metrics(np.zeros(3), np.zeros(4))


def test_aupro_argument_checks_and_single_map() -> None:
    masks = np.zeros((8, 8), dtype=bool)
    masks[2:4, 2:4] = True
    maps = np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32) + masks
    assert aupro(maps, masks) == pytest.approx(brute_force_aupro(maps[None], masks[None]), abs=1e-12)  # [H, W]
    assert np.isnan(aupro(maps, np.ones_like(masks)))  # no normal pixel: FPR undefined
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fpr_limit"):
            aupro(maps, masks, bad)
    with pytest.raises(ValueError, match="same shape"):
        aupro(maps, masks[:, :-1])


def test_with_mean_skips_undefined() -> None:
    rows = [{"category": "a", "I-AUROC": 0.8, "AUPRO": float("nan")}, {"category": "b", "I-AUROC": 0.6, "AUPRO": 0.5}]
    mean = with_mean(rows)[-1]
    assert mean["category"] == "mean" and mean["I-AUROC"] == pytest.approx(0.7) and mean["AUPRO"] == 0.5


def test_aupro_when_no_defect_pixel_reaches_the_fpr_limit() -> None:
    """One 2x2 defect scored 0, every other pixel 1: PRO is 0 up to FPR 0.3, so AUPRO is 0 (was a ValueError)."""
    maps = np.ones((1, 8, 8), dtype=np.float32)
    masks = np.zeros((1, 8, 8), dtype=bool)
    masks[0, 2:4, 2:4] = True
    maps[masks] = 0.0
    assert aupro(maps, masks) == 0.0
    assert brute_force_aupro(maps, masks) == 0.0


def test_with_mean_by_hand() -> None:
    rows = [{"category": "a", "backbone": "x", "I-AUROC": 0.5, "AUPRO": float("nan")}]
    mean = with_mean(rows)[-1]  # one row: its own mean
    assert mean == {"category": "mean", "backbone": "", "I-AUROC": 0.5, "AUPRO": mean["AUPRO"]}
    assert np.isnan(mean["AUPRO"])  # every value undefined: NaN (and no numpy warning, see below)
    assert with_mean([]) == []
    rows = [{"name": "a", "I-AP": 1.0}, {"name": "b", "I-AP": 0.0}]
    assert with_mean(rows, key="name")[-1] == {"name": "mean", "I-AP": 0.5}
    assert len(rows) == 2  # the input list is not changed


@pytest.mark.filterwarnings("error")
def test_with_mean_of_undefined_column_is_quiet() -> None:
    assert np.isnan(with_mean([{"category": "a", "P-AP": float("nan")}])[-1]["P-AP"])


@pytest.mark.parametrize("targets", [np.zeros(4, bool), np.ones(4, bool)])
def test_ranking_metrics_with_one_class_are_undefined_under_every_name(targets) -> None:
    """No positive or no negative: every ranking metric is undefined (NaN), under the names the tables use."""
    m = ranking_metrics(np.array([0.1, 0.4, 0.3, 0.9]), targets)
    assert sorted(m) == ["AP", "AUROC", "F1max", "IoU-max"]
    assert all(np.isnan(v) for v in m.values())
