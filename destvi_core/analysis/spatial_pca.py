"""Spatially-weighted PCA of the cell-state space gamma (destvi_utils ``explore_gamma_space``, spec 4.2).

For one cell type, the spots that contain it are embedded by their gamma (``[n, d]``); a spatial
kernel ``W`` turns PCA into ``Xc^T L Xc`` with ``L`` a graph Laplacian (plus ``diag(W_ii)``),
whose top eigenvectors are "SpatialPC1/2". Spots and the reference cells of that type are
projected on them, coloured with a closed-form 2-D ternary colour map, and genes are ranked by
their correlation with each axis.

At scale the ``n x n`` kernel cannot be formed (100,000 spots = 80 GB): above
:data:`~destvi_core.analysis.spatial_kernel.EXACT_MAX_SPOTS` spots the two kernel sums the PCA
needs come from :mod:`destvi_core.analysis.spatial_kernel` (a grid, exact to ~1e-4).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.spatial.distance import pdist, squareform

from ..errors import DestVIWarning, InputError
from .spatial_kernel import (EXACT_MAX_SPOTS, GRID_NODES, MEDIAN_SAMPLE,  # noqa: F401
                             grid_kernel_sums, median_pairwise_distance)

__all__ = [
    "SpatialPCAResult",
    "GammaExploration",
    "spatial_pca",
    "project_cells",
    "colormap_2d",
    "colormap_legend",
    "axis_genes",
    "log_normalize",
    "explore_gamma",
]

_WEIGHTINGS = ("scalar", "outer", "none")
_METHODS = ("auto", "exact", "grid")

@dataclass
class SpatialPCAResult:
    """Result of :func:`spatial_pca`.

    Attributes
    ----------
    components
        ``[d, k]`` unit eigenvectors (SpatialPC1, SpatialPC2, ...), sign fixed so that the
        largest-magnitude loading of each is positive.
    spot_projection
        ``[n, k]`` projections of the centred spot gammas.
    explained_variance
        ``[k]`` variance of each projection as % of the total gamma variance.
    center
        ``[d]`` column means used to centre the spot gammas.
    eigenvalues
        ``[k]`` eigenvalues of the weighted matrix (descending).
    weighting
        Proportion weighting that was used.
    """

    components: np.ndarray
    spot_projection: np.ndarray
    explained_variance: np.ndarray
    center: np.ndarray
    eigenvalues: np.ndarray
    weighting: str


def spatial_pca(
    gamma_ct: np.ndarray,
    coords: np.ndarray,
    proportions_ct: np.ndarray | None = None,
    weighting: str = "outer",
    n_components: int = 2,
    method: str = "auto",
) -> SpatialPCAResult:
    """Spatially-weighted PCA of one cell type's gamma over the spots that contain it.

    Parameters
    ----------
    gamma_ct
        ``[n, d]`` gamma of the selected spots for this cell type.
    coords
        ``[n, 2]`` coordinates of the same spots.
    proportions_ct
        ``[n]`` proportions of the type in those spots (ignored when ``weighting="none"``;
        ``None`` means all ones).
    weighting
        How proportions enter the kernel ``W_ij = exp(-|L_i - L_j|^2 / sigma) * Pi``:
        ``"outer"`` (default) ``Pi = pi_i pi_j`` - spots with more of the type count more, the
        weighting the method intends; ``"scalar"`` ``Pi = sum_i pi_i^2`` - bug-compatible with
        destvi_utils (``np.dot`` of a 1-D vector), which only rescales ``W`` and so gives the
        same axes as ``"none"``; ``"none"`` ``Pi = 1``.
    n_components
        Number of spatial PCs (2 for the colour map).
    method
        ``"exact"`` forms the ``n x n`` kernel; ``"grid"`` computes its sums on a grid (module
        docstring); ``"auto"`` (default) is exact up to :data:`EXACT_MAX_SPOTS` spots.

    Returns
    -------
    SpatialPCAResult

    Notes
    -----
    ``sigma = 0.5 * median(pairwise distance)^2``; ``L = diag(rowsum W) - W`` off-diagonal with
    diagonal equal to the full row sum (self term included, as in destvi_utils);
    ``A = Xc^T L Xc`` is symmetric so ``numpy.linalg.eigh`` is used (destvi_utils uses general
    ``eig``). Explained variance = ``100 * var(P_k) / trace(cov(X))``. Above
    :data:`EXACT_MAX_SPOTS` spots the median is taken over :data:`MEDIAN_SAMPLE` seeded spots.
    """
    x = np.asarray(gamma_ct, dtype=np.float64)
    loc = np.asarray(coords, dtype=np.float64)
    if weighting not in _WEIGHTINGS:
        raise InputError(f"unknown sPCA weighting {weighting!r}", "use 'outer', 'scalar' or 'none'")
    if x.ndim != 2 or loc.ndim != 2 or loc.shape[0] != x.shape[0]:
        raise InputError(
            f"gamma {x.shape} and coordinates {loc.shape} do not describe the same spots",
            "pass gamma [n, d] and coordinates [n, 2] of the same selected spots",
        )
    n, d = x.shape
    k = int(n_components)
    if n < 3:
        raise InputError(f"only {n} spot(s) contain this cell type; spatial PCA needs at least 3",
                         "lower the proportion threshold for this cell type")
    if not 1 <= k <= d:
        raise InputError(f"n_components={k} but gamma has {d} dimensions", f"use 1..{d} components")
    pi = np.ones(n) if proportions_ct is None else np.asarray(proportions_ct, dtype=np.float64).ravel()
    if pi.shape[0] != n:
        raise InputError(f"{pi.shape[0]} proportions for {n} spots",
                         "pass the proportions of the same selected spots")

    if method not in _METHODS:
        raise InputError(f"unknown sPCA method {method!r}", "use 'auto', 'exact' or 'grid'")
    bw = median_pairwise_distance(loc)
    sigma = 0.5 * bw**2 if bw > 0 else 1.0
    center = x.mean(axis=0)
    xc = x - center
    omega = pi if weighting == "outer" else np.ones(n)
    factor = float(pi @ pi) if weighting == "scalar" else 1.0
    if method == "exact" or (method == "auto" and n <= EXACT_MAX_SPOTS):
        w = np.exp(-squareform(pdist(loc)) ** 2 / sigma)  # diagonal = 1
        w *= np.outer(omega, omega) * factor
        rowsum = w.sum(axis=1)
        m = xc.T @ (w @ xc)
        diag = np.diag(w)
    else:
        kernel_row, m = grid_kernel_sums(loc, omega, xc, sigma)
        rowsum = omega * kernel_row * factor
        m = m * factor
        diag = omega**2 * factor
    # Lmat = diag(rowsum) - W off-diagonal, diagonal = rowsum  ->  diag(rowsum + W_ii) - W
    a = xc.T @ ((rowsum + diag)[:, None] * xc) - m
    a = 0.5 * (a + a.T)
    evals, evecs = np.linalg.eigh(a)
    order = np.argsort(evals)[::-1][:k]
    vec, evals = evecs[:, order], evals[order]
    flip = np.sign(vec[np.argmax(np.abs(vec), axis=0), np.arange(k)])
    vec = vec * np.where(flip == 0, 1.0, flip)
    proj = xc @ vec
    total = float(np.trace(np.atleast_2d(np.cov(x, rowvar=False))))
    var = proj.var(axis=0, ddof=1)
    explained = 100.0 * var / total if total > 0 else np.zeros(k)
    return SpatialPCAResult(vec, proj, explained, center, evals, weighting)


def project_cells(latent: np.ndarray, result: SpatialPCAResult) -> np.ndarray:
    """Project reference cells' latent means on the spatial PCs.

    Parameters
    ----------
    latent
        ``[m, d]`` CondSCVI posterior means of cells of the same type.
    result
        Output of :func:`spatial_pca`.

    Returns
    -------
    numpy.ndarray
        ``[m, k]``; cells are centred by **their own** mean (as destvi_utils), not the spot mean.
    """
    z = np.asarray(latent, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != result.components.shape[0]:
        raise InputError(
            f"latent shape {z.shape} does not match gamma dimension {result.components.shape[0]}",
            "use the CondSCVI model the DestVI model was built from",
        )
    if z.shape[0] == 0:
        return np.zeros((0, result.components.shape[1]))
    return (z - z.mean(axis=0)) @ result.components


def _scale_value(u: np.ndarray, v: np.ndarray, scale: str | float) -> float:
    if isinstance(scale, str):
        if scale == "none":
            return 1.0
        if scale == "max":
            m = float(np.max(np.abs(np.concatenate([u, v])))) if u.size else 0.0
            return m if m > 0 else 1.0
        raise InputError(f"unknown colour scale {scale!r}", "use 'max', 'none' or a positive number")
    s = float(scale)
    if not s > 0:
        raise InputError(f"colour scale must be positive (got {scale})", "use 'max' or a positive number")
    return s


def colormap_2d(u: np.ndarray, v: np.ndarray, scale: str | float = "max") -> list[str]:
    """Colours of 2-D points from the ternary map of destvi_utils (cmap2d, closed form).

    Vertices: (-1, -1) red, (-1, 1) green, (1, 0) blue;
    ``RGB = clip(((1-u)/4 - v/2, (1-u)/4 + v/2, (1+u)/2), 0, 1)``.

    Parameters
    ----------
    u, v
        Coordinates (SpatialPC1, SpatialPC2 projections).
    scale
        ``"max"`` (default): divide both by the joint max |value| of these points, so they fill
        ``[-1, 1]`` and colours are vivid (destvi_utils does not rescale; raw projections of
        gamma are usually far from the unit square). ``"none"``: no rescaling. A number: divide
        by it - pass the spots' max |projection| to colour cells on the same scale as spots.

    Returns
    -------
    list of str
        ``#rrggbb`` colours.
    """
    u = np.asarray(u, dtype=np.float64).ravel()
    v = np.asarray(v, dtype=np.float64).ravel()
    if u.shape != v.shape:
        raise InputError("u and v must have the same length", "pass the two projection columns")
    s = _scale_value(u, v, scale)
    u, v = u / s, v / s
    base = (1.0 - u) / 4.0
    rgb = np.clip(np.stack([base - v / 2.0, base + v / 2.0, (1.0 + u) / 2.0], axis=1), 0.0, 1.0)
    rgb = np.nan_to_num(rgb, nan=0.8)
    ints = np.rint(rgb * 255).astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in ints]


def colormap_legend(n: int = 25) -> pd.DataFrame:
    """Grid of the colour map on ``[-1, 1]^2`` for a legend.

    Parameters
    ----------
    n
        Points per axis.

    Returns
    -------
    pandas.DataFrame
        ``n*n`` rows, columns ``u, v, color``.
    """
    g = np.linspace(-1.0, 1.0, int(n))
    uu, vv = np.meshgrid(g, g)
    u, v = uu.ravel(), vv.ravel()
    return pd.DataFrame({"u": u, "v": v, "color": colormap_2d(u, v, scale="none")})


def _pearson_columns(expr: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of every column of ``expr [m, G]`` with each column of ``y [m, k]``; zero variance -> 0."""
    xc = expr - expr.mean(axis=0)
    yc = y - y.mean(axis=0)
    num = xc.T @ yc  # [G, k]
    den = np.sqrt((xc**2).sum(axis=0))[:, None] * np.sqrt((yc**2).sum(axis=0))[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return r


def axis_genes(
    expression: np.ndarray | sparse.spmatrix,
    projection: np.ndarray,
    genes: list[str] | pd.Index,
    n_top: int = 50,
) -> pd.DataFrame:
    """Genes most correlated (Pearson) with each spatial PC.

    Parameters
    ----------
    expression
        ``[m, G]`` expression of the cells (or spots) that were projected (e.g. log-normalised).
    projection
        ``[m, k]`` their projections.
    genes
        ``G`` gene names.
    n_top
        Genes per axis and direction.

    Returns
    -------
    pandas.DataFrame
        Long table with columns ``axis`` ("SpatialPC1", ...), ``direction`` ("positive" = top by
        r descending, "negative" = lowest r), ``rank`` (1 = strongest), ``gene``, ``correlation``.
        Genes with zero variance get r = 0.
    """
    x = expression.toarray() if sparse.issparse(expression) else np.asarray(expression)
    x = np.asarray(x, dtype=np.float64)
    p = np.asarray(projection, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    genes = np.asarray(list(genes), dtype=object)
    if x.shape[0] != p.shape[0] or x.shape[1] != len(genes):
        raise InputError(
            f"expression {x.shape}, projection {p.shape} and {len(genes)} gene names do not match",
            "pass expression [m, G] and projection [m, k] of the same cells and G gene names",
        )
    r = _pearson_columns(x, p) if x.shape[0] > 1 else np.zeros((x.shape[1], p.shape[1]))
    n = int(min(n_top, len(genes)))
    frames = []
    for j in range(p.shape[1]):
        order = np.argsort(-r[:, j], kind="stable")
        for direction, idx in (("positive", order[:n]), ("negative", order[::-1][:n])):
            frames.append(pd.DataFrame({
                "axis": f"SpatialPC{j + 1}", "direction": direction, "rank": np.arange(1, n + 1),
                "gene": genes[idx], "correlation": r[idx, j],
            }))
    return pd.concat(frames, ignore_index=True)


def log_normalize(counts: np.ndarray | sparse.spmatrix, target_sum: float = 1e4) -> np.ndarray:
    """``log1p(counts / total * target_sum)`` per row (scanpy normalize_total + log1p); dense output.

    Parameters
    ----------
    counts
        ``[m, G]`` raw counts.
    target_sum
        Library size after normalisation.

    Returns
    -------
    numpy.ndarray
        ``[m, G]`` float64; rows with zero total stay 0.
    """
    x = counts.toarray() if sparse.issparse(counts) else np.asarray(counts)
    x = np.asarray(x, dtype=np.float64)
    tot = x.sum(axis=1, keepdims=True)
    return np.log1p(x / np.where(tot > 0, tot, 1.0) * target_sum)


@dataclass
class GammaExploration:
    """Everything the gamma-space page draws for one cell type.

    Attributes
    ----------
    cell_type, threshold
        Type explored and the proportion cut-off actually used.
    spot_indices
        Integer positions (into the spatial data) of the selected spots.
    spot_names
        Their names.
    pca
        :class:`SpatialPCAResult` (``pca.spot_projection`` is ``[n, 2]``).
    spot_colors, cell_colors
        Hex colours of spots and cells (same scale: the spots' max |projection|).
    color_scale
        Divisor used for the colours.
    cell_indices
        Integer positions of the reference cells of this type.
    cell_projection
        ``[m, 2]`` projection of those cells.
    genes
        :func:`axis_genes` table computed on the cells.
    notes
        User-facing messages (e.g. threshold fallback).
    """

    cell_type: str
    threshold: float
    spot_indices: np.ndarray
    spot_names: list[str]
    pca: SpatialPCAResult
    spot_colors: list[str]
    cell_indices: np.ndarray
    cell_projection: np.ndarray
    cell_colors: list[str]
    color_scale: float
    genes: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def spot_table(self) -> pd.DataFrame:
        """Tidy table of selected spots: ``spot, pc1, pc2, color``."""
        p = self.pca.spot_projection
        return pd.DataFrame({"spot": self.spot_names, "pc1": p[:, 0],
                             "pc2": p[:, 1] if p.shape[1] > 1 else 0.0, "color": self.spot_colors})

    def cell_table(self, obs_names: Any = None) -> pd.DataFrame:
        """Tidy table of projected cells: ``cell, pc1, pc2, color``."""
        p = self.cell_projection
        names = (np.asarray(obs_names)[self.cell_indices] if obs_names is not None
                 else self.cell_indices)
        return pd.DataFrame({"cell": names, "pc1": p[:, 0],
                             "pc2": p[:, 1] if p.shape[1] > 1 else 0.0, "color": self.cell_colors})


def explore_gamma(
    st_model: Any,
    sc_model: Any,
    cell_type: str,
    threshold: float = 0.0,
    coords: np.ndarray | None = None,
    proportions: pd.DataFrame | None = None,
    weighting: str = "outer",
    n_top: int = 50,
    gamma: np.ndarray | None = None,
) -> GammaExploration:
    """Spatial PCA of one cell type's gamma, projected reference cells and axis genes.

    Parameters
    ----------
    st_model
        DestVI-like object: ``cell_types``, ``adata`` (``obsm['spatial']``, ``obs_names``),
        ``get_gamma(return_numpy=True)``, ``get_proportions()``.
    sc_model
        CondSCVI-like object: ``adata`` (raw counts in ``X``, or in ``layers[sc_model.layer]``
        when that attribute is set), ``labels_key``, ``genes``,
        ``get_latent_representation(indices=...)``.
    cell_type
        Type to explore.
    threshold
        Spots with proportion > threshold are used; a threshold at or above the maximum
        proportion falls back to 0 with a :class:`DestVIWarning` (as destvi_utils).
    coords
        ``[S, 2]`` coordinates (default ``st_model.adata.obsm['spatial']``).
    proportions
        ``[S, C]`` proportions (default ``st_model.get_proportions()``).
    weighting
        See :func:`spatial_pca`.
    n_top
        Genes per axis and direction.
    gamma
        Precomputed ``st_model.get_gamma(return_numpy=True)`` ``[S, d, C]`` to avoid recomputing
        it for every type.

    Returns
    -------
    GammaExploration
    """
    cts = list(st_model.cell_types)
    if cell_type not in cts:
        raise InputError(f"unknown cell type {cell_type!r}", f"choose among {cts}")
    c = cts.index(cell_type)
    if proportions is None:
        proportions = st_model.get_proportions()
    if coords is None:
        coords = np.asarray(st_model.adata.obsm["spatial"])
    coords = np.asarray(coords, dtype=np.float64)
    prop = np.asarray(proportions[cell_type], dtype=np.float64)
    notes: list[str] = []
    threshold = float(threshold)
    if threshold >= prop.max():
        msg = (f"threshold {threshold:.3g} for {cell_type} is at or above its maximum proportion "
               f"{prop.max():.3g}; using 0 instead")
        warnings.warn(msg, DestVIWarning, stacklevel=2)
        notes.append(msg)
        threshold = 0.0
    sel = np.flatnonzero(prop > threshold)
    if gamma is None:
        gamma = st_model.get_gamma(return_numpy=True)
    g = np.asarray(gamma)[sel, :, c]
    res = spatial_pca(g, coords[sel], prop[sel], weighting=weighting)
    scale = _scale_value(res.spot_projection[:, 0], res.spot_projection[:, -1], "max")
    spot_colors = colormap_2d(res.spot_projection[:, 0], res.spot_projection[:, -1], scale=scale)

    sc_adata = sc_model.adata
    labels = np.asarray(sc_adata.obs[sc_model.labels_key]).astype(str)
    cells = np.flatnonzero(labels == str(cell_type))
    if cells.size == 0:
        notes.append(f"the reference has no cells labelled {cell_type}; no cell projection or genes")
        proj_sc = np.zeros((0, res.components.shape[1]))
        genes_table = pd.DataFrame(columns=["axis", "direction", "rank", "gene", "correlation"])
    else:
        latent = sc_model.get_latent_representation(indices=cells)
        proj_sc = project_cells(latent, res)
        layer = getattr(sc_model, "layer", None)
        counts = sc_adata.layers[layer] if layer else sc_adata.X
        expr = log_normalize(counts[cells])
        gene_names = list(getattr(sc_model, "genes", None) or list(sc_adata.var_names))
        genes_table = axis_genes(expr, proj_sc, gene_names, n_top=n_top)
    cell_colors = colormap_2d(proj_sc[:, 0], proj_sc[:, -1], scale=scale) if len(proj_sc) else []
    names = [str(s) for s in np.asarray(st_model.adata.obs_names)[sel]]
    return GammaExploration(str(cell_type), threshold, sel, names, res, spot_colors, cells,
                            proj_sc, cell_colors, scale, genes_table, notes)
