"""Regions of the tissue: masks, a compact text encoding, and the composition of two regions.

A region is a set of spots (a boolean mask over all spots, in the spatial data's order). The app
draws regions free-hand (lasso) or as boxes; :func:`spots_in_polygon` / :func:`spots_in_box`
turn such shapes into masks. :func:`encode_mask` / :func:`decode_mask` write a mask as short text
(spot-index runs, or a compressed bitset when shorter) for shareable links and files.

:func:`region_composition` answers "what differs between these two regions?": the mean
proportion of every cell type in each region, the difference with a test across spots
(Mann-Whitney U or a label-permutation test on the difference in means, BH-adjusted over types),
an effect size (AUC: the chance that a spot of the first region has more of the type than a spot
of the second) and the number of spots above each type's threshold.

Spots are not independent samples: neighbouring spots share cells and tissue context, so with a
contiguous region p-values are optimistic (pseudo-replication). Read them with the effect sizes;
a randomly drawn set of spots of the same size is the right null for "is this region special?".
"""

from __future__ import annotations

import base64
import re
import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import InputError
from .de import benjamini_hochberg

__all__ = [
    "RegionComparison",
    "region_composition",
    "spots_in_polygon",
    "spots_in_box",
    "encode_mask",
    "decode_mask",
    "check_region_name",
    "region_labels",
]

TESTS = ("mannwhitney", "permutation")
_NAME = re.compile(r"^[\w .+\-()#/]{1,40}$")


# ------------------------------------------------------------------ shapes -> masks
def spots_in_polygon(coords: np.ndarray, xs, ys) -> np.ndarray:
    """Spots inside a polygon (e.g. a lasso path) given by its vertex coordinates.

    Parameters
    ----------
    coords
        ``[S, 2]`` spot coordinates (same units as the polygon).
    xs, ys
        Vertex coordinates; the polygon is closed automatically.

    Returns
    -------
    numpy.ndarray
        Bool ``[S]``.
    """
    from matplotlib.path import Path

    pts = np.c_[np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)]
    if pts.shape[0] < 3 or not np.isfinite(pts).all():
        raise InputError("a lasso needs at least 3 points with finite coordinates",
                         "draw the lasso again around the spots")
    return Path(pts).contains_points(np.asarray(coords, dtype=float)[:, :2])


def spots_in_box(coords: np.ndarray, x_range, y_range) -> np.ndarray:
    """Spots inside an axis-aligned box ``[x0, x1] x [y0, y1]`` (either order)."""
    c = np.asarray(coords, dtype=float)
    (x0, x1), (y0, y1) = sorted(map(float, x_range)), sorted(map(float, y_range))
    return (c[:, 0] >= x0) & (c[:, 0] <= x1) & (c[:, 1] >= y0) & (c[:, 1] <= y1)


# ------------------------------------------------------------------ text encoding
def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def encode_mask(mask: np.ndarray) -> str:
    """Short text for a boolean spot mask (the shorter of two encodings).

    ``r<runs>``: runs of consecutive selected spots as ``<gap>.<length>`` pairs in base 36
    separated by ``.`` (compact when regions follow the spot order, e.g. a grid read row by row);
    ``z<base64url>``: the bitset, zlib-compressed (compact for any order). URL-safe.
    """
    m = np.asarray(mask, dtype=bool).ravel()
    edges = np.flatnonzero(np.diff(np.r_[0, m.view(np.int8), 0]))
    starts, ends = edges[0::2], edges[1::2]
    parts, prev = [], 0
    for s, e in zip(starts.tolist(), ends.tolist()):
        parts += [_b36(s - prev), _b36(e - s)]
        prev = e
    runs = "r" + ".".join(parts)
    packed = "z" + base64.urlsafe_b64encode(zlib.compress(np.packbits(m).tobytes(), 9)).decode().rstrip("=")
    return runs if len(runs) <= len(packed) else packed


def decode_mask(text: str, n_spots: int) -> np.ndarray:
    """Inverse of :func:`encode_mask` for ``n_spots`` spots (InputError when it does not fit)."""
    bad = InputError("this region text is damaged or belongs to other data",
                     "open the link from the same dataset, or draw the region again")
    text = str(text).strip()
    out = np.zeros(int(n_spots), dtype=bool)
    try:
        if text.startswith("r"):
            body = text[1:]
            values = [int(v, 36) for v in body.split(".")] if body else []
            if len(values) % 2:
                raise bad
            pos = 0
            for gap, length in zip(values[0::2], values[1::2]):
                pos += gap
                if length <= 0 or pos + length > n_spots:
                    raise bad
                out[pos:pos + length] = True
                pos += length
            return out
        if text.startswith("z"):
            body = text[1:] + "=" * (-len(text[1:]) % 4)
            bits = np.unpackbits(np.frombuffer(zlib.decompress(base64.urlsafe_b64decode(body)), np.uint8))
            if len(bits) < n_spots or bits[n_spots:].any() or len(bits) >= n_spots + 8:
                raise bad
            return bits[:n_spots].astype(bool)
    except (ValueError, zlib.error):
        raise bad from None
    raise bad


