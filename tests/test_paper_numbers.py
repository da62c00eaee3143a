"""Published numbers: complete, labelled with their source, and never imported by the method code."""

from __future__ import annotations

from adlib.paper_numbers.adapted_moe import TABLE3, TABLE4


def test_paper_numbers_tables() -> None:
    full = [q for q in TABLE3 if q.method == "SimpleNet +MoE +TTA +Norm"]
    assert {(q.dataset, q.metric): q.value for q in full}[("Texture-AD (cloth, unseen subclasses)", "P-AUROC")] == 76.05
    center = [q for q in TABLE4 if "center" in q.method and q.metric == "I-AUROC"]
    assert sorted(q.value for q in center) == [55.50, 56.21, 67.53]
