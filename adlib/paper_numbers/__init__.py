"""Numbers quoted from the papers, in one place, each with its source: one module per paper.

Nothing here is produced by this repository: these are the published figures that our tables show
*beside* our own, never mixed with them. Every entry records the paper, the table, the data set and
the backbone that produced it, because ours come from other data (built-in sets, `../shared/data`)
and often another backbone (the offline EfficientNet-Lite0). This package imports nothing of ours.

`adapted_moe` (Lei, Chen et al., 2024: Tables 1-4), `unified` (multi-class MVTec AD headline numbers:
MambaAD, DVAD and the methods they compare with), `patchcore` (Roth et al., CVPR 2022, and the peers
measured on the project machine).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quoted:
    """A published number and where it comes from."""

    value: float  # in percent, as printed
    metric: str  # e.g. "I-AUROC"
    method: str
    dataset: str
    source: str  # paper, table
    backbone: str = ""
    note: str = ""


def as_rows(quotes: list[Quoted]) -> list[dict[str, object]]:
    """Quoted numbers as table rows (for pandas.DataFrame)."""
    return [
        {
            "method": q.method,
            "metric": q.metric,
            "value (%)": q.value,
            "dataset": q.dataset,
            "backbone": q.backbone,
            "source": q.source,
            "note": q.note,
        }
        for q in quotes
    ]
