"""The layout's import rules, checked by walking every module's imports (no module is executed).

* `adlib/nn/` imports only torch, numpy and the standard library;
* `adlib/methods/` never imports `data`, `metrics`, `paper_numbers`, `nb` or `cli`;
* `adlib/paper_numbers/` imports nothing of ours but itself;
* `adlib/training.py`, the one loop under every method, imports nothing of ours but `runtime`;
* the old flat module names are gone (no aliases kept alive).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "adlib"
STDLIB = set(sys.stdlib_module_names)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved), at any depth."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
                # `from . import x` may import a submodule x
                out |= {stem} | {f"{stem}.{a.name}" for a in node.names if node.module is None}
            elif node.module:
                out.add(node.module)
    return out


def modules(sub: str) -> list[Path]:
    return sorted((PACKAGE / sub).rglob("*.py"))


def test_the_walker_sees_relative_imports() -> None:
    found = imports_of(PACKAGE / "methods" / "simplenet.py")
    assert "adlib.nn.losses" in found and "adlib.methods.base" in found and "torch" in found


@pytest.mark.parametrize("path", modules("nn"), ids=lambda p: p.name)
def test_nn_imports_only_torch_numpy_and_the_standard_library(path: Path) -> None:
    for name in imports_of(path):
        top = name.split(".")[0]
        if name.startswith("adlib.nn") or top in STDLIB or top in ("torch", "numpy", "__future__"):
            continue
        if top == "mamba_ssm":  # optional CUDA kernels, imported inside a try (adlib.nn.scan)
            continue
        pytest.fail(f"{path.relative_to(PACKAGE.parent)} imports {name}")


FORBIDDEN_FOR_METHODS = ("adlib.data", "adlib.metrics", "adlib.paper_numbers", "adlib.nb", "adlib.cli")


@pytest.mark.parametrize("path", modules("methods"), ids=lambda p: p.name)
def test_methods_never_import_data_metrics_paper_numbers_nb_or_cli(path: Path) -> None:
    bad = [n for n in imports_of(path) if n.startswith(FORBIDDEN_FOR_METHODS)]
    assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {bad}"


@pytest.mark.parametrize("path", modules("paper_numbers"), ids=lambda p: p.name)
def test_paper_numbers_import_nothing_of_ours(path: Path) -> None:
    ours = [n for n in imports_of(path) if n.startswith("adlib") and not n.startswith("adlib.paper_numbers")]
    assert not ours, f"{path.relative_to(PACKAGE.parent)} imports {ours}"


def test_the_training_loop_imports_only_runtime_of_ours() -> None:
    ours = {n for n in imports_of(PACKAGE / "training.py") if n.startswith("adlib")}
    assert ours == {"adlib.runtime"}, ours


@pytest.mark.parametrize(
    "old", ["moe", "synthetic", "runner", "bench", "experiments", "patchcore", "simplenet", "routing"]
)
def test_old_module_names_are_gone(old: str) -> None:
    assert not (PACKAGE / f"{old}.py").exists()
    everything = [p for p in PACKAGE.rglob("*.py")]
    users = [p for p in everything if f"adlib.{old}" in imports_of(p)]
    assert not users, f"adlib.{old} is still imported by {users}"
