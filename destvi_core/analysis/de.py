"""Cell-type-specific differential expression between two groups of spots (spec 4.3 / 4.4).

For one cell type, expression is sampled from the DestVI model in the spots of each group
(Gamma mixing distribution of the NB, log1p), compared gene by gene with a two-sample
Kolmogorov-Smirnov test (vectorised over genes), and a log2 fold change is computed from the
model means. Significance follows destvi_utils' ``plot_de_genes``: BH-adjusted p < 0.05 and
|log2FC| above the largest |mean| of a 3-component Gaussian mixture fitted to all log2FC.

At scale, sampling 10 draws for every spot of a 100,000-spot slide would be 8 GB and minutes of
Gamma draws: the KS test then uses a seeded random subsample of at most
:data:`MAX_SPOTS_PER_GROUP` spots per group (said in ``DEResult.notes`` and ``params``), while
the log2 fold changes still average the model means over every spot of each group (chunked).
Groups below the cap, e.g. at tutorial size, are used whole: the results are those of destvi_utils.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.mixture import GaussianMixture

from ..errors import InputError

MAX_SPOTS_PER_GROUP = 2000
"""Spots per group whose expression is sampled for the KS test (seeded random subsample above)."""

__all__ = [
    "MAX_SPOTS_PER_GROUP",
    "DEResult",
    "de_genes",
    "ks_2samp_columns",
    "benjamini_hochberg",
    "fc_cutoff_gmm",
    "significance",
    "group_from_threshold",
    "group_from_gamma_axis",
    "group_from_spot_names",
    "group_from_obs",
]


@dataclass
class DEResult:
    """Differential expression of one cell type between two spot groups.

    Attributes
    ----------
    table
        Index genes; columns ``log2fc, ks_score, pval, padj, significant``.
    fc_cutoff
        Largest |mean| of a 3-component GaussianMixture on log2fc (random_state 0).
    min_score
        Smallest KS score among genes with padj < 0.05 (NaN if none).
    n_group1, n_group2
        Spots in each group after AND-ing with proportion > threshold.
    params
        Parameters used (JSON-safe).
    n_sampled1, n_sampled2
        Spots of each group whose expression was sampled for the KS test (fewer than
        ``n_group*`` when a group was subsampled; None = the whole group).
    notes
        User-facing messages (e.g. that a group was subsampled).
    """

    table: pd.DataFrame
    fc_cutoff: float
    min_score: float
    n_group1: int
    n_group2: int
    params: dict = field(default_factory=dict)
    n_sampled1: int | None = None
    n_sampled2: int | None = None
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- statistics
def _sortable_keys(a: np.ndarray) -> np.ndarray:
    """Map float64 to uint64 keys with the same order (IEEE-754 bit trick); returns a new array."""
    b = np.array(a, dtype=np.float64, order="C", copy=True).view(np.uint64)
    sign = np.uint64(1) << np.uint64(63)
    flip = b >> np.uint64(63)  # 1 for negative numbers
    np.negative(flip, out=flip)  # 0 or 0xFF..FF (unsigned wrap-around)
    flip |= sign
    b ^= flip  # negative: ~b, non-negative: b | sign
    return b


def _ks_chunk(xt: np.ndarray, yt: np.ndarray) -> np.ndarray:
    """KS statistic for each row of ``xt [g, n1]`` vs ``yt [g, n2]``."""
    n1, n2 = xt.shape[1], yt.shape[1]
    one = np.uint64(1)
    k = np.empty((xt.shape[0], n1 + n2), dtype=np.uint64)
    k[:, :n1] = _sortable_keys(xt) & ~one  # label bit 0: group 1
    k[:, n1:] = _sortable_keys(yt) | one  # label bit 1: group 2
    k.sort(axis=1)
    cy = np.cumsum((k & one).astype(np.int32), axis=1, dtype=np.int64)
    pos = np.arange(1, n1 + n2 + 1, dtype=np.int64)[None, :]
    diff = np.abs((pos - cy) * (1.0 / n1) - cy * (1.0 / n2))
    k >>= one
    diff[:, :-1][k[:, 1:] == k[:, :-1]] = 0.0  # only evaluate at the end of tie blocks
    return diff.max(axis=1)


def _n_threads() -> int:
    try:
        return max(1, min(4, len(os.sched_getaffinity(0))))
    except AttributeError:  # macOS / Windows
        return max(1, min(4, os.cpu_count() or 1))


def ks_2samp_columns(
    x: np.ndarray, y: np.ndarray, chunk: int = 128, n_threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided two-sample KS test for every column, asymptotic p-value.

    Equivalent to ``scipy.stats.ks_2samp(x[:, g], y[:, g], method="asymp")`` for each column g
    (statistic exact incl. ties; p-value ``kstwo.sf(D, round(n1 n2 / (n1 + n2)))``).

    Parameters
    ----------
    x
        ``[n1, G]`` samples of group 1.
    y
        ``[n2, G]`` samples of group 2.
    chunk
        Genes processed at once (memory ~ ``40 * (n1 + n2) * chunk`` bytes per thread).
    n_threads
        Worker threads over gene chunks (numpy sorts release the GIL); default: available
        CPUs, at most 4.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        KS statistics ``D`` and p-values, each ``[G]``.

    Notes
    -----
    Both groups are merged and sorted once per gene; the group label is stored in the lowest
    bit of an order-preserving integer key of the float64 value, so a single integer sort
    gives the merged order. Values that differ only in the last bit of the float64 mantissa
    are treated as ties (irrelevant for sampled expression). NaNs are not supported.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise InputError(f"samples of shape {x.shape} and {y.shape} cannot be compared",
                         "pass [n1, G] and [n2, G] arrays with the same genes")
    n1, n2, g = x.shape[0], y.shape[0], x.shape[1]
    if n1 == 0 or n2 == 0:
        raise InputError("a group has no samples", "choose non-empty groups")
    xt, yt = x.T, y.T
    starts = list(range(0, g, chunk))
    work = lambda s: _ks_chunk(xt[s:s + chunk], yt[s:s + chunk])  # noqa: E731
    threads = _n_threads() if n_threads is None else max(1, int(n_threads))
    if threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            parts = list(pool.map(work, starts))
    else:
        parts = [work(s) for s in starts]
    d = np.concatenate(parts) if parts else np.zeros(0)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    p = np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0)
    return d, p


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (as statsmodels ``multipletests(method="fdr_bh")``)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


def fc_cutoff_gmm(log2fc: np.ndarray, seed: int = 0) -> float:
    """Largest |component mean| of a 3-component 1-D GaussianMixture fitted to log2FC.

    Falls back to fewer components when there are fewer than 3 distinct values.
    """
    x = np.asarray(log2fc, dtype=np.float64)
    x = x[np.isfinite(x)]
    n_distinct = np.unique(x).size
    if n_distinct < 2:
        return float(np.abs(x).max()) if x.size else 0.0
    gm = GaussianMixture(n_components=min(3, n_distinct), random_state=seed).fit(x[:, None])
    return float(np.abs(gm.means_).max())


def significance(table: pd.DataFrame, padj_max: float = 0.05, lfc_min: float | None = None) -> pd.Series:
    """Boolean "significant" column for user-chosen cut-offs (no recomputation).

    Parameters
    ----------
    table
        ``DEResult.table`` (needs ``padj`` and ``log2fc``).
    padj_max
        Adjusted p-value cut-off.
    lfc_min
        |log2FC| cut-off (default: the GMM cut-off on this table's log2fc).

    Returns
    -------
    pandas.Series
        ``padj < padj_max & |log2fc| > lfc_min``.
    """
    if lfc_min is None:
        lfc_min = fc_cutoff_gmm(table["log2fc"].to_numpy())
    return (table["padj"] < padj_max) & (table["log2fc"].abs() > lfc_min)


# --------------------------------------------------------------------------- DE
def _as_mask(group: Any, n: int, name: str) -> np.ndarray:
    g = np.asarray(group)
    if g.dtype != bool:
        raise InputError(f"{name} must be a boolean array over all spots (got dtype {g.dtype})",
                         "build it with one of the group_from_* helpers")
    if g.shape != (n,):
        raise InputError(f"{name} has shape {g.shape} but there are {n} spots",
                         "build the group over all spots of the spatial data")
    return g


def de_genes(
    st_model: Any,
    cell_type: str,
    group1: np.ndarray,
    group2: np.ndarray | None = None,
    threshold: float = 0.0,
    proportions: pd.DataFrame | None = None,
    n_samples: int = 10,
    pseudocount: float = 0.01,
    seed: int = 0,
    max_spots_per_group: int | None = MAX_SPOTS_PER_GROUP,
) -> DEResult:
    """Cell-type-specific DE between two groups of spots (destvi_utils ``de_genes``).

    Parameters
    ----------
    st_model
        DestVI-like object: ``cell_types``, ``genes``, ``mean_library_size``,
        ``get_proportions()``, ``get_scale_for_ct(label, indices)``,
        ``sample_expression_for_ct(label, indices, n_samples, library_size, seed)``.
    cell_type
        Type whose expression is compared.
    group1
        Boolean array over all spots.
    group2
        Boolean array over all spots; None = every other spot (``~group1``).
    threshold
        Both groups are restricted to spots with proportion of ``cell_type`` > threshold.
    proportions
        ``[S, C]`` proportions (default ``st_model.get_proportions()``).
    n_samples
        Draws per spot.
    pseudocount
        Added before log2 of the mean expression.
    seed
        Sampling seed; group 1 uses ``seed``, group 2 ``seed + 1`` (independent draws); the
        subsample of a large group is drawn with ``seed`` too.
    max_spots_per_group
        Sample the expression of at most this many spots per group for the KS test (a seeded
        random subsample of larger groups; None = every spot). Fold changes use every spot.

    Returns
    -------
    DEResult

    Raises
    ------
    InputError
        Unknown cell type, malformed or empty group.
    """
    cts = list(st_model.cell_types)
    if cell_type not in cts:
        raise InputError(f"unknown cell type {cell_type!r}", f"choose among {cts}")
    if proportions is None:
        proportions = st_model.get_proportions()
    prop = np.asarray(proportions[cell_type], dtype=np.float64)
    n = prop.shape[0]
    g1 = _as_mask(group1, n, "group 1")
    g2 = ~g1 if group2 is None else _as_mask(group2, n, "group 2")
    present = prop > float(threshold)
    m1, m2 = g1 & present, g2 & present
    for name, raw, m in (("group 1", g1, m1), ("group 2", g2, m2)):
        if not m.any():
            why = ("it is empty" if not raw.any() else
                   f"none of its {int(raw.sum())} spots has a {cell_type} proportion above {threshold:.3g}")
            raise InputError(f"{name} has no spots for {cell_type}: {why}",
                             f"lower the {cell_type} threshold or pick a larger region for {name}")
    if int(n_samples) < 1:
        raise InputError("n_samples must be at least 1", "use n_samples=10")
    i1, i2 = np.flatnonzero(m1), np.flatnonzero(m2)
    lib = float(st_model.mean_library_size)
    rng = np.random.default_rng(int(seed))
    notes: list[str] = []
    sampled = []
    for name, idx in (("group 1", i1), ("group 2", i2)):
        if max_spots_per_group is not None and len(idx) > int(max_spots_per_group):
            sub = np.sort(rng.choice(idx, int(max_spots_per_group), replace=False))
            notes.append(f"{name}: the KS test used a random subsample of {len(sub):,} of its "
                         f"{len(idx):,} spots (seed {int(seed)}); fold changes use every spot")
            sampled.append(sub)
        else:
            sampled.append(idx)
    s1 = np.asarray(st_model.sample_expression_for_ct(cell_type, sampled[0],
                                                      n_samples=int(n_samples),
                                                      library_size=None, seed=int(seed)))
    s2 = np.asarray(st_model.sample_expression_for_ct(cell_type, sampled[1],
                                                      n_samples=int(n_samples),
                                                      library_size=None, seed=int(seed) + 1))
    d, p = ks_2samp_columns(s1, s2)
    del s1, s2
    mean1 = lib * _mean_scale(st_model, cell_type, i1)
    mean2 = lib * _mean_scale(st_model, cell_type, i2)
    lfc = np.log2(pseudocount + mean1) - np.log2(pseudocount + mean2)
    padj = benjamini_hochberg(p)
    fc_cut = fc_cutoff_gmm(lfc, seed=0)
    sig_ks = d[padj < 0.05]
    min_score = float(sig_ks.min()) if sig_ks.size else math.nan
    genes = list(getattr(st_model, "genes", None) or [f"gene_{j}" for j in range(len(lfc))])
    table = pd.DataFrame({"log2fc": lfc, "ks_score": d, "pval": p, "padj": padj}, index=pd.Index(genes, name="gene"))
    table["significant"] = (table["padj"] < 0.05) & (table["log2fc"].abs() > fc_cut)
    params = {"cell_type": str(cell_type), "threshold": float(threshold), "n_samples": int(n_samples),
              "pseudocount": float(pseudocount), "seed": int(seed), "mean_library_size": lib,
              "padj_max": 0.05, "test": "two-sided KS, asymptotic p-value", "correction": "BH",
              "max_spots_per_group": None if max_spots_per_group is None else int(max_spots_per_group),
              "sampled_spots": [int(len(sampled[0])), int(len(sampled[1]))]}
    return DEResult(table, fc_cut, min_score, int(m1.sum()), int(m2.sum()), params,
                    int(len(sampled[0])), int(len(sampled[1])), notes)


def _mean_scale(st_model: Any, cell_type: str, indices: np.ndarray) -> np.ndarray:
    """Mean imputed expression over ``indices``, chunked when the model offers it."""
    if hasattr(st_model, "mean_scale_for_ct"):
        return np.asarray(st_model.mean_scale_for_ct(cell_type, indices=indices), dtype=np.float64)
    scale = st_model.get_scale_for_ct(cell_type, indices=indices)
    return np.asarray(scale, dtype=np.float64).mean(axis=0)


# --------------------------------------------------------------------------- group builders
def group_from_threshold(proportions: pd.DataFrame, cell_type: str, threshold: float) -> np.ndarray:
    """Spots whose proportion of ``cell_type`` is above ``threshold`` (bool ``[S]``)."""
    if cell_type not in proportions.columns:
        raise InputError(f"unknown cell type {cell_type!r}", f"choose among {list(proportions.columns)}")
    return np.asarray(proportions[cell_type].to_numpy() > float(threshold))


def group_from_gamma_axis(
    projection: np.ndarray,
    sel_index: np.ndarray,
    lo: float,
    hi: float,
    n_spots: int,
    axis: int = 0,
) -> np.ndarray:
    """Spots whose spatial-PC projection lies in ``[lo, hi]``.

    Parameters
    ----------
    projection
        ``[n]`` or ``[n, k]`` projections of the selected spots (``GammaExploration.pca.spot_projection``).
    sel_index
        ``[n]`` integer positions of those spots among all spots.
    lo, hi
        Inclusive interval on the chosen axis.
    n_spots
        Total number of spots.
    axis
        Column of ``projection`` (0 = SpatialPC1).

    Returns
    -------
    numpy.ndarray
        Bool ``[n_spots]``; spots outside the selection are False.
    """
    p = np.asarray(projection, dtype=np.float64)
    if p.ndim == 2:
        if not 0 <= axis < p.shape[1]:
            raise InputError(f"axis {axis} does not exist (projection has {p.shape[1]} columns)",
                             "use axis 0 (SpatialPC1) or 1 (SpatialPC2)")
        p = p[:, axis]
    idx = np.asarray(sel_index, dtype=np.int64)
    if idx.shape[0] != p.shape[0]:
        raise InputError(f"{p.shape[0]} projections but {idx.shape[0]} spot indices",
                         "pass the indices of the spots that were projected")
    if idx.size and (idx.min() < 0 or idx.max() >= n_spots):
        raise InputError("spot indices out of range", f"indices must be in 0..{n_spots - 1}")
    lo, hi = min(lo, hi), max(lo, hi)
    out = np.zeros(int(n_spots), dtype=bool)
    out[idx[(p >= lo) & (p <= hi)]] = True
    return out


def group_from_spot_names(obs_names: Iterable[str], names: Iterable[str]) -> np.ndarray:
    """Spots with the given names (e.g. from a lasso selection).

    Raises
    ------
    InputError
        If any name is not a spot.
    """
    obs = pd.Index([str(o) for o in obs_names])
    names = [str(n) for n in names]
    unknown = [n for n in names if n not in obs]
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise InputError(f"{len(unknown)} spot name(s) not found: {shown}",
                         "select spots of the loaded spatial data")
    return np.asarray(obs.isin(names))


def group_from_obs(obs: pd.DataFrame, column: str, value: Any = None) -> np.ndarray:
    """Spots from an annotation column: a boolean column, or rows equal to ``value``.

    Raises
    ------
    InputError
        Unknown column, non-boolean column without ``value``, or ``value`` absent.
    """
    if column not in obs.columns:
        raise InputError(f"obs has no column {column!r}", f"choose among {list(map(str, obs.columns))}")
    col = obs[column]
    if value is None:
        if not pd.api.types.is_bool_dtype(col):
            raise InputError(f"column {column!r} is not boolean",
                             "also give the category value that defines the group")
        return np.asarray(col.fillna(False).to_numpy(dtype=bool))
    mask = np.asarray((col.astype(str) == str(value)).to_numpy())
    if not mask.any():
        levels = list(pd.unique(col.astype(str)))[:10]
        raise InputError(f"no spot has {column} = {value!r}", f"choose among {levels}")
    return mask
