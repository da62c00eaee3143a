"""adlib.choose: the rule that picks DVAD's configuration and step count from validation records."""

from __future__ import annotations

import pytest

from adlib import choose


def rec(i: float, p: float, s: float, heldout=(), steps: int = choose.SELECT_STEPS) -> dict:
    return {"I-AUROC": i, "P-AUROC": p, "s_per_step": s, "heldout": [list(h) for h in heldout], "steps": steps}


def records(**js) -> dict[str, dict]:
    """Candidates A-F with criterion J = the given values (I = P = J) and 1 s/step unless (J, s) is given."""
    out = {}
    for name in choose.CANDIDATES:
        v = js.get(choose.slug(name), (50.0, 1.0))
        out[name] = rec(v[0], v[0], v[1])
    return out


def name(letter: str) -> str:
    return next(n for n in list(choose.CANDIDATES) + list(choose.FIXES) if choose.slug(n) == letter)


def test_the_criterion_averages_image_and_pixel_auroc() -> None:
    assert choose.criterion(rec(80.0, 90.0, 1.0)) == 85.0


def test_the_highest_criterion_wins_unless_a_faster_one_is_within_the_tie() -> None:
    assert choose.winner(records(C=(70.0, 1.4), B=(60.0, 0.6))) == name("C")
    assert choose.winner(records(C=(70.0, 1.4), B=(69.2, 0.6))) == name("B")  # within 1 point and faster
    assert choose.winner(records(C=(70.0, 1.4), B=(68.9, 0.6))) == name("C")  # 1.1 points: not a tie
    assert choose.winner(records(C=(70.0, 1.4), B=(69.5, 0.6), A=(69.1, 0.2))) == name("A")  # the fastest close one


def fix_records(g: float, h: float) -> dict[str, dict]:
    return {name("G"): rec(g, g, 1.0), name("H"): rec(h, h, 1.0)}


def test_a_fix_is_kept_unless_it_costs_more_than_the_tie_and_a_variant_must_gain_more_than_it() -> None:
    recs = records(C=(70.0, 1.0))
    label, cfg = choose.final(recs, fix_records(69.1, 70.9))
    assert label == "C + G" and cfg.gate_init == "zero" and cfg.hyper_gate == 0.0
    label, cfg = choose.final(recs, fix_records(68.9, 71.1))
    assert label == "C + H" and cfg.gate_init == "release" and cfg.hyper_gate == 1.0
    assert cfg.depths == choose.CANDIDATES[name("C")].depths


def test_the_step_count_is_read_before_the_learning_rate_drop() -> None:
    falling = [(s, 1.0 / s) for s in range(100, 3300, 100)]  # never levels off before the drop at 3200
    flat = falling[:10] + [(s, 0.1) for s in range(1100, 4100, 100)]
    assert choose.step_count(rec(0, 0, 1, falling, steps=4000)) is None
    got = choose.step_count(rec(0, 0, 1, flat, steps=4000))
    assert got is not None and got <= 0.8 * 4000
    after_drop = falling + [(s, 1e-4) for s in range(3300, 4100, 100)]  # flat only after the drop
    assert choose.step_count(rec(0, 0, 1, after_drop, steps=4000)) is None


def test_records_name_what_is_missing(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(choose, "OUT", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"A\.json.*python -m adlib\.choose dvad"):
        choose.records(choose.CANDIDATES)
    assert choose.records(choose.CANDIDATES, missing_ok=True) == {}
