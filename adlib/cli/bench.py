"""`python -m adlib bench`: speed and memory figures, printed and written to results/bench_<profile>.json.

What it measures, on this machine:

* metrics: AUPRO and all metrics on 500 random 256x256 maps, 250 of them with a 40x40 defect
  (the setting in which anomalib 2.7.0's AUPRO took 12.4-13.4 s per call on a 2-core CPU, November 2026);
* backbone only: images/s of the feature extractor (the floor of every method's inference);
* each method: fit time and full inference images/s (backbone + method + anomaly map), measured on
  a built-in category, or on a real one with `--real kolektorsdd/commutator`;
* peak memory: the process's maximum resident set size (and CUDA peak where a GPU is used);
* DVAD (``dvad`` among the methods): parameters, FLOPs per image (``torch.utils.flop_counter``: matrix
  products and convolutions; the selective scan's elementwise work is counted apart, 7 operations per state
  element and step), and images/s of the backbone's stages 1-3 alone (the floor) and of backbone + DVAD +
  anomaly map;
* with ``scan=True``: the selective-scan benchmark of :mod:`adlib.cli.bench_scan` (sequential loop, chunked
  scan and, if installed, mambapy), one thread.

Timings are wall-clock, best of `--repeat` runs for the short ones. They are figures to read, not
assertions: no test depends on them. Each profile has its own file (:func:`bench_path`), and a run
never overwrites a file that holds another profile's results; arguments are checked before any work
(:func:`check_bench_args`).
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..config import Profile, get_profile
from ..data import ADCategory
from ..evaluate import run_method
from ..features import FeatureConfig, FeatureExtractor
from ..maps import image_scores
from ..methods import METHODS
from ..methods.dvad import PROFILE_STEPS
from ..methods.patchcore import PatchCoreConfig
from ..metrics import aupro, compute_metrics
from ..runtime import REPO_ROOT, machine_description, resolve_device, write_atomic


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


def scan_elementwise_flops(model: torch.nn.Module, maps: list[torch.Tensor]) -> float:
    """Elementwise operations of every selective scan in one forward of ``model(maps)``: 7 per state element and step.

    Per step and state element ``(k, e, n)``: ``exp`` of ``delta * A`` (2), ``delta * B * u`` (2), the update
    ``dA * h + dBu`` (2) and the read-out's multiply-add (1). Counted by wrapping each SS2D's ``scan_map``
    for one forward (its input is the expanded map ``[B, E, H, W]``).
    """
    from ..nn.mamba import SS2D

    total = 0.0
    blocks = [m for m in model.modules() if isinstance(m, SS2D)]

    def counting(block: SS2D):  # noqa: ANN202 - a wrapper of scan_map
        inner = block.scan_map

        def scan_map(x: torch.Tensor) -> torch.Tensor:
            nonlocal total
            b, e, h, w = x.shape  # [B, E, H, W]
            total += 7.0 * b * block.cfg.directions * e * block.cfg.d_state * h * w
            return inner(x)

        return scan_map

    for block in blocks:
        block.scan_map = counting(block)  # type: ignore[method-assign]
    try:
        with torch.no_grad():
            model(maps)
    finally:
        for block in blocks:
            del block.scan_map  # back to the class's method
    return total


def bench_dvad(prof: Profile, dev: torch.device, cat: ADCategory, repeat: int) -> dict[str, float]:
    """DVAD on `cat`: fit and scoring (``run_method``), parameters, FLOPs per image, images/s against the floor."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..methods.dvad import DVADConfig

    extractor = FeatureExtractor(FeatureConfig(layers=(1, 2, 3)), dev)
    images = cat.test.images
    extractor.pyramid(images[:4])  # warm-up
    t_bb = _best(lambda: extractor.pyramid(images), max(1, repeat - 1))
    train_maps, test_maps = extractor.pyramid(cat.train.images), extractor.pyramid(images)
    budget = replace(prof.budget(dev, seed=0), steps=PROFILE_STEPS.get(prof.name, prof.train_steps))
    ev = run_method("dvad", cat, train_maps, test_maps, budget, DVADConfig())
    model = ev.model
    one = [m[:1].to(dev) for m in test_maps]  # one image's encoder maps
    x = torch.zeros(1, 3, cat.image_size, cat.image_size, device=dev)
    with torch.no_grad(), FlopCounterMode(display=False) as fc_dvad:
        model(one)
    with torch.no_grad(), FlopCounterMode(display=False) as fc_bb:
        extractor.model(x)
    infer_s = t_bb + ev.timings["score_s"] + ev.timings["map_s"]
    return {
        "fit_s": ev.timings["fit_s"],
        "steps": float(budget.steps),
        "parameters": float(sum(p.numel() for p in model.parameters())),
        "gflops_per_image": fc_dvad.get_total_flops() / 1e9,
        "scan_elementwise_gflops_per_image": scan_elementwise_flops(model, one) / 1e9,
        "backbone_gflops_per_image": fc_bb.get_total_flops() / 1e9,
        "backbone_images_per_s": len(images) / t_bb,
        "inference_images_per_s": len(images) / infer_s,
        "train_images_per_s": budget.steps * DVADConfig().batch / ev.timings["fit_s"],  # optimizer steps x batch
        "I-AUROC": ev.metrics["I-AUROC"],
        "P-AUROC": ev.metrics["P-AUROC"],
        "AUPRO": ev.metrics["AUPRO"],
        "score_s": ev.timings["score_s"],
        "map_s": ev.timings["map_s"],
    }


