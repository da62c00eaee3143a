"""Tables as every notebook writes them: one unit (%), mean and spread over seeds, flags, "—" for undefined.

Conventions (README, "Conventions"):

* metrics are shown in **percent** with one decimal; the CSV keeps two;
* a full-profile number is the **mean over 3 seeds** with its sample standard deviation ("97.1 ± 0.4");
  one seed (the ci profile) shows the value alone;
* an AUROC below 50 % (worse than chance) is **flagged** with a dagger, and the caption says so;
* an undefined value (a pixel metric without masks) is "—", never ``nan``;
* the setting (data, backbone, resolution, seeds) goes into the **caption**, not into a column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

FLAG = "†"
FLAG_NOTE = f"{FLAG} below 50 %: worse than chance (scores rank normal images or pixels above anomalous ones)"
UNDEFINED = "—"


def percent(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A copy of `df` with `columns` (fractions in [0, 1]) multiplied by 100."""
    out = df.copy()
    for c in columns:
        out[c] = 100 * out[c].astype(float)
    return out


def seed_summary(df: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str], seed: str = "seed") -> pd.DataFrame:
    """One row per seed -> one row per `keys`: the mean of every metric, ``"<metric> sd"`` and ``seeds``.

    The standard deviation is the sample one (ddof 1) over seeds, NaN with a single seed. Row order
    follows the first appearance of each key. NaN values of a metric (undefined) are left out.
    """
    keys = list(keys)
    groups = df.groupby(keys, sort=False, dropna=False)
    mean = groups[list(metrics)].mean()
    sd = groups[list(metrics)].std(ddof=1).add_suffix(" sd")
    n = groups[seed].nunique().rename("seeds")
    out = pd.concat([mean, sd, n], axis=1).reset_index()
    order = [c for m in metrics for c in (m, f"{m} sd")]
    return out[keys + order + ["seeds"]]


def cell(
    mean: float, sd: float | None = None, digits: int = 1, flag_below: float | None = None, signed: bool = False
) -> str:
    """One table cell: ``"97.1 ± 0.4"``, ``"97.1"`` (no spread), ``"—"`` (undefined), flagged below `flag_below`;
    ``signed`` writes the sign of a difference (``"+2.3 ± 0.4"``)."""
    if mean is None or not np.isfinite(mean):
        return UNDEFINED
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    if sd is not None and np.isfinite(sd):
        text += f" ± {sd:.{digits}f}"
    if flag_below is not None and mean < flag_below:
        text += f" {FLAG}"
    return text


def paired_verdict(diff: Sequence[float], higher: str, lower: str, tol: float = 1e-9) -> str:
    """Verdict on paired differences (one per seed, same pairing): ``higher`` / ``lower`` when their mean is above /
    below 0 by more than twice its standard error, ``"within noise"`` when not, ``"identical"`` when every
    difference is 0 (within `tol`), ``"one seed: no spread"`` when there is one non-zero difference."""
    d = np.asarray(diff, dtype=float)
    if d.size == 0 or not np.isfinite(d).all():
        raise ValueError(f"diff: expected one finite difference per seed, got {d.tolist()}")
    if np.all(np.abs(d) <= tol):
        return "identical"
    if d.size < 2:
        return "one seed: no spread"
    se = d.std(ddof=1) / np.sqrt(d.size)
    if abs(d.mean()) <= 2 * se:
        return "within noise"
    return higher if d.mean() > 0 else lower


@dataclass(frozen=True)
class PairedTest:
    """A paired t-test of per-seed differences (see :func:`paired_test`)."""

    n: int  # seeds (pairs)
    mean: float  # mean difference
    sd: float  # sample sd of the differences (NaN with one seed)
    t: float  # mean / (sd / sqrt(n))
    p: float  # two-sided p-value, n - 1 degrees of freedom (NaN where no test is possible)
    alpha: float  # the level the verdict uses
    verdict: str  # `higher`, `lower`, "inconclusive", "identical" or "one seed: no test"

    def text(self, digits: int = 1) -> str:
        """``"+2.4 ± 1.7, p = 0.13: inconclusive"`` (mean ± sd of the differences, the p-value, the verdict)."""
        p = "" if not np.isfinite(self.p) else f", p = {self.p:.2g}" if self.p >= 0.001 else ", p < 0.001"
        return f"{cell(self.mean, self.sd, digits, signed=True)}{p}: {self.verdict}"


