"""Command-line tools: `python -m adlib reproduce` (papermill runner) and `python -m adlib bench`."""
