"""Issue 9, case 5: a corrupt, truncated, foreign or wrong-shape cache entry is named and recomputed;
temporary files of killed writers are removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from adlib import features
from adlib.features import FeatureConfig, FeatureExtractor, cached_features, remove_stale_tmp

from .test_features import CallCounter, make_split


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(FeatureConfig(), device="cpu", batch_size=4)


def only_entry(cache_dir: Path) -> Path:
    [path] = cache_dir.glob("*.pt")
    return path


def damage_and_reload(
    extractor: FeatureExtractor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage, why: str
) -> None:
    """Cache one split, damage its entry, and check: a warning naming the file and why, one recompute, healed."""
    split = make_split(2)
    good = cached_features(extractor, split, "demo/cat", "train", cache_dir=tmp_path)
    path = only_entry(tmp_path)
    damage(path, good)
    counter = CallCounter(monkeypatch)
    with pytest.warns(UserWarning, match=rf"{path.name}: bad feature-cache entry, {why}.*; recomputing it$"):
        again = cached_features(extractor, split, "demo/cat", "train", cache_dir=tmp_path)
    assert counter.calls == 1 and torch.equal(again, good)
    cached_features(extractor, split, "demo/cat", "train", cache_dir=tmp_path)  # healed: read back, no warning
    assert counter.calls == 1


def test_a_truncated_entry_is_named_and_recomputed(extractor, tmp_path, monkeypatch) -> None:
    def truncate(path: Path, good: torch.Tensor) -> None:
        path.write_bytes(path.read_bytes()[:1000])

    damage_and_reload(extractor, tmp_path, monkeypatch, truncate, r"unreadable \(")


def test_an_empty_entry_is_named_and_recomputed(extractor, tmp_path, monkeypatch) -> None:
    damage_and_reload(extractor, tmp_path, monkeypatch, lambda p, g: p.write_bytes(b""), r"unreadable \(")


def test_a_wrong_shape_entry_is_named_and_recomputed(extractor, tmp_path, monkeypatch) -> None:
    def shrink(path: Path, good: torch.Tensor) -> None:
        entry = torch.load(path, weights_only=True)
        entry["pyramid"] = [m[:1] for m in entry["pyramid"]]
        entry["shapes"] = [list(m.shape) for m in entry["pyramid"]]
        torch.save(entry, path)

    damage_and_reload(
        extractor,
        tmp_path,
        monkeypatch,
        shrink,
        r"stage maps of shapes \[\[1, 40, 8, 8\], \[1, 112, 4, 4\]\], expected",
    )


def test_an_entry_with_another_key_is_named_and_recomputed(extractor, tmp_path, monkeypatch) -> None:
    def rekey(path: Path, good: torch.Tensor) -> None:
        entry = torch.load(path, weights_only=True)
        entry["key"] = json.dumps({**json.loads(entry["key"]), "split": "test"})
        torch.save(entry, path)

    damage_and_reload(extractor, tmp_path, monkeypatch, rekey, "its key differs")


def test_leftover_tmp_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    leftover = tmp_path / f"demo__cat__train__abc.tmp{dead_pid}"
    leftover.write_bytes(b"25 MB of half an entry")
    writing = tmp_path / f"demo__cat__train__def.tmp{os.getpid()}"  # a live writer: kept ...
    writing.write_bytes(b"being written")
    old = tmp_path / f"demo__cat__train__ghi.tmp{os.getpid()}"  # ... unless it is old (a reused pid)
    old.write_bytes(b"old")
    os.utime(old, (time.time() - 2 * features.STALE_TMP_S,) * 2)
    assert sorted(remove_stale_tmp(tmp_path)) == sorted([leftover, old])
    assert writing.is_file() and not leftover.exists() and not old.exists()


def test_the_cache_cleans_leftovers_when_it_is_used(extractor, tmp_path: Path) -> None:
    leftover = tmp_path / "demo__cat__train__abc.tmp999999999"  # no such pid
    leftover.write_bytes(b"partial")
    cached_features(extractor, make_split(1), "demo/cat", "train", cache_dir=tmp_path)
    assert not leftover.exists()