def check_region_name(name: str, existing: list[str] | tuple[str, ...] = ()) -> str:
    """A valid, new region name (stripped) or InputError saying how to fix it."""
    name = str(name).strip()
    if not name:
        raise InputError("the region has no name", "type a name, e.g. 'tumour edge'")
    if not _NAME.match(name):
        raise InputError(f"region name {name!r} is too long or has unusual characters",
                         "use up to 40 letters, digits, spaces or - _ . + ( ) # /")
    if name in existing:
        raise InputError(f"a region called {name!r} already exists", "choose another name")
    return name


def region_labels(regions: dict[str, np.ndarray], n_spots: int, none: str = "") -> np.ndarray:
    """One label per spot: the names of the regions containing it joined by ``|`` (``none``
    for spots in no region). Used for the exported ``regions`` column."""
    labels = np.full(int(n_spots), none, dtype=object)
    for name, mask in regions.items():
        m = np.asarray(mask, dtype=bool)
        if m.shape != (n_spots,):
            raise InputError(f"region {name!r} has {m.shape[0]} spots but the data has {n_spots}",
                             "export regions drawn on the same spatial data")
        labels[m] = np.where(labels[m] == none, name, labels[m].astype(str) + "|" + name)
    return labels


# ------------------------------------------------------------------ composition
@dataclass
class RegionComparison:
    """Composition of two regions.

    Attributes
    ----------
    table
        One row per cell type (index), columns ``mean_a, mean_b, difference`` (a - b),
        ``auc`` (P(a spot of A has more of the type than a spot of B), ties count one half;
        0.5 = no difference), ``pval``, ``padj`` (BH over types), ``above_a``, ``above_b``
        (spots above the type's threshold, when thresholds were given; else NaN),
        ``share_above_a``, ``share_above_b``.
    n_a, n_b
        Spots compared in each region (spots in both are left out of both).
    n_shared
        Spots in both regions (left out).
    label_a, label_b
        Names of the two regions.
    test
        ``"mannwhitney"`` or ``"permutation"``.
    params
        Parameters (permutations, seed).
    """

    table: pd.DataFrame
    n_a: int
    n_b: int
    n_shared: int
    label_a: str
    label_b: str
    test: str
    params: dict = field(default_factory=dict)

    def long_means(self) -> pd.DataFrame:
        """Tidy table ``region, cell type, mean proportion`` (for stacked bars and CSV)."""
        rows = [(label, ct, float(v)) for label, col in ((self.label_a, "mean_a"), (self.label_b, "mean_b"))
                for ct, v in self.table[col].items()]
        return pd.DataFrame(rows, columns=["region", "cell type", "mean proportion"])


