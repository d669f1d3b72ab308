"""Comparing sections and conditions: mean composition per section, and per cell type a test
between two conditions on the per-section means.

The unit of replication is the section (the animal or patient), not the spot: thousands of
spots of one section are not independent replicates, so testing spots would give tiny,
meaningless p-values. Each section is summarised by its mean proportion per type, and the two
conditions' section means are compared with Welch's t-test (default) or the Mann-Whitney U
test, with Benjamini-Hochberg adjustment over types. With few sections per condition the test
has little power -- and the Mann-Whitney test cannot go below a floor at all (2 vs 2
sections: p >= 0.33; 3 vs 3: p >= 0.10), which :attr:`ConditionComparison.note` says.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import InputError
from .de import benjamini_hochberg

TESTS = {"welch": "Welch's t-test", "mannwhitney": "Mann-Whitney U test"}
COLUMNS = ["cell_type", "mean_a", "mean_b", "difference", "statistic", "pvalue", "padj",
           "n_a", "n_b"]


def section_composition(proportions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Mean proportion of every cell type in every section (rows: sections, in order).

    Parameters
    ----------
    proportions
        ``{section: spots x types DataFrame}``; sections trained from one reference share
        their types (a type missing from a section counts as 0).
    """
    if not proportions:
        raise InputError("no section has proportions yet", "train at least one section")
    types: list[str] = []
    for frame in proportions.values():
        types += [str(c) for c in frame.columns if str(c) not in types]
    rows = {name: frame.rename(columns=str).reindex(columns=types, fill_value=0.0)
            .astype(float).mean(axis=0) for name, frame in proportions.items()}
    table = pd.DataFrame(rows).T
    table.index.name = "section"
    return table


def mannwhitney_floor(n_a: int, n_b: int) -> float:
    """Smallest two-sided exact Mann-Whitney p-value possible with ``n_a`` vs ``n_b`` sections."""
    if n_a < 1 or n_b < 1:
        return 1.0
    return min(1.0, 2.0 / comb(n_a + n_b, n_a))


@dataclass
class ConditionComparison:
    """Per-type comparison of two conditions (one row per type, see :data:`COLUMNS`)."""

    table: pd.DataFrame
    condition_a: str
    condition_b: str
    test: str
    sections_a: list[str]
    sections_b: list[str]
    note: str = ""


def compare_conditions(composition: pd.DataFrame, conditions: dict[str, str],
                       condition_a: str, condition_b: str,
                       test: str = "welch") -> ConditionComparison:
    """Test, for every cell type, whether its mean proportion differs between two conditions.

    Parameters
    ----------
    composition
        :func:`section_composition` (sections x types).
    conditions
        ``{section: condition}``; sections without a condition are left out.
    condition_a, condition_b
        The two conditions compared (``difference = mean_b - mean_a``).
    test
        ``"welch"`` (Welch's unequal-variance t-test, default) or ``"mannwhitney"`` (exact
        two-sided Mann-Whitney U).

    Returns
    -------
    ConditionComparison
        ``table`` sorted by p-value; ``pvalue``/``padj`` are NaN when a condition has fewer
        than 2 sections (Welch) or 1 (Mann-Whitney); ``note`` tells how many sections each
        condition has and what that allows.

    Raises
    ------
    InputError
        Unknown test, the same condition twice, or a condition without any section.
    """
    if test not in TESTS:
        raise InputError(f"unknown test {test!r}", f"use one of {', '.join(TESTS)}")
    if condition_a == condition_b:
        raise InputError(f"both groups are condition {condition_a!r}",
                         "pick two different conditions")
    names = [str(s) for s in composition.index]
    a = [s for s in names if conditions.get(s) == condition_a]
    b = [s for s in names if conditions.get(s) == condition_b]
    for cond, members in ((condition_a, a), (condition_b, b)):
        if not members:
            known = sorted({str(v) for v in conditions.values()})
            raise InputError(f"no section has condition {cond!r} (conditions: "
                             f"{', '.join(known) or 'none'})", "label the sections' conditions")
    values_a = composition.loc[a].to_numpy(np.float64)
    values_b = composition.loc[b].to_numpy(np.float64)
    n_a, n_b = len(a), len(b)
    stat = np.full(composition.shape[1], np.nan)
    pval = np.full(composition.shape[1], np.nan)
    for j in range(composition.shape[1]):
        x, y = values_a[:, j], values_b[:, j]
        if test == "welch" and n_a >= 2 and n_b >= 2:
            if np.ptp(x) == 0 and np.ptp(y) == 0:  # no spread at all: t is undefined
                stat[j], pval[j] = (0.0, 1.0) if x[0] == y[0] else (np.nan, np.nan)
                continue
            res = stats.ttest_ind(y, x, equal_var=False)
            stat[j], pval[j] = float(res.statistic), float(res.pvalue)
        elif test == "mannwhitney":
            res = stats.mannwhitneyu(y, x, alternative="two-sided",
                                     method="exact" if n_a + n_b <= 20 else "auto")
            stat[j], pval[j] = float(res.statistic), float(res.pvalue)
    table = pd.DataFrame({
        "cell_type": [str(c) for c in composition.columns],
        "mean_a": values_a.mean(0), "mean_b": values_b.mean(0),
        "difference": values_b.mean(0) - values_a.mean(0),
        "statistic": stat, "pvalue": pval, "padj": benjamini_hochberg(pval),
        "n_a": n_a, "n_b": n_b})
    table = table.sort_values(["pvalue", "cell_type"], na_position="last", ignore_index=True)
    return ConditionComparison(table, condition_a, condition_b, test, a, b,
                               _note(test, condition_a, condition_b, n_a, n_b))


def _note(test: str, cond_a: str, cond_b: str, n_a: int, n_b: int) -> str:
    counts = (f"{n_a} section{'s' * (n_a != 1)} of {cond_a} vs {n_b} section"
              f"{'s' * (n_b != 1)} of {cond_b}")
    if test == "welch" and min(n_a, n_b) < 2:
        return (f"{counts}: a t-test needs at least 2 sections per condition; no p-value. "
                "Compare the compositions by eye, or add sections.")
    if test == "mannwhitney":
        floor = mannwhitney_floor(n_a, n_b)
        if floor > 0.05:
            return (f"{counts}: with so few sections the Mann-Whitney test cannot give p below "
                    f"{floor:.2f}; use Welch's t-test or add sections.")
        return f"{counts}; exact two-sided Mann-Whitney U test on the per-section means."
    if min(n_a, n_b) < 4:
        return (f"{counts}: few replicates, so only large, consistent differences can reach "
                "significance; treat p-values as a guide.")
    return f"{counts}; Welch's t-test on the per-section means, BH-adjusted over cell types."
