"""The model cache: computed once, keyed by content, bad entries named and recomputed, no half-written files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adlib.cache import cached, digest
from adlib.evaluate import fit_cached
from adlib.methods.base import TrainBudget
from adlib.methods.simplenet import SimpleNetConfig


def test_computed_once_then_read(tmp_path: Path) -> None:
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"w": torch.arange(3.0)}

    a = cached("models", {"x": 1}, compute, tmp_path)
    b = cached("models", {"x": 1}, compute, tmp_path)
    assert len(calls) == 1 and torch.equal(a["w"], b["w"])
    cached("models", {"x": 2}, compute, tmp_path)  # another key: computed
    assert len(calls) == 2 and len(list(tmp_path.glob("*.pt"))) == 2 and not list(tmp_path.glob("*.tmp*"))


def test_a_bad_entry_is_named_and_recomputed(tmp_path: Path) -> None:
    cached("models", {"x": 1}, lambda: 1, tmp_path)
    [path] = tmp_path.glob("*.pt")
    path.write_bytes(path.read_bytes()[:20])  # truncated
    with pytest.warns(UserWarning, match=rf"{path.name}: unreadable cache entry"):
        assert cached("models", {"x": 1}, lambda: 2, tmp_path) == 2
    torch.save({"key": "something else", "value": 3}, path)
    with pytest.warns(UserWarning, match="holds another key"):
        assert cached("models", {"x": 1}, lambda: 4, tmp_path) == 4
    assert cached("models", {"x": 1}, lambda: 5, tmp_path) == 4  # the recomputed value was stored


def test_an_interrupted_compute_leaves_nothing(tmp_path: Path) -> None:
    def boom() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached("models", {"x": 1}, boom, tmp_path)
    assert not list(tmp_path.iterdir()) if tmp_path.exists() else True


def test_digest_is_by_content() -> None:
    a = np.arange(6).reshape(2, 3)
    assert digest(a) == digest(a.copy()) == digest(torch.arange(6).reshape(2, 3).numpy())
    assert digest(a) != digest(a.T) and digest(a) != digest(a.astype(np.float32))
    assert digest({"b": 1, "a": 2}) == digest({"a": 2, "b": 1})


def test_fit_cached_reuses_a_trained_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADLIB_CACHE", str(tmp_path / "features"))  # models live beside the feature cache
    feats = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    budget = TrainBudget(steps=2, patches_per_step=8)
    cfg = SimpleNetConfig(hidden=8)
    a = fit_cached("simplenet", feats, cfg, budget, data_key="k")
    b = fit_cached("simplenet", feats, cfg, budget, data_key="k")
    torch.testing.assert_close(a.score(feats), b.score(feats))
    assert len(list((tmp_path / "features_models").glob("*.pt"))) == 1
    fit_cached("simplenet", feats, cfg, budget.with_seed(1), data_key="k")  # another seed: another model
    fit_cached("simplenet", feats, cfg, budget, data_key="other data")
    assert len(list((tmp_path / "features_models").glob("*.pt"))) == 3


def test_test_time_switches_share_one_cached_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adapted-MoE with TTA on or off is one trained model: cached once, served under each config's switches."""
    from adlib.methods.adapted_moe import AdaptedMoEConfig

    monkeypatch.setenv("ADLIB_CACHE", str(tmp_path / "features"))
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(6, 4, 3, 3, generator=g)
    sub = np.array([0, 0, 0, 1, 1, 1])
    budget = TrainBudget(steps=2, patches_per_step=8, router_steps=1, router_batch=2)
    on = AdaptedMoEConfig(expert=SimpleNetConfig(hidden=8), top_k=2)
    off = AdaptedMoEConfig(expert=SimpleNetConfig(hidden=8), top_k=1, tta=False)
    a = fit_cached("adapted_moe", feats, on, budget, data_key="k", subclasses=sub)
    b = fit_cached("adapted_moe", feats, off, budget, data_key="k", subclasses=sub)
    assert len(list((tmp_path / "features_models").glob("*.pt"))) == 1
    assert (a.cfg.tta, a.cfg.top_k) == (True, 2) and (b.cfg.tta, b.cfg.top_k) == (False, 1)
    assert a.experts[0] is not None and torch.equal(a.centers, b.centers)
