"""2-D scan orders: permutations, exact inverses, distinct directions, Hilbert locality, flatten/merge."""

from __future__ import annotations

import pytest
import torch

from adlib.nn.scan2d import (
    PATHS,
    VIEWS,
    base_order,
    flatten_orders,
    hilbert_curve,
    invert,
    merge_orders,
    scan_orders,
    view_order,
)

SIZES = [(8, 8), (6, 10), (7, 5), (16, 16), (2, 3)]


def test_base_paths_by_hand() -> None:
    assert base_order(2, 3, "sweep").tolist() == [0, 1, 2, 3, 4, 5]
    assert base_order(3, 3, "snake").tolist() == [0, 1, 2, 5, 4, 3, 6, 7, 8]
    # the order-2 Hilbert curve: a U through the four quadrants of a 4x4 square, rows as (row, col)
    assert hilbert_curve(2).tolist() == [[0, 0], [1, 0], [1, 1], [0, 1]]
    assert base_order(4, 4, "hilbert").tolist() == [0, 1, 5, 4, 8, 12, 13, 9, 10, 14, 15, 11, 7, 6, 2, 3]


@pytest.mark.parametrize("H, W", SIZES)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("K", [1, 2, 4, 8])
def test_orders_are_distinct_permutations_that_round_trip(H, W, path, K) -> None:
    orders = scan_orders(H, W, K, path)
    assert orders.shape == (K, H * W) and orders.dtype == torch.int64
    for order in orders:
        assert torch.equal(order.sort().values, torch.arange(H * W))  # a permutation
    assert len({tuple(o.tolist()) for o in orders}) == K  # K different paths
    inv = invert(orders)
    seq = torch.randn(K, H * W, dtype=torch.float64)
    assert torch.equal(seq.gather(1, orders).gather(1, inv), seq)  # exact round trip, both ways
    assert torch.equal(seq.gather(1, inv).gather(1, orders), seq)


@pytest.mark.parametrize("H, W", SIZES)
@pytest.mark.parametrize("path", PATHS)
def test_views_are_the_torch_transforms(H, W, path) -> None:
    x = torch.arange(H * W).view(H, W)
    as_torch = {
        "map": x,
        "transpose": x.T,
        "rot90": torch.rot90(x, 1),
        "fliplr": x.flip(1),
        "rot180": torch.rot90(x, 2),
        "rot270": torch.rot90(x, 3),
        "flipud": x.flip(0),
        "antitranspose": torch.rot90(x, 2).T,
    }
    assert set(as_torch) == set(VIEWS)
    for view, img in as_torch.items():  # reading the transformed map = reading x along view_order
        want = img.flatten()[base_order(*img.shape, path)]
        assert torch.equal(x.flatten()[view_order(H, W, path, view)], want), view


def test_mambaad_views_repeat_for_symmetric_paths() -> None:
    """Why we skip views: MambaAD's 8 Hilbert directions on 8x8 hold 6 distinct orders; sweep keeps 8."""

    def mambaad(path):
        fwd = [view_order(8, 8, path, v) for v in ("map", "transpose", "rot90", "fliplr")]
        return {tuple(o.tolist()) for o in fwd + [o.flip(0) for o in fwd]}

    assert len(mambaad("hilbert")) == 6 and len(mambaad("snake")) == 6
    assert len(mambaad("sweep")) == 8
    mambaad_views = ["map", "transpose", "rot90", "fliplr"]  # MambaAD's order, written out (not read from VIEWS)
    assert list(VIEWS)[:4] == mambaad_views
    assert torch.equal(
        scan_orders(8, 8, 8, "sweep")[:4], torch.stack([view_order(8, 8, "sweep", v) for v in mambaad_views])
    )


@pytest.mark.parametrize("n", [2, 4, 8, 16, 32])
def test_hilbert_moves_one_cell_at_a_time(n) -> None:
    for order in scan_orders(n, n, 8, "hilbert"):
        r, c = order // n, order % n
        steps = (r.diff().abs() + c.diff().abs()).tolist()
        assert set(steps) == {1}  # every successor is a 4-neighbour


def test_hilbert_on_other_sides_keeps_the_curve_order() -> None:
    order = base_order(3, 5, "hilbert")  # drawn on 8x8, cells outside dropped
    full = hilbert_curve(8)
    inside = [int(r) * 5 + int(c) for r, c in full if r < 3 and c < 5]
    assert order.tolist() == inside


def test_snake_moves_one_cell_at_a_time() -> None:
    for order in scan_orders(7, 5, 8, "snake"):
        r, c = order // 5, order % 5
        assert set((r.diff().abs() + c.diff().abs()).tolist()) == {1}


@pytest.mark.parametrize("H, W", SIZES)
@pytest.mark.parametrize("K", [1, 2, 4, 8])
def test_merge_of_flatten_is_the_identity(H, W, K) -> None:
    x = torch.randint(-1000, 1000, (2, 3, H, W)).float()  # integers: sums and means are exact
    orders = scan_orders(H, W, K)
    seqs = flatten_orders(x, orders)  # [B, K, C, L]
    assert seqs.shape == (2, K, 3, H * W)
    for k in range(K):  # sequence k is x read along order k
        assert torch.equal(seqs[:, k], x.flatten(2)[:, :, orders[k]])
    assert torch.equal(merge_orders(seqs, orders, H, W, reduce="mean"), x)
    assert torch.equal(merge_orders(seqs, orders, H, W, reduce="sum"), K * x)


def test_merge_puts_each_direction_back_in_place() -> None:
    """Direction k's output at sequence position i belongs to map cell orders[k, i]."""
    H, W, K = 4, 6, 4
    orders = scan_orders(H, W, K, "snake")
    ys = torch.zeros(1, K, 1, H * W)
    ys[0, 2, 0, 0] = 1.0  # the first step of direction 2 (the reversed path: the path's last cell)
    out = merge_orders(ys, orders, H, W).flatten()
    assert out.nonzero().flatten().tolist() == [orders[2, 0].item()] == [orders[0, -1].item()]


def test_defaults_are_dvads_config() -> None:
    assert torch.equal(base_order(4, 6), base_order(4, 6, "hilbert"))  # scan_type='hilbert'
    assert torch.equal(scan_orders(4, 6), scan_orders(4, 6, 8, "hilbert"))  # num_direction=8


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="K must be 1, 2, 4 or 8, got 3"):
        scan_orders(4, 4, 3)
    with pytest.raises(ValueError, match="path must be one of .*, got 'zorder'"):
        base_order(4, 4, "zorder")
    with pytest.raises(ValueError, match="reduce must be 'sum' or 'mean', got 'max'"):
        merge_orders(torch.zeros(1, 1, 1, 4), scan_orders(2, 2, 1), 2, 2, reduce="max")
    for n in (0, 3, 6, 12):  # the curve itself needs a power-of-two side (base_order pads other sides)
        with pytest.raises(ValueError, match=f"power of two >= 1, got {n}"):
            hilbert_curve(n)
    assert hilbert_curve(1).tolist() == [[0, 0]]  # the smallest side: one cell
