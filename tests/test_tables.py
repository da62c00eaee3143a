"""Table conventions: mean and sample sd over seeds, percent, flags below chance, "—" for undefined."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from adlib import tables
from adlib.tables import FLAG, UNDEFINED, cell, display_table, has_flags, percent, seed_summary, to_markdown


def test_seed_summary_by_hand() -> None:
    df = pd.DataFrame(
        {
            "method": ["a", "a", "a", "b", "b", "b"],
            "seed": [0, 1, 2, 0, 1, 2],
            "I-AUROC": [0.9, 0.8, 0.7, 0.5, 0.5, 0.5],
            "P-AUROC": [np.nan, np.nan, np.nan, 0.2, 0.4, 0.6],
        }
    )
    s = seed_summary(df, ["method"], ["I-AUROC", "P-AUROC"])
    assert list(s["method"]) == ["a", "b"] and list(s["seeds"]) == [3, 3]
    assert math.isclose(s.loc[0, "I-AUROC"], 0.8) and math.isclose(s.loc[0, "I-AUROC sd"], 0.1)  # sample sd (ddof 1)
    assert math.isnan(s.loc[0, "P-AUROC"])
    assert math.isclose(s.loc[1, "P-AUROC"], 0.4) and math.isclose(s.loc[1, "P-AUROC sd"], 0.2)
    one = seed_summary(df[df.seed == 0], ["method"], ["I-AUROC"])
    assert math.isnan(one.loc[0, "I-AUROC sd"])  # one seed: no spread


def test_cells_and_flags() -> None:
    assert cell(97.14, 0.44) == "97.1 ± 0.4"
    assert cell(97.14) == "97.1" and cell(97.14, float("nan")) == "97.1"
    assert cell(float("nan"), 1.0) == UNDEFINED
    assert cell(42.0, 3.0, flag_below=50) == f"42.0 ± 3.0 {FLAG}"
    assert cell(50.0, flag_below=50) == "50.0"
    assert cell(2.34, 0.4, signed=True) == "+2.3 ± 0.4" and cell(-0.04, signed=True) == "-0.0"


def test_display_table_and_markdown() -> None:
    df = pd.DataFrame({"method": ["a", "b"], "seed": [0, 0], "P-AUROC": [0.31, np.nan], "note": ["x", None]})
    s = percent(seed_summary(df, ["method", "note"], ["P-AUROC"]), ["P-AUROC"])
    t = display_table(s, ["P-AUROC"], flag=["P-AUROC"])
    assert list(t.columns) == ["method", "note", "P-AUROC"]
    assert list(t["P-AUROC"]) == [f"31.0 {FLAG}", UNDEFINED] and t.loc[1, "note"] == UNDEFINED
    assert has_flags(t)
    md = to_markdown(t, "Caption: setting")
    assert md.startswith("**Caption: setting**") and "nan" not in md and "below 50 %" in md
    assert not has_flags(display_table(s.iloc[1:], ["P-AUROC"], flag=["P-AUROC"]))


def test_formatted_honours_the_float_format_and_undefined() -> None:
    from adlib.tables import formatted

    df = pd.DataFrame({"name": ["a", "b"], "x": [0.12345, np.nan], "n": [3, 4]})
    f = formatted(df, "%.2f")
    assert list(f["x"]) == ["0.12", UNDEFINED] and list(f["name"]) == ["a", "b"] and list(f["n"]) == [3, 4]


@pytest.mark.parametrize(
    ("diff", "expected"),
    [
        ([0.0, 0.0, 0.0], "identical"),  # the old rule called this "softmax better" (0 < 2 * 0 is false)
        ([1e-12, -1e-12, 0.0], "identical"),  # float noise of a recomputed mean
        ([2.0, 2.1, 1.9], "A"),  # mean 2.0, se 0.058
        ([-2.0, -2.1, -1.9], "B"),
        ([1.0, 1.0, 1.0], "A"),  # constant non-zero difference: se 0, clearly positive
        ([3.0, -1.0, 1.0], "within noise"),  # mean 1.0, se 1.155: |1.0| <= 2.31
        ([0.5], "one seed: no spread"),
    ],
)
def test_paired_verdict_by_value(diff, expected):
    assert tables.paired_verdict(diff, "A", "B") == expected


def test_paired_verdict_threshold_is_twice_the_standard_error():
    # differences 1, 1 + x, 1 - x: mean 1, sd x, se x / sqrt(3); 2 se crosses 1 at x = sqrt(3) / 2 = 0.866
    assert tables.paired_verdict([1.0, 1.85, 0.15], "A", "B") == "A"  # 2 se = 0.981
    assert tables.paired_verdict([1.0, 1.88, 0.12], "A", "B") == "within noise"  # 2 se = 1.016


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")]])
def test_paired_verdict_refuses_bad_input(bad):
    with pytest.raises(ValueError, match="diff"):
        tables.paired_verdict(bad, "A", "B")


# ----------------------------------------------------------------------------- the paired t-test (issue 22)


def test_paired_test_is_scipys_one_sample_t_test_on_the_differences():
    from scipy import stats

    d = [2.4, 0.6, 4.2]
    got = tables.paired_test(d, "A", "B")
    ref = stats.ttest_1samp(d, 0.0)
    assert got.p == pytest.approx(ref.pvalue, rel=1e-12) and got.t == pytest.approx(ref.statistic, rel=1e-12)
    assert (got.n, got.mean, got.sd) == (3, pytest.approx(2.4), pytest.approx(1.8))
    assert got.verdict == "inconclusive" and got.text() == "+2.4 ± 1.8, p = 0.15: inconclusive"


def test_paired_test_with_three_seeds_needs_4_30_standard_errors():
    # differences 1, 1 + x, 1 - x: t = sqrt(3) / x; the 5 % two-sided cut of t with 2 df is 4.303
    assert tables.paired_test([1.0, 1.4, 0.6], "A", "B").verdict == "A"  # t = 4.33
    assert tables.paired_test([1.0, 1.41, 0.59], "A", "B").verdict == "inconclusive"  # t = 4.22
    assert tables.paired_test([-1.0, -1.4, -0.6], "A", "B").verdict == "B"
    assert tables.paired_test([1.0, 1.41, 0.59], "A", "B", alpha=0.1).verdict == "A"


@pytest.mark.parametrize(
    ("diff", "verdict"),
    [([0.0, 1e-12, 0.0], "identical"), ([0.5], "one seed: no test"), ([1.0, 1.0, 1.0], "A"), ([-2.0] * 3, "B")],
)
def test_paired_test_edge_cases(diff, verdict):
    got = tables.paired_test(diff, "A", "B")
    assert got.verdict == verdict
    assert np.isnan(got.p) == (verdict in ("identical", "one seed: no test"))


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")]])
def test_paired_test_refuses_bad_input(bad):
    with pytest.raises(ValueError, match="diff"):
        tables.paired_test(bad, "A", "B")
    with pytest.raises(ValueError, match="alpha"):
        tables.paired_test([1.0, 2.0], "A", "B", alpha=1.5)


def test_holm_adjusts_step_down_and_keeps_nan() -> None:
    got = tables.holm([0.01, 0.04, 0.03, float("nan")])
    # sorted 0.01, 0.03, 0.04 of m = 3: 0.03, max(0.03, 2 * 0.03) = 0.06, max(0.06, 1 * 0.04) = 0.06
    np.testing.assert_allclose(got[:3], [0.03, 0.06, 0.06])
    assert np.isnan(got[3])
    np.testing.assert_allclose(tables.holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(tables.holm([0.2]), [0.2])  # a family of one: unchanged
    with pytest.raises(ValueError, match="p-values"):
        tables.holm([1.5])