def paired_test(diff: Sequence[float], higher: str, lower: str, alpha: float = 0.05, tol: float = 1e-9) -> PairedTest:
    """Two-sided paired t-test of ``diff`` (one difference per seed, a - b, same pairing) at level ``alpha``.

    ``higher`` / ``lower`` when the mean difference is above / below 0 with ``p < alpha``, else
    ``"inconclusive"``; ``"identical"`` when every difference is 0 (within ``tol``); ``"one seed: no test"``
    with one difference. With 3 seeds the test has 2 degrees of freedom: a difference must exceed 4.30
    standard errors to reach p < 0.05 (an exact sign-flip permutation test could never go below p = 0.25).
    """
    from scipy import stats

    d = np.asarray(diff, dtype=float)
    if d.size == 0 or not np.isfinite(d).all():
        raise ValueError(f"diff: expected one finite difference per seed, got {d.tolist()}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n, mean = d.size, float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    if np.all(np.abs(d) <= tol):
        return PairedTest(n, mean, sd, float("nan"), float("nan"), alpha, "identical")
    if n < 2:
        return PairedTest(n, mean, sd, float("nan"), float("nan"), alpha, "one seed: no test")
    if sd == 0:  # equal non-zero differences: no spread, the sign is certain
        return PairedTest(n, mean, sd, float("inf") * np.sign(mean), 0.0, alpha, higher if mean > 0 else lower)
    t = mean / (sd / np.sqrt(n))
    p = float(2 * stats.t.sf(abs(t), df=n - 1))
    verdict = (higher if mean > 0 else lower) if p < alpha else "inconclusive"
    return PairedTest(n, mean, sd, float(t), p, alpha, verdict)


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN, where no test ran, stays NaN and is not counted).

    The k-th smallest of m p-values becomes ``max over j <= k of min(1, (m - j + 1) p_(j))``: reject where the adjusted
    p is below the level, and the chance of any false "significant" in the family stays at most that level.
    """
    p = np.asarray(p, dtype=float)
    if p.ndim != 1 or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p: need a 1-D sequence of p-values in [0, 1] (or NaN), got {p.tolist()}")
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out


def display_table(
    summary: pd.DataFrame,
    metrics: Sequence[str],
    digits: int = 1,
    flag: Sequence[str] = (),
) -> pd.DataFrame:
    """A summary of :func:`seed_summary` (or plain per-row numbers) as strings for reading.

    Each metric column becomes ``"mean ± sd"`` (its ``"<m> sd"`` column is folded in); metrics named
    in `flag` (AUROCs in %) are flagged below 50. Other columns pass through, NaN as "—".
    """
    out = summary.copy()
    for m in metrics:
        sds = out[f"{m} sd"] if f"{m} sd" in out else [None] * len(out)
        out[m] = [cell(v, s, digits, 50.0 if m in flag else None) for v, s in zip(out[m], sds, strict=True)]
        out = out.drop(columns=[f"{m} sd"], errors="ignore")
    out = out.drop(columns=["seeds"], errors="ignore")
    return out.astype(object).where(out.notna(), UNDEFINED)


def formatted(df: pd.DataFrame, float_format: str = "%.4f") -> pd.DataFrame:
    """`df` as strings: floats with `float_format`, undefined (NaN) as "—", everything else as it is."""
    out = df.astype(object).copy()
    for c in df.columns:
        if df[c].dtype.kind == "f":
            out[c] = [UNDEFINED if not np.isfinite(v) else float_format % v for v in df[c]]
    return out.where(df.notna(), UNDEFINED)


def has_flags(table: pd.DataFrame) -> bool:
    """True when any cell of a :func:`display_table` carries the below-chance flag."""
    return bool(table.astype(str).apply(lambda col: col.str.contains(FLAG, regex=False)).to_numpy().any())


def to_markdown(table: pd.DataFrame, caption: str) -> str:
    """Markdown with the caption above (and the flag's meaning below when a cell is flagged)."""
    md = table.astype(object).where(table.notna(), UNDEFINED).to_markdown(index=False, disable_numparse=True)
    note = f"\n\n{FLAG_NOTE}." if has_flags(table) else ""
    return f"**{caption}**\n\n{md}{note}\n"
