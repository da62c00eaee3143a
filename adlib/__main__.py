"""`python -m adlib reproduce ...`, `python -m adlib train ...` and `python -m adlib bench ...` (see adlib.cli)."""

import sys

from .cli import main

sys.exit(main())