def bench_path(profile: str, real: str | None = None) -> Path:
    """results/bench_<profile>.json, or results/bench_<profile>_<dataset>_<category>.json for a real set."""
    tail = f"_{real.replace('/', '_')}" if real else ""
    return REPO_ROOT / "results" / f"bench_{profile}{tail}.json"


def check_bench_args(
    profile: str = "ci",
    device: str = "auto",
    real: str | None = None,
    data_root: str | None = None,
    methods: str | list[str] | None = None,
    repeat: int = 3,
    out: Path | None = None,
    coreset_ratio: float | None = None,
) -> dict[str, object]:
    """The arguments of :func:`bench`, checked before any work and completed; a ValueError names the bad one.

    `methods` may be a comma-separated string; `data_root` comes back absolute (or None), `out` filled in.
    """
    from ..data.shared import data_sets_in, run_data_root
    from .reproduce import check_device

    get_profile(profile)
    check_device(device)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"--repeat {repeat}: must be at least 1")
    if coreset_ratio is not None and not 0 < coreset_ratio <= 1:
        raise ValueError(f"--coreset-ratio {coreset_ratio}: must be in (0, 1]")
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
        if not methods:
            raise ValueError(f"--methods '': names no method; choose from {', '.join(METHODS)}")
    unknown = [m for m in methods or [] if m not in METHODS]
    if unknown:
        raise ValueError(f"--methods: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(METHODS)}")
    root = None
    if real is not None:
        if real.count("/") != 1 or not all(real.split("/")):
            raise ValueError(f"--real {real!r}: expected DATASET/CATEGORY, e.g. kolektorsdd/commutator")
        root = run_data_root(data_root)
        if root is None:
            raise ValueError(f"--real {real}: no data root; pass --data-root or set ADLIB_DATA_ROOT")
        if real not in data_sets_in(root):
            raise ValueError(f"--real {real}: not found under {root} (have {', '.join(data_sets_in(root))})")
    elif data_root is not None:
        root = run_data_root(data_root)
    out = Path(out).expanduser().resolve() if out is not None else bench_path(profile, real)
    if out.is_file():
        try:
            held = json.loads(out.read_text()).get("profile")
        except (ValueError, AttributeError):
            held = None
        if held is not None and held != profile:
            raise ValueError(
                f"--out {out}: holds the {held} profile's results; this run is {profile} (give another file)"
            )
    return {
        "profile": profile,
        "device": device,
        "real": real,
        "data_root": str(root) if root is not None else None,
        "methods": methods,
        "repeat": repeat,
        "out": out,
        "coreset_ratio": coreset_ratio,
    }


def _category(prof: Profile, real: str | None, data_root: str | None) -> ADCategory:
    """The category to time on: a real one (DATASET/CATEGORY under `data_root`) or built-in textures."""
    from ..data import load_mvtec, load_mvtec_loco
    from ..data.synthetic import make_builtin

    if real is None:
        return make_builtin("textures", prof, seed=0)[0]
    ds, cat_name = real.split("/")
    loader = load_mvtec_loco if ds == "mvtec_loco" else load_mvtec
    return loader(Path(str(data_root)) / ds, cat_name, prof.image_size, prof.max_real_train, prof.max_real_test)


def bench(
    profile: str = "ci",
    device: str = "auto",
    real: str | None = None,
    data_root: str | None = None,
    methods: list[str] | None = None,
    repeat: int = 3,
    out: Path | None = None,
    coreset_ratio: float | None = None,
    scan: bool = False,
) -> dict[str, object]:
    """Measure, print, and write the report to `out` (default :func:`bench_path`); returns the report.

    ``scan=True`` adds the selective-scan benchmark (:func:`adlib.cli.bench_scan.bench_scan`, one thread).
    """
    args = check_bench_args(profile, device, real, data_root, methods, repeat, out, coreset_ratio)
    out, methods, data_root = args["out"], args["methods"], args["data_root"]  # type: ignore[assignment]
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

    cat = _category(prof, real, data_root)
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
        if name == "dvad":  # DVAD reads the encoder's stage maps 1-3, not the aggregated patch features
            rows[name] = d = bench_dvad(prof, dev, cat, repeat)
            print(
                f"dvad: fit {d['fit_s']:.1f} s ({d['steps']:.0f} steps), {d['parameters'] / 1e6:.2f} M parameters, "
                f"{d['gflops_per_image']:.2f} GFLOP/image (+ {d['scan_elementwise_gflops_per_image']:.2f} in the "
                f"scans; backbone {d['backbone_gflops_per_image']:.2f}), backbone stages 1-3 alone "
                f"{d['backbone_images_per_s']:.1f} images/s, full inference {d['inference_images_per_s']:.1f} "
                f"images/s, training {d['train_images_per_s']:.1f} images/s, I-AUROC {d['I-AUROC']:.3f}"
            )
            continue
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
    if scan:
        from .bench_scan import bench_scan

        print("== selective scan")
        report["scan"] = [{**r, "shape": list(r["shape"])} for r in bench_scan(repeat=max(repeat, 3))]
    report["peak_rss_mb"] = _peak_rss_mb()
    if dev.type == "cuda":
        report["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(f"peak memory: {report['peak_rss_mb']:.0f} MB RSS")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report
