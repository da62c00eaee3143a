"""AnomalyMoE (Gu et al., 2025): the paper's claims, quoted as text. No numbers.

The text we work from (the paper's abstract and a summary of it) holds no per-data-set tables, and the
authors' repository (CASIA-LMC-Lab/AnomalyMoE) publishes no results table. So, unlike the other modules of
this package, this one quotes no number at all: only the abstract's claims, word for word, each with its
source. Notebook 08 checks each claim that our data can speak to against our own runs (``key`` names the
check), and prints :data:`NO_NUMBERS`.
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER = "Gu et al., AnomalyMoE: Towards a Language-free Generalist Model for Unified Visual Anomaly Detection, 2025"
_ABSTRACT = f"{PAPER}, abstract"


@dataclass(frozen=True)
class Claim:
    """A claim of the paper, quoted word for word, and where it is made."""

    key: str  # which check of notebook 08 speaks to it
    text: str  # quoted from the paper
    source: str  # paper, section


CLAIMS: list[Claim] = [
    Claim(
        "hierarchy",
        "AnomalyMoE correspondingly employs three dedicated expert networks at the patch, component, and global "
        "levels [...] This hierarchical design allows a single model to concurrently understand and detect a wide "
        "spectrum of anomalies.",
        _ABSTRACT,
    ),
    Claim("eir", "we introduce an Expert Information Repulsion (EIR) module to promote expert diversity", _ABSTRACT),
    Claim(
        "esb",
        "an Expert Selection Balancing (ESB) module to ensure the comprehensive utilization of all experts",
        _ABSTRACT,
    ),
    Claim(
        "specialists",
        "Experiments on 8 challenging datasets spanning industrial imaging, 3D point clouds, medical imaging, video "
        "surveillance, and logical anomaly detection demonstrate that AnomalyMoE establishes new state-of-the-art "
        "performance, significantly outperforming specialized methods in their respective domains.",
        _ABSTRACT,
    ),
]

NO_NUMBERS = (
    "AnomalyMoE's published numbers are not quoted here: our copy of the paper is its abstract and a summary (no "
    "tables), and the authors' repository (CASIA-LMC-Lab/AnomalyMoE) publishes no results table. Only the paper's "
    "claims are quoted (adlib.paper_numbers.anomaly_moe.CLAIMS); every number in notebook 08 is ours."
)
