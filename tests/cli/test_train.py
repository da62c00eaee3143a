"""`python -m adlib train`: argument errors, the grids the notebooks use, one model into the cache and back, shards,
and two processes under torchrun."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from adlib import grids, nb
from adlib.cli import main
from adlib.config import get_profile
from adlib.data import shared
from adlib.runtime import REPO_ROOT

from .test_cli_arguments import one_error_line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], r"give either a METHOD .* or --notebook NN"),
        (["dvad", "--notebook", "07"], r"give either a METHOD"),
        (["--notebook", "05"], r"--notebook 05: the notebooks with a grid of models are 06, 07, 08"),
        (["dvad", "--shard", "2/2"], r"--shard 2/2: expected i/n with 0 <= i < n"),
        (["dvad", "--shard", "a/2"], r"--shard a/2: expected i/n"),
        (["dvad", "--checkpoint-every", "0"], r"--checkpoint-every 0: must be at least 1 step"),
        (["dvad", "--threads", "-1"], r"--threads -1: must be >= 0"),
        (["dvad", "--device", "tpu"], r"tpu"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], args: list, message: str) -> None:
    assert main(["train", *args]) == 2
    assert re.search(message, one_error_line(capsys, "train"))


def test_the_grids_hold_what_the_notebooks_train() -> None:
    ci, full = get_profile("ci"), get_profile("full")
    g7 = grids.jobs("07", full)
    assert len(g7) == 3 * (1 + 5 + 10)  # default, 5 other backbones, Tables 4-5 less the default's rows; 3 seeds
    assert {j.seed for j in g7} == {0, 1, 2} and len({(j.label, j.seed) for j in g7}) == len(g7)
    assert sum(j.cfg == grids.DVAD_DEFAULT for j in g7) == 3 * 6  # the default config on each backbone
    g8 = grids.jobs("08", full, seed=5)
    assert {j.seed for j in g8} == {5, 6, 7}
    assert sum(j.method == "anomaly_moe" for j in g8) == 3 * 4 + 3  # 4 variants x 3 seeds + 3 levels alone, seed 5
    assert [j.steps for j in grids.jobs("06", ci)] == [10] and grids.amoe_steps(full) == full.train_steps // 3
    shards = [grids.shard(g7, i, 3) for i in range(3)]
    assert sorted((j.label, j.seed) for s in shards for j in s) == sorted((j.label, j.seed) for j in g7)
    with pytest.raises(ValueError, match="declares no grid"):
        grids.jobs("03", ci)


@pytest.fixture
def no_real_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Built-in data only, and a model cache of the test's own."""
    monkeypatch.setattr(shared, "find_data_root", lambda path=None: None)
    monkeypatch.setattr(nb, "find_data_root", lambda path=None: None)
    monkeypatch.delenv("ADLIB_DATA_ROOT", raising=False)
    monkeypatch.setenv("ADLIB_CACHE", str(tmp_path / "features"))
    return tmp_path


def test_train_puts_a_model_in_the_cache_and_a_rerun_finds_it(
    no_real_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "dvad", "--profile", "ci", "--device", "cpu", "--quiet", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "[1/1] 07 default (seed 0): trained in" in out and "done: 1 trained" in out
    models = no_real_data / "features_models"
    assert len(list(models.glob("*.pt"))) == 1 and not list(models.glob("*.ckpt"))  # checkpoints removed
    assert main(["train", "--notebook", "06", "--profile", "ci", "--device", "cpu", "--quiet"]) == 0
    assert "[1/1] 06 default (seed 0): in the cache" in capsys.readouterr().out  # notebook 06 shares the model
    assert main(["train", "--notebook", "07", "--profile", "ci", "--device", "cpu", "--list", "--shard", "1/4"]) == 0
    out = capsys.readouterr().out
    assert "4 model(s) in this shard" in out and "to train" in out and "trained in" not in out


def test_two_processes_under_torchrun_train_one_model(tmp_path: Path) -> None:
    env = {**os.environ, "ADLIB_CACHE": str(tmp_path / "features"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "adlib"]
    done = subprocess.run(
        [*cmd, "train", "dvad", "--profile", "ci", "--device", "cpu", "--quiet"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 process(es) each" in done.stdout and done.stdout.count("trained in") == 1  # rank 0 speaks
    assert len(list((tmp_path / "features_models").glob("*.pt"))) == 1


def test_notebook_08_declares_what_its_grid_declares() -> None:
    """Notebook 08 still writes its models out itself (it moves to adlib.grids when it is re-run for issue 23):
    its lines must give the grid's configurations, seeds and steps, or `train --notebook 08` trains other models."""
    import json
    from dataclasses import replace

    from adlib.methods.anomaly_moe import LEVELS, AnomalyMoEConfig

    cells = json.loads((REPO_ROOT / "notebooks" / "08_hierarchical_experts.ipynb").read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    wanted = ("VARIANTS = ", "SINGLE = ", "SINGLE_SEEDS = ", "STEPS = ")
    lines, buf = [], []
    for line in source.splitlines():  # each declaration, with its continuation lines
        if buf and (line.startswith(" ") or line.startswith(")")):
            buf.append(line)
            continue
        if buf:
            lines.append("\n".join(buf))
            buf = []
        if line.startswith(wanted):
            buf = [line]
    assert len(lines) == 4, lines
    for profile in (get_profile("ci"), get_profile("full")):
        ns = {"DEFAULT": AnomalyMoEConfig(), "replace": replace, "LEVELS": LEVELS, "SEEDS": [0, 1, 2], "P": profile}
        exec("\n".join(line.split("#")[0] for line in lines), ns)  # noqa: S102 - the notebook's own lines
        assert ns["VARIANTS"] == grids.amoe_variants() and ns["SINGLE"] == grids.amoe_single()
        assert ns["SINGLE_SEEDS"] == grids.amoe_single_seeds(profile, [0, 1, 2])
        assert ns["STEPS"] == grids.amoe_steps(profile)


def test_notebook_07_declares_what_its_grid_declares() -> None:
    """Notebook 07 still writes out its ablation grid, backbones and steps (it moves to adlib.grids when it is
    re-run for the DVAD issue): they must equal the grid's, or `train --notebook 07` trains other models."""
    import json
    from dataclasses import replace

    from adlib.methods.dvad import PROFILE_STEPS, DVADConfig
    from adlib.paper_numbers import dvad as dvad_paper

    cells = json.loads((REPO_ROOT / "notebooks" / "07_dvad.ipynb").read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    ablations = source[source.index("SUBSETS = ") : source.index("EXAMPLES = ")]
    label = source[source.index("LABEL = {") : source.index("}", source.index("LABEL = {")) + 1]
    steps = next(line for line in source.splitlines() if line.startswith("STEPS = "))
    for profile in (get_profile("ci"), get_profile("full")):
        ns = {"DEFAULT": DVADConfig(), "replace": replace, "dvad_paper": dvad_paper, "PROFILE_STEPS": PROFILE_STEPS,
              "P": profile}  # fmt: skip
        exec(ablations + "\n" + label + "\n" + steps.split("#")[0], ns)  # noqa: S102 - the notebook's own lines
        assert ns["ABLATIONS"] == grids.dvad_ablations() and ns["LABEL"] == grids.DVAD_BACKBONES
        assert ns["STEPS"] == grids.dvad_steps(profile)
    assert "DVADConfig()" in source and grids.DVAD_DEFAULT == DVADConfig()
