"""PatchCore: coreset selection, nearest-neighbour distances, and a detection it must make."""

from __future__ import annotations

import pytest
import torch

from adlib.methods.patchcore import PatchCore, PatchCoreConfig, greedy_coreset, nearest_distance


def covering_radius(points: torch.Tensor, idx: torch.Tensor) -> float:
    return float(torch.cdist(points, points[idx]).min(1).values.max())


def test_nearest_distance_matches_cdist() -> None:
    g = torch.Generator().manual_seed(0)
    q, bank = torch.randn(300, 16, generator=g), torch.randn(50, 16, generator=g)
    expected = torch.cdist(q, bank).min(1).values
    assert torch.allclose(nearest_distance(q, bank, chunk=64), expected, atol=1e-4)


def test_greedy_coreset_is_k_center_greedy() -> None:
    """step=1 without projection is the textbook greedy: each pick is the farthest point."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 8, generator=g)
    idx = greedy_coreset(x, 20, projection_dim=0, step=1, seed=0)
    assert len(set(idx.tolist())) == 20
    for k in range(1, 20):
        d = torch.cdist(x, x[idx[:k]]).min(1).values
        assert d[idx[k]] >= d.max() - 1e-5


def test_coreset_covers_far_better_than_random() -> None:
    g = torch.Generator().manual_seed(2)
    centres = torch.randn(30, 32, generator=g) * 5
    x = centres[torch.randint(30, (3000,), generator=g)] + torch.randn(3000, 32, generator=g) * 0.3
    exact = covering_radius(x, greedy_coreset(x, 60, projection_dim=0, step=1))
    batched = covering_radius(x, greedy_coreset(x, 60, projection_dim=16, step=4))
    random = covering_radius(x, torch.randperm(3000, generator=g)[:60])
    assert batched < 1.5 * exact  # the fast path stays close to the exact greedy
    assert batched < 0.5 * random  # and covers all 30 clusters, which a random subset misses


def test_patchcore_scores_foreign_patches_higher() -> None:
    g = torch.Generator().manual_seed(3)
    train = torch.randn(8, 16, 6, 6, generator=g)  # [N, C, h, w]
    test = torch.randn(2, 16, 6, 6, generator=g)
    test[1, :, 2, 3] += 6.0  # one foreign patch
    model = PatchCore(PatchCoreConfig(coreset_ratio=0.5), device="cpu").fit(train)
    s = model.score(test)
    assert s.shape == (2, 6, 6)
    assert s[1].argmax() == 2 * 6 + 3 and s[1].max() > s[0].max()
    assert len(model.memory_bank) == round(8 * 36 * 0.5)


def test_border_options() -> None:
    """crop: the ring is scored by its inner neighbour; ring_bank: ring patches meet only ring patches."""
    g = torch.Generator().manual_seed(3)
    train = torch.randn(4, 6, 5, 5, generator=g)
    train[:, :, 0, :] += 10.0  # the top row of every training image looks different: a "border artefact"
    test = train[:1].clone()
    full = PatchCore(PatchCoreConfig(coreset_ratio=1.0), device="cpu").fit(train)
    torch.testing.assert_close(full.score(test), torch.zeros(1, 5, 5), atol=0.05, rtol=0)  # its own patches
    crop = PatchCore(PatchCoreConfig(coreset_ratio=1.0, border="crop"), device="cpu").fit(train)
    assert len(crop.memory_bank) == 4 * 3 * 3
    s = crop.score(test)
    assert torch.equal(s[:, 0, 1:-1], s[:, 1, 1:-1]) and torch.equal(s[:, :, 0], s[:, :, 1])  # replicated ring
    ring = PatchCore(PatchCoreConfig(coreset_ratio=1.0, border="ring_bank"), device="cpu").fit(train)
    assert len(ring.ring_bank) == 4 * 16 and len(ring.memory_bank) == 4 * 9
    moved = test.clone()
    moved[:, :, 2, 2] = train[0, :, 0, 0]  # an inner position showing a ring patch: far from every inner patch
    assert ring.score(moved)[0, 2, 2] > 5 and full.score(moved)[0, 2, 2] < 0.05
    with pytest.raises(ValueError, match="border must be one of"):
        PatchCore(PatchCoreConfig(border="nope"))


@pytest.mark.parametrize("projection_dim", [0, 8])
def test_coreset_of_patch_maps_equals_the_flattened_rows_in_blocks(monkeypatch, projection_dim) -> None:
    """Patch maps give the coreset of their flattened rows, whatever the blocks (memory only): same picks, same bank."""
    from adlib.methods import patchcore
    from adlib.methods.base import flatten_patches

    g = torch.Generator().manual_seed(4)
    maps = torch.randn(12, 16, 7, 7, generator=g)[:, :, 1:-1, 1:-1]  # a non-contiguous view, as with border="crop"
    rows = flatten_patches(maps)
    expected = greedy_coreset(rows, 40, projection_dim=projection_dim, step=3, seed=5)
    monkeypatch.setattr(patchcore, "ROWS_PER_BLOCK", 50)  # several blocks of images and of distance rows
    idx = greedy_coreset(maps, 40, projection_dim=projection_dim, step=3, seed=5)
    assert torch.equal(idx, expected)
    assert torch.equal(patchcore.patch_rows(maps, idx), rows[idx])
    cfg = PatchCoreConfig(coreset_ratio=0.2, projection_dim=projection_dim, step=3, border="crop")
    bank = PatchCore(cfg, device="cpu", seed=5).fit(torch.randn(12, 16, 7, 7, generator=g)).memory_bank
    assert bank.shape == (round(12 * 25 * 0.2), 16)
