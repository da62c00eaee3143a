"""Published numbers: complete, labelled with their source, and never imported by the method code."""

from __future__ import annotations

from adlib.paper_numbers.adapted_moe import CATEGORIES, TABLE1, TABLE2, TABLE3, TABLE4
from adlib.paper_numbers.unified import MVTEC_UNIFIED


def test_paper_numbers_tables() -> None:
    full = [q for q in TABLE3 if q.method == "SimpleNet +MoE +TTA +Norm"]
    assert {(q.dataset, q.metric): q.value for q in full}[("Texture-AD (cloth, unseen subclasses)", "P-AUROC")] == 76.05
    center = [q for q in TABLE4 if "center" in q.method and q.metric == "I-AUROC"]
    assert sorted(q.value for q in center) == [55.50, 56.21, 67.53]


def test_ours_is_labelled_with_the_configuration_it_is() -> None:
    """'Ours' of Tables 1-2 is not always the full model: each quote says which Table 3 row it equals."""
    t3 = {(q.method, q.dataset, q.metric): q.value for q in TABLE3}
    for table, metric in ((TABLE1, "I-AUROC"), (TABLE2, "P-AUROC")):
        ours = {q.dataset: q for q in table if q.method == "Adapted-MoE" and q.note.startswith("average")}
        cloth, wafer, metal = (ours[f"Texture-AD ({c}, unseen subclasses)"] for c in CATEGORIES)
        assert cloth.value == t3[("SimpleNet +MoE +TTA +Norm", cloth.dataset, metric)] and "row 7" in cloth.note
        assert metal.value == t3[("SimpleNet +TTA", metal.dataset, metric)] and "TTA only" in metal.note
        assert wafer.value not in {v for (m, d, mm), v in t3.items() if d == wafer.dataset and mm == metric}
        assert "matches no row" in wafer.note


def test_disagreeing_sources_are_both_quoted() -> None:
    mambaad = {q.value: q.source for q in MVTEC_UNIFIED if q.method == "MambaAD" and q.metric == "I-AUROC"}
    assert set(mambaad) == {97.8, 98.6} and "DVAD" in mambaad[97.8] and "MambaAD" in mambaad[98.6]
    assert all(q.source for q in MVTEC_UNIFIED)
