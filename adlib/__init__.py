"""adlib: the small, tested package behind the notebooks of this repository.

Modules are named after what they hold: `data` (loaders, containers), `synthetic` (built-in data),
`backbones` and `features` (pretrained CNN patch features and their cache), `metrics`,
`patchcore` (the baseline), `evaluate` (glue), `nb` (notebook setup), `runner` and `bench` (CLI).
"""

__version__ = "0.1.0"
