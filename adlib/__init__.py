"""adlib: the small, tested package behind the notebooks of this repository.

Data flows one way: data -> features (cached) -> method -> maps -> metrics -> tables.

`data/` (containers, loaders, shared sets, built-in data), `backbones` and `features` (frozen CNN
patch features and their cache), `nn/` (building blocks: torch and numpy only), `methods/` (one file
per method under one contract), `maps` and `metrics` (evaluation), `evaluate` (the one path from a
category to metrics), `ablation` (switch grids), `paper_numbers/` (published numbers with their
source), `nb` and `plots` (notebook helpers), `config` and `runtime` (profiles, device, seed,
paths), `cli/` (`python -m adlib reproduce`, `bench`).
"""

__version__ = "0.1.0"
