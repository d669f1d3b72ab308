"""Where do cell types meet? Co-occurrence scores between types and blended colour maps.

:func:`cooccurrence_scores` scores every pair of cell types by how much the proportion of one
in a spot goes with the proportion of the other in the neighbouring spots: the bivariate Moran's
I on the spatial kNN graph of the automatic thresholds
(:func:`~destvi_core.analysis.thresholds.spatial_knn_weights`),

    S_ab = z_a' W z_b / sum(W),   z = proportions standardised per type,  W symmetric, no self-loops.

S is symmetric; its diagonal is each type's own spatial autocorrelation (Moran's I); a high
off-diagonal value means the two types fill the same neighbourhoods. Proportions sum to one
in every spot, so types also compete for the same spots: pairs are slightly negative by
construction, and the ranking between pairs is what to read. :func:`within_spot_correlation`
gives the same question inside single spots.

:func:`blend_colors` maps two or three types onto primary colours that add up (two types:
magenta and green, both -> white; three types: red, green, blue), for one map showing where they
meet; :func:`blend_legend` draws the matching square (two types) or triangle (three).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import InputError

__all__ = [
    "cooccurrence_scores",
    "within_spot_correlation",
    "strongest_pairs",
    "blend_colors",
    "blend_legend",
    "blend_primaries",
    "to_hex",
]

_PRIMARIES = {
    2: np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),  # magenta, green (colour-blind safe pair)
    3: np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),  # red, green, blue
}


def _values(proportions: pd.DataFrame) -> np.ndarray:
    if not isinstance(proportions, pd.DataFrame) or proportions.shape[1] < 2:
        raise InputError("proportions must be a DataFrame with at least two cell-type columns",
                         "pass st_model.get_proportions()")
    v = proportions.to_numpy(dtype=np.float64)
    if not np.isfinite(v).all():
        raise InputError("proportions contain NaN or infinite values", "recompute the proportions")
    return v


def _standardise(v: np.ndarray) -> np.ndarray:
    sd = v.std(0)
    return np.where(sd > 0, (v - v.mean(0)) / np.where(sd > 0, sd, 1.0), 0.0)


def cooccurrence_scores(proportions: pd.DataFrame, coords: np.ndarray | None = None,
                        weights: sparse.spmatrix | None = None, n_neighbors: int = 10) -> pd.DataFrame:
    """Neighbourhood co-occurrence of every pair of cell types (bivariate Moran's I).

    Parameters
    ----------
    proportions
        ``[S, C]`` proportions.
    coords
        ``[S, 2]`` spot coordinates (used when ``weights`` is not given).
    weights
        A :func:`spatial_knn_weights` graph of the same spots (one edge stored once, as that
        function returns it; it is made symmetric here and self-loops are dropped).
    n_neighbors
        Neighbours per spot when the graph is built here.

    Returns
    -------
    pandas.DataFrame
        ``[C, C]`` symmetric scores, index and columns = cell types; about -1..1.
    """
    v = _values(proportions)
    if weights is None:
        if coords is None:
            raise InputError("co-occurrence needs the spot coordinates or a spatial graph",
                             "pass coords=st.obsm['spatial']")
        from .thresholds import spatial_knn_weights

        weights = spatial_knn_weights(coords, n_neighbors=n_neighbors)
    w = sparse.csr_matrix(weights)
    if w.shape != (v.shape[0], v.shape[0]):
        raise InputError(f"the spatial graph has {w.shape[0]} spots but the proportions {v.shape[0]}",
                         "build the graph from the same spots (same order)")
    w = w + w.T
    w.setdiag(0)
    w.eliminate_zeros()
    total = float(w.sum())
    if total <= 0:
        raise InputError("the spatial graph has no edges", "check the spot coordinates")
    z = _standardise(v)
    s = z.T @ (w @ z) / total
    s = (s + s.T) / 2
    types = [str(c) for c in proportions.columns]
    return pd.DataFrame(s, index=types, columns=types)


def within_spot_correlation(proportions: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation of the types' proportions across spots (same spot, no neighbours)."""
    z = _standardise(_values(proportions))
    c = z.T @ z / z.shape[0]
    types = [str(col) for col in proportions.columns]
    return pd.DataFrame(c, index=types, columns=types)


def strongest_pairs(scores: pd.DataFrame, within: pd.DataFrame | None = None,
                    top: int | None = None) -> pd.DataFrame:
    """Pairs of different types sorted by score (highest first).

    Returns columns ``type_a, type_b, neighbour_score`` (+ ``within_spot`` when given).
    """
    types = list(scores.index)
    rows = []
    for i, a in enumerate(types):
        for b in types[i + 1:]:
            row = {"type_a": a, "type_b": b, "neighbour_score": float(scores.loc[a, b])}
            if within is not None:
                row["within_spot"] = float(within.loc[a, b])
            rows.append(row)
    out = pd.DataFrame(rows, columns=["type_a", "type_b", "neighbour_score"]
                       + (["within_spot"] if within is not None else []))
    out = out.sort_values("neighbour_score", ascending=False, kind="stable").reset_index(drop=True)
    return out.head(top) if top else out


def blend_primaries(k: int) -> np.ndarray:
    """``[k, 3]`` RGB primaries (0..1) for blending ``k`` = 2 or 3 types."""
    if k not in _PRIMARIES:
        raise InputError(f"blending needs 2 or 3 cell types (got {k})", "pick two or three types")
    return _PRIMARIES[k].copy()


def blend_colors(values: np.ndarray, vmax: np.ndarray | list[float] | None = None,
                 quantile: float = 0.99) -> np.ndarray:
    """Additive colour per spot for 2-3 types' proportions.

    Each type's proportion is scaled to 0..1 by ``vmax`` (default: its ``quantile`` over the
    spots, so a rare type still reaches full brightness) and times its primary colour; colours
    add and saturate at 1. None of the types -> black; all at full -> white.

    Parameters
    ----------
    values
        ``[S, k]`` proportions of the ``k`` (2 or 3) chosen types.
    vmax
        ``[k]`` values mapped to full brightness.
    quantile
        Used when ``vmax`` is None.

    Returns
    -------
    numpy.ndarray
        ``[S, 3]`` uint8 RGB.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise InputError("blend_colors needs a [spots, types] array", "pass 2 or 3 columns")
    prim = blend_primaries(v.shape[1])
    if vmax is None:
        vmax = np.quantile(v, quantile, axis=0) if len(v) else np.ones(v.shape[1])
    vmax = np.maximum(np.asarray(vmax, dtype=np.float64), 1e-9)
    w = np.clip(v / vmax, 0.0, 1.0)
    rgb = np.clip(w @ prim, 0.0, 1.0)
    return np.round(rgb * 255).astype(np.uint8)


def to_hex(rgb: np.ndarray) -> np.ndarray:
    """``[n, 3]`` uint8 -> array of ``#rrggbb`` strings."""
    rgb = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    return np.array([f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb.tolist()], dtype=object)


def blend_legend(k: int, steps: int = 11) -> pd.DataFrame:
    """Legend of :func:`blend_colors` for ``k`` types.

    ``k = 2``: a square, columns ``a, b`` (0..1 brightness of each type) and ``color``.
    ``k = 3``: a triangle of mixtures ``a + b + c = 1`` shown at full brightness, columns
    ``a, b, c, x, y`` (position in an equilateral triangle with corners at type a = (0, 0),
    b = (1, 0), c = (0.5, 0.866)) and ``color``.
    """
    grid = np.linspace(0.0, 1.0, int(steps))
    if k == 2:
        a, b = np.meshgrid(grid, grid, indexing="ij")
        w = np.c_[a.ravel(), b.ravel()]
        colors = to_hex(np.round(np.clip(w @ blend_primaries(2), 0, 1) * 255).astype(np.uint8))
        return pd.DataFrame({"a": w[:, 0].round(3), "b": w[:, 1].round(3), "color": colors})
    prim = blend_primaries(k)
    rows = []
    n = int(steps) - 1
    for i in range(n + 1):
        for j in range(n + 1 - i):
            a, b = i / n, j / n
            c = max(0.0, 1.0 - a - b)
            w = np.array([a, b, c])
            rgb = np.clip((w / w.max()) @ prim, 0, 1)
            x, y = b + 0.5 * c, 0.8660254 * c
            rows.append((round(a, 3), round(b, 3), round(c, 3), x, y,
                         to_hex(np.round(rgb * 255).astype(np.uint8))[0]))
    return pd.DataFrame(rows, columns=["a", "b", "c", "x", "y", "color"])
