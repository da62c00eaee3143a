"""DVAD's quoted numbers: every one with its table, the lost M of Table 5 said to be lost."""

from __future__ import annotations

from adlib.paper_numbers.dvad import TABLE1, TABLE4, TABLE4_SUBSETS, TABLE5, TABLE5_BY_M, TABLE5_NOTE, subset_name


def test_table4_subsets_and_the_full_model() -> None:
    assert TABLE4_SUBSETS[(True, True, True)] == 98.8
    assert [TABLE4_SUBSETS[f] for f in ((True, False, False), (False, True, False), (False, False, True))] == [
        97.8,
        97.5,
        97.0,
    ]
    assert {subset_name(*f): v for f, v in TABLE4_SUBSETS.items() if sum(f) == 2} == {
        "Mamba + CNN": 98.3,
        "CNN + Hyper": 98.2,
        "Mamba + Hyper": 98.0,
    }
    assert all("Table 4" in q.source for q in TABLE4) and len(TABLE4) == 7


def test_table5_keeps_what_is_known_and_says_what_is_not() -> None:
    assert TABLE5_BY_M == {1: 98.1, None: 98.4, 5: 98.8, 8: 98.9}
    lost = next(q for q in TABLE5 if q.value == 98.4)
    assert "?" in lost.method and "lost" in lost.note and "lost" in TABLE5_NOTE
    assert all("Table 5" in q.source for q in TABLE5)


def test_headline_and_mambaad_disagreement() -> None:
    by = {q.method: q for q in TABLE1}
    assert by["DVAD"].value == 98.8 and by["MambaAD"].value == 97.8 and "98.6" in by["MambaAD"].note
    assert all(q.source.startswith("DVAD (2025), Table 1") for q in TABLE1)
