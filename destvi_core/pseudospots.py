"""Visium-like pseudo-spots from single-cell resolved spatial data (e.g. seqFISH+).

Cells are pooled in discs (default 55 µm, the Visium spot diameter) centred on a hexagonal grid
laid over each field of view; a spot's counts are the sum of its cells' counts and its true
proportions are the fractions of its cells per type. This gives a real-expression gold
standard for deconvolution.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy.spatial import cKDTree

from .data import counts_csr
from .errors import InputError


def _hex_centres(xmin: float, ymin: float, xmax: float, ymax: float,
                 spacing: float) -> np.ndarray:
    """Hexagonal lattice (rows ``spacing * sqrt(3)/2`` apart) covering the rectangle."""
    dy = spacing * np.sqrt(3.0) / 2.0
    rows = int(np.ceil((ymax - ymin) / dy)) + 1
    cols = int(np.ceil((xmax - xmin) / spacing)) + 1
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    x = xmin + (c + 0.5 * (r % 2)) * spacing
    y = ymin + r * dy
    return np.column_stack([x.ravel(), y.ravel()])


def _labels(adata: AnnData, label_key: str) -> pd.Categorical:
    if label_key not in adata.obs.columns:
        raise InputError(f"no obs column {label_key!r} with cell types (available columns: "
                         f"{', '.join(map(str, adata.obs.columns))})",
                         "choose the column holding the cell types")
    labels = adata.obs[label_key]
    if not isinstance(labels.dtype, pd.CategoricalDtype):
        labels = labels.astype(str).astype("category")
    return pd.Categorical(labels)


def seqfish_pseudospots(adata: AnnData, label_key: str = "cell_type",
                        spot_diameter_um: float = 55.0, pixel_size_um: float = 0.103,
                        fov_key: str | None = "field_of_view", spacing_um: float | None = None,
                        min_cells: int = 1, seed: int = 0) -> AnnData:
    """Pool single cells into Visium-like disc spots with known proportions.

    Parameters
    ----------
    adata
        Cells with raw counts (``layers['counts']`` or X), labels in ``obs[label_key]`` and
        pixel coordinates in ``obsm['spatial']``.
    label_key
        Cell-type column.
    spot_diameter_um
        Disc diameter in microns (Visium: 55).
    pixel_size_um
        Microns per pixel of ``obsm['spatial']`` (seqFISH+ Eng 2019: 0.103).
    fov_key
        Column with the field of view (each has its own pixel frame); ``None`` for one frame.
    spacing_um
        Centre-to-centre distance of the grid (default: the diameter, i.e. touching discs;
        Visium uses 100 µm). Smaller than the diameter makes discs overlap.
    min_cells
        Spots with fewer cells are discarded.
    seed
        Seed of the random grid offset per field of view.

    Returns
    -------
    AnnData
        Spots x genes: X summed counts (float32 CSR); ``obs['field_of_view']``,
        ``obs['n_cells']``, ``obs['x_px']``/``obs['y_px']`` (centre in the field's frame);
        ``obsm['spatial']`` centres with fields laid side by side (no overlap between fields);
        ``obsm['true_proportions']`` DataFrame (columns = every label category, rows sum to 1);
        ``obsm['true_counts']`` cells per type; ``uns['pseudospots']`` parameters.

    Raises
    ------
    InputError
        Missing labels/coordinates/field column, or no spot with ``min_cells`` cells.
    """
    labels = _labels(adata, label_key)
    if "spatial" not in adata.obsm:
        raise InputError("the cells have no obsm['spatial'] coordinates",
                         "store the pixel coordinates of each cell in obsm['spatial']")
    coords = np.asarray(adata.obsm["spatial"], dtype=np.float64)[:, :2]
    if fov_key is not None and fov_key not in adata.obs.columns:
        raise InputError(f"no obs column {fov_key!r} with fields of view",
                         "pass fov_key=None if all cells share one coordinate frame")
    fovs = (adata.obs[fov_key].to_numpy() if fov_key is not None
            else np.zeros(adata.n_obs, dtype=int))
    counts = counts_csr(adata)
    radius = spot_diameter_um / 2.0 / pixel_size_um
    spacing = (spacing_um if spacing_um is not None else spot_diameter_um) / pixel_size_um
    rng = np.random.default_rng(seed)
    onehot = sp.csr_matrix((np.ones(adata.n_obs), (np.arange(adata.n_obs), labels.codes)),
                           shape=(adata.n_obs, len(labels.categories)))
    members, rows = [], []
    offset_x = 0.0
    for fov in pd.unique(fovs):
        idx = np.flatnonzero(fovs == fov)
        xy = coords[idx]
        low, high = xy.min(axis=0), xy.max(axis=0)
        shift = rng.uniform(0.0, spacing, size=2) - spacing
        centres = _hex_centres(*(low + shift), *high, spacing)
        tree = cKDTree(xy)
        for centre, hits in zip(centres, tree.query_ball_point(centres, r=radius)):
            if len(hits) >= max(min_cells, 1):
                members.append(idx[np.sort(hits)])
                rows.append({"field_of_view": fov, "x_px": centre[0], "y_px": centre[1],
                             "x": centre[0] + offset_x - coords[:, 0].min(), "y": centre[1]})
        offset_x += (high[0] - low[0]) + 2 * spacing
    if not members:
        raise InputError(f"no pseudo-spot has at least {min_cells} cells",
                         "check pixel_size_um (microns per pixel) and spot_diameter_um")
    pool = sp.csr_matrix((np.ones(sum(map(len, members))),
                          (np.repeat(np.arange(len(members)), list(map(len, members))),
                           np.concatenate(members))), shape=(len(members), adata.n_obs))
    spot_counts = sp.csr_matrix(pool @ counts, dtype=np.float32)
    type_counts = np.asarray((pool @ onehot).todense())
    obs = pd.DataFrame(rows, index=[f"spot_{i:04d}" for i in range(len(rows))])
    obs["n_cells"] = type_counts.sum(axis=1).astype(int)
    spots = AnnData(X=spot_counts, obs=obs.drop(columns=["x", "y"]), var=adata.var.copy())
    spots.obsm["spatial"] = obs[["x", "y"]].to_numpy(dtype=np.float64)
    columns = [str(c) for c in labels.categories]
    spots.obsm["true_proportions"] = pd.DataFrame(
        type_counts / type_counts.sum(axis=1, keepdims=True), index=spots.obs_names,
        columns=columns)
    spots.obsm["true_counts"] = pd.DataFrame(type_counts.astype(int), index=spots.obs_names,
                                             columns=columns)
    spots.uns["pseudospots"] = {"label_key": label_key, "spot_diameter_um": spot_diameter_um,
                                "pixel_size_um": pixel_size_um,
                                "spacing_um": spacing * pixel_size_um, "min_cells": min_cells,
                                "seed": seed}
    return spots


def reference_from_cells(adata: AnnData, label_key: str = "cell_type",
                         drop_labels: tuple[str, ...] = ("Unannotated",)) -> AnnData:
    """Single-cell reference built from the same cells (counts in X, categorical labels).

    Parameters
    ----------
    adata
        Cells with raw counts and labels.
    label_key
        Cell-type column.
    drop_labels
        Labels to leave out of the reference (e.g. unannotated cells).

    Returns
    -------
    AnnData
        Cells x genes with float32 CSR counts in X and ``obs[label_key]`` categorical (unused
        categories removed); spatial information is dropped.
    """
    labels = _labels(adata, label_key)
    keep = ~pd.Series(labels).astype(str).isin(drop_labels).to_numpy()
    ref = AnnData(X=counts_csr(adata)[keep], obs=adata.obs.iloc[keep].copy(),
                  var=adata.var.copy())
    ref.obs[label_key] = pd.Categorical(labels[keep]).remove_unused_categories()
    return ref


def pseudospot_benchmark(cells: AnnData, label_key: str = "cell_type", min_cells: int = 2,
                         n_top_genes: int = 2000) -> tuple[AnnData, AnnData, pd.DataFrame]:
    """A ready-to-train deconvolution benchmark from single-cell resolved spatial data.

    Pseudo-spots (:func:`seqfish_pseudospots`) and a reference of the same cells
    (:func:`reference_from_cells`), both through :func:`~destvi_core.data.prepare_inputs`
    (DestVIWarnings about dropped cells or genes are silenced: they are expected here).

    Returns
    -------
    ``(sc, st, truth)``: prepared reference, prepared pseudo-spots, and the true proportions
    ``[spots, types]`` aligned to ``st``.
    """
    import warnings

    from .data import prepare_inputs
    from .errors import DestVIWarning

    spots = seqfish_pseudospots(cells, label_key=label_key, min_cells=min_cells)
    ref = reference_from_cells(cells, label_key=label_key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DestVIWarning)
        prep = prepare_inputs(ref, spots, labels_key=label_key, n_top_genes=n_top_genes)
    truth = spots.obsm["true_proportions"].loc[prep.st.obs_names]
    return prep.sc, prep.st, truth
