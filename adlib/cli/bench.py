"""`python -m adlib bench`: speed and memory figures, printed and written to results/bench.json.

What it measures, on this machine:

* metrics: AUPRO and all metrics on 500 random 256x256 maps, 250 of them with a 40x40 defect
  (the setting of the anomalib figure quoted in ../shared/papers/README.md: 12.4-13.4 s per AUPRO);
* backbone only: images/s of the feature extractor (the floor of every method's inference);
* each method: fit time and full inference images/s (backbone + method + anomaly map), measured on
  a built-in category, or on a real one with `--real kolektorsdd/commutator`;
* peak memory: the process's maximum resident set size (and CUDA peak where a GPU is used).

Timings are wall-clock, best of `--repeat` runs for the short ones. They are figures to read, not
assertions: no test depends on them.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..config import Profile, get_profile
from ..evaluate import run_method
from ..features import FeatureConfig, FeatureExtractor
from ..maps import image_scores
from ..methods import METHODS
from ..methods.patchcore import PatchCoreConfig
from ..metrics import aupro, compute_metrics
from ..runtime import REPO_ROOT, machine_description, resolve_device


def method_configs(profile: Profile) -> dict[str, object]:
    """The config each method runs with: the paper's defaults, PatchCore at the profile's coreset ratio."""
    return {"patchcore": PatchCoreConfig(coreset_ratio=profile.coreset_ratio)}


def _model_facts(model: object) -> dict[str, float]:
    """Size facts of a fitted model for the report: memory-bank rows, number of experts."""
    facts = {}
    if getattr(model, "memory_bank", None) is not None:
        facts["memory_bank"] = float(len(model.memory_bank))  # type: ignore[attr-defined]
    if hasattr(model, "n_experts"):
        facts["experts"] = float(model.n_experts)  # type: ignore[attr-defined]
    return facts


def _best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_metrics(repeat: int = 3, n: int = 500, size: int = 256, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    maps = rng.random((n, size, size), dtype=np.float32)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n // 2):
        y, x = rng.integers(0, size - 40, 2)
        masks[i, y : y + 40, x : x + 40] = True
    maps += 0.3 * masks
    labels = masks.reshape(n, -1).any(1)
    return {
        "aupro_s": _best(lambda: aupro(maps, masks), repeat),
        "all_metrics_s": _best(lambda: compute_metrics(image_scores(maps), labels, maps, masks), repeat),
        "n_maps": n,
        "map_size": size,
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bench(
    profile: str = "ci",
    device: str = "auto",
    real: str | None = None,
    data_root: str | None = None,
    methods: list[str] | None = None,
    repeat: int = 3,
    out: Path | None = None,
    coreset_ratio: float | None = None,
) -> dict[str, object]:
    from ..data import find_data_root, load_mvtec
    from ..data.synthetic import make_builtin

    prof = get_profile(profile) if coreset_ratio is None else get_profile(profile, coreset_ratio=coreset_ratio)
    dev = resolve_device(device)
    report: dict[str, object] = {
        "machine": machine_description(dev),
        "torch": torch.__version__,
        "profile": prof.name,
        "coreset_ratio": prof.coreset_ratio,
    }
    print(f"== metrics ({report['machine']})")
    report["metrics"] = m = bench_metrics(repeat)
    print(
        f"AUPRO on {m['n_maps']} maps of {m['map_size']}^2: {m['aupro_s']:.2f} s; "
        f"all metrics: {m['all_metrics_s']:.2f} s"
    )

    if real:
        root = find_data_root(data_root)
        if root is None:
            raise FileNotFoundError("--real needs ../shared/data or --data-root")
        ds, cat_name = real.split("/")
        cat = load_mvtec(root / ds, cat_name, prof.image_size, prof.max_real_train, prof.max_real_test)
    else:
        cat = make_builtin("textures", prof, seed=0)[0]
    extractor = FeatureExtractor(FeatureConfig(), dev)
    print(f"== {cat.key}: {len(cat.train)} train, {len(cat.test)} test images at {cat.image_size} px, {dev}")
    images = cat.test.images
    extractor(images[:4])  # warm-up
    t_bb = _best(lambda: extractor(images), max(1, repeat - 1))
    train_feats = extractor(cat.train.images)
    test_feats = extractor(images)
    report["backbone_images_per_s"] = len(images) / t_bb
    print(f"backbone only ({extractor.config.backbone}): {len(images) / t_bb:.1f} images/s")
    rows = {}
    configs = method_configs(prof)
    for name in methods or list(METHODS):
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; have {sorted(METHODS)}")
        ev = run_method(name, cat, train_feats, test_feats, prof.budget(dev, seed=0), configs.get(name))
        # full inference = backbone + method scoring + anomaly maps (fit excluded)
        infer_s = t_bb + ev.timings.get("score_s", 0.0) + ev.timings.get("map_s", 0.0)
        rows[name] = {
            "fit_s": ev.timings.get("fit_s"),
            "inference_images_per_s": len(images) / infer_s,
            "I-AUROC": ev.metrics["I-AUROC"],
            "P-AUROC": ev.metrics["P-AUROC"],
            "AUPRO": ev.metrics["AUPRO"],
            **{k: v for k, v in ev.timings.items() if k not in ("fit_s",)},
            **_model_facts(ev.model),
        }
        print(
            f"{name}: fit {rows[name]['fit_s']:.1f} s, full inference {rows[name]['inference_images_per_s']:.1f} "
            f"images/s, I-AUROC {ev.metrics['I-AUROC']:.3f}, AUPRO {ev.metrics['AUPRO']:.3f}"
        )
    report["dataset"] = cat.key
    report["methods"] = rows
    report["peak_rss_mb"] = _peak_rss_mb()
    if dev.type == "cuda":
        report["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(f"peak memory: {report['peak_rss_mb']:.0f} MB RSS")
    out = out or REPO_ROOT / "results" / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report