def _as_region(mask, n: int, what: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.dtype != bool:
        if m.ndim == 1 and np.issubdtype(m.dtype, np.integer):
            if m.size and (m.min() < 0 or m.max() >= n):
                raise InputError(f"{what} has spot indices outside 0..{n - 1}",
                                 "give positions of spots of these data")
            out = np.zeros(n, dtype=bool)
            out[m] = True
            return out
        raise InputError(f"{what} must be a boolean mask or spot positions (got {m.dtype})",
                         "pass a boolean array over all spots")
    if m.shape != (n,):
        raise InputError(f"{what} covers {m.shape[0] if m.ndim else 0} spots but there are {n}",
                         "build the region on the same spatial data as the proportions")
    return m


def _mann_whitney(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column two-sided Mann-Whitney p-values and AUC = U_a / (n_a n_b)."""
    res = stats.mannwhitneyu(a, b, axis=0, alternative="two-sided", method="asymptotic")
    auc = np.asarray(res.statistic, dtype=float) / (a.shape[0] * b.shape[0])
    p = np.asarray(res.pvalue, dtype=float)
    # constant columns (e.g. all zeros after thresholding) give NaN: no evidence of a difference
    return np.where(np.isfinite(p), p, 1.0), np.where(np.isfinite(auc), auc, 0.5)


def _permutation(a: np.ndarray, b: np.ndarray, n_perm: int, seed: int) -> np.ndarray:
    """Two-sided label-permutation p-values of the difference in means, per column."""
    pooled = np.vstack([a, b])
    n, na = pooled.shape[0], a.shape[0]
    total = pooled.sum(0)
    observed = np.abs(a.mean(0) - b.mean(0))
    rng = np.random.default_rng(seed)
    exceed = np.zeros(pooled.shape[1])
    for _ in range(int(n_perm)):
        pick = rng.choice(n, size=na, replace=False)
        sa = pooled[pick].sum(0)
        diff = np.abs(sa / na - (total - sa) / (n - na))
        exceed += diff >= observed - 1e-12
    return (1.0 + exceed) / (1.0 + n_perm)


def region_composition(proportions: pd.DataFrame, region_a, region_b=None,
                       thresholds: dict[str, float] | None = None, test: str = "mannwhitney",
                       n_permutations: int = 999, seed: int = 0, label_a: str = "region",
                       label_b: str | None = None) -> RegionComparison:
    """Compare the cell-type composition of two regions (or a region and the rest).

    Parameters
    ----------
    proportions
        ``[S, C]`` proportions (columns = cell types).
    region_a
        Bool ``[S]`` mask (or spot positions) of the first region.
    region_b
        Second region; ``None`` compares with every other spot ("rest of the tissue").
    thresholds
        ``{cell type: cut-off}`` to count the spots that contain each type (optional).
    test
        ``"mannwhitney"`` (default; fast at any size) or ``"permutation"`` (difference in mean
        proportion, ``n_permutations`` random relabellings of the pooled spots).
    n_permutations, seed
        Permutation test settings.
    label_a, label_b
        Names shown in tables (``label_b`` defaults to "rest of the tissue").

    Returns
    -------
    RegionComparison

    Raises
    ------
    InputError
        Masks of the wrong length, a region with fewer than 2 spots, unknown test.
    """
    if test not in TESTS:
        raise InputError(f"unknown test {test!r}", f"use one of {', '.join(TESTS)}")
    if not isinstance(proportions, pd.DataFrame) or proportions.shape[1] == 0:
        raise InputError("proportions must be a DataFrame with one column per cell type",
                         "pass st_model.get_proportions()")
    values = proportions.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise InputError("proportions contain NaN or infinite values", "recompute the proportions")
    n = values.shape[0]
    a = _as_region(region_a, n, "region A")
    b = ~a if region_b is None else _as_region(region_b, n, "region B")
    shared = a & b
    a, b = a & ~shared, b & ~shared
    label_b = label_b or ("rest of the tissue" if region_b is None else "region B")
    for m, label in ((a, label_a), (b, label_b)):
        if m.sum() < 2:
            raise InputError(f"'{label}' has {int(m.sum())} spot(s) of its own; at least 2 are needed",
                             "draw a larger region (spots in both regions are left out)")
    va, vb = values[a], values[b]
    mw_p, auc = _mann_whitney(va, vb)
    p = mw_p if test == "mannwhitney" else _permutation(va, vb, n_permutations, seed)
    types = [str(c) for c in proportions.columns]
    table = pd.DataFrame({"mean_a": va.mean(0), "mean_b": vb.mean(0)}, index=pd.Index(types, name="cell type"))
    table["difference"] = table["mean_a"] - table["mean_b"]
    table["auc"] = auc
    table["pval"] = p
    table["padj"] = benjamini_hochberg(p)
    if thresholds:
        unknown = [t for t in thresholds if str(t) not in types]
        if unknown:
            raise InputError(f"thresholds given for unknown cell type(s) {unknown}",
                             f"use the proportion columns: {types}")
        cut = np.array([float(thresholds.get(t, np.inf)) for t in types])
        has = np.array([t in thresholds for t in types])
        above_a, above_b = (va > cut).sum(0), (vb > cut).sum(0)
        table["above_a"] = np.where(has, above_a, np.nan)
        table["above_b"] = np.where(has, above_b, np.nan)
    else:
        table["above_a"] = np.nan
        table["above_b"] = np.nan
    table["share_above_a"] = table["above_a"] / va.shape[0]
    table["share_above_b"] = table["above_b"] / vb.shape[0]
    params = {"test": test, "n_permutations": int(n_permutations) if test == "permutation" else None,
              "seed": int(seed), "thresholds": dict(thresholds or {})}
    return RegionComparison(table, int(a.sum()), int(b.sum()), int(shared.sum()), str(label_a),
                            str(label_b), test, params)
