"""Large slides with known truth: tiles of a simulated slide placed side by side.

Simulating 100,000 spots directly would draw 100,000 x 2,000 Gamma-Poisson counts through dense
arrays; repeating a simulated slide keeps the truth exact and costs only the sparse copy. Each
tile is an exact copy of the base slide's counts and truth, shifted in space; the model sees the
same data many times, which is what "keeps the accuracy it has on the untiled data" measures.
"""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .base import SimulatedData

TUTORIAL_BASE = dict(n_spots=1100, n_cells=15000, n_types=12, n_genes=2000, n_latent=3,
                     cells_per_spot=10, program_size=20, n_markers=50)
"""Parameters of the tutorial-sized base slide (as :func:`tutorial_size_simulation`)."""


def _tile_rows(n_tiles: int) -> int:
    return max(1, math.ceil(math.sqrt(n_tiles)))


def _tile_matrix(matrix, n_tiles: int, n_keep: int):
    """``n_tiles`` vertical copies of ``matrix`` cut to ``n_keep`` rows (CSR stays CSR)."""
    if sp.issparse(matrix):
        csr = sp.csr_matrix(matrix)
        n = csr.shape[0]
        nnz_row = np.diff(csr.indptr)
        full, rest = divmod(n_keep, n)
        nnz = int(csr.indptr[-1]) * full + int(csr.indptr[rest])
        indices = np.empty(nnz, dtype=csr.indices.dtype)
        data = np.empty(nnz, dtype=csr.data.dtype)
        step = int(csr.indptr[-1])
        for k in range(full):
            indices[k * step:(k + 1) * step] = csr.indices
            data[k * step:(k + 1) * step] = csr.data
        if rest:
            end = int(csr.indptr[rest])
            indices[full * step:] = csr.indices[:end]
            data[full * step:] = csr.data[:end]
        counts = np.concatenate([np.tile(nnz_row, full), nnz_row[:rest]])
        index_dtype = np.int64 if nnz >= np.iinfo(np.int32).max else np.int32
        indptr = np.zeros(n_keep + 1, dtype=index_dtype)
        np.cumsum(counts, out=indptr[1:])
        return sp.csr_matrix((data, indices.astype(index_dtype, copy=False), indptr),
                             shape=(n_keep, csr.shape[1]))
    dense = np.asarray(matrix)
    reps = (n_tiles,) + (1,) * (dense.ndim - 1)
    return np.tile(dense, reps)[:n_keep]


def tile_spatial(data: SimulatedData | ad.AnnData, n_tiles: int, n_spots: int | None = None,
                 gap: float | None = None) -> SimulatedData | ad.AnnData:
    """Repeat a spatial slide ``n_tiles`` times on a square grid of tiles, truth included.

    Parameters
    ----------
    data
        A :class:`SimulatedData` (its ``st`` is tiled, ``sc`` and gene sets are kept) or a
        spatial AnnData with ``obsm['spatial']``.
    n_tiles
        Number of copies (at least 1).
    n_spots
        Keep only the first ``n_spots`` spots of the tiled slide (default: all,
        ``n_tiles * n_base``); tiles fill row by row, so the last tile may be partial.
    gap
        Empty space between tiles in coordinate units (default: 5 % of the slide's width).

    Returns
    -------
    SimulatedData or AnnData
        Same type as ``data``. Spot names get a ``-t<k>`` suffix, ``obs['tile']`` holds the tile
        number, ``obsm['spatial']`` is shifted per tile (and ``obs['array_row'/'array_col']``
        when present, keeping the hexagonal parity); every other ``obsm`` entry (the true
        proportions and states) and every layer is repeated; ``uns['tiling']`` records
        ``n_tiles``, ``n_base_spots`` and the offsets.
    """
    if isinstance(data, SimulatedData):
        st = tile_spatial(data.st, n_tiles, n_spots=n_spots, gap=gap)
        return SimulatedData(data.sc, st, dict(data.gene_sets), dict(data.descriptions))
    from ..errors import InputError

    n_tiles = int(n_tiles)
    if n_tiles < 1:
        raise InputError(f"n_tiles must be at least 1 (got {n_tiles})", "use 1 or more tiles")
    if "spatial" not in data.obsm:
        raise InputError("the spatial data has no obsm['spatial'] coordinates to tile",
                         "store the spot coordinates in obsm['spatial']")
    n_base = data.n_obs
    n_keep = n_base * n_tiles if n_spots is None else int(n_spots)
    if not 1 <= n_keep <= n_base * n_tiles:
        raise InputError(f"n_spots={n_keep} does not fit {n_tiles} tiles of {n_base} spots",
                         f"use at most {n_base * n_tiles} spots or more tiles")
    coords = np.asarray(data.obsm["spatial"], dtype=np.float64)
    low, high = coords.min(axis=0), coords.max(axis=0)
    size = high - low
    pad = 0.05 * float(size.max()) if gap is None else float(gap)
    per_row = _tile_rows(n_tiles)
    tile = np.repeat(np.arange(n_tiles), n_base)[:n_keep]
    tile_xy = np.column_stack([tile % per_row, tile // per_row]).astype(np.float64)
    offsets = tile_xy * (size + pad)[None, :]
    base_pos = np.tile(np.arange(n_base), n_tiles)[:n_keep]

    obs = data.obs.iloc[base_pos].copy()
    obs.index = pd.Index([f"{name}-t{k}" for name, k in
                          zip(np.asarray(data.obs_names)[base_pos], tile)])
    obs["tile"] = tile.astype(np.int32)
    if "array_row" in obs and "array_col" in obs:
        rows = np.asarray(data.obs["array_row"], dtype=np.int64)
        cols = np.asarray(data.obs["array_col"], dtype=np.int64)
        row_step = int(rows.max() - rows.min()) + 3
        row_step += row_step % 2  # even: odd rows stay shifted by half a spot
        col_step = int(cols.max() - cols.min()) + 4
        col_step += col_step % 2
        obs["array_row"] = rows[base_pos] + tile_xy[:, 1].astype(np.int64) * row_step
        obs["array_col"] = cols[base_pos] + tile_xy[:, 0].astype(np.int64) * col_step
    X = None if data.X is None else _tile_matrix(data.X, n_tiles, n_keep)
    out = ad.AnnData(X=X, obs=obs, var=data.var.copy(), uns=dict(data.uns))
    for key, value in data.layers.items():
        out.layers[key] = _tile_matrix(value, n_tiles, n_keep)
    for key, value in data.obsm.items():
        if key == "spatial":
            out.obsm[key] = coords[base_pos] + offsets
        elif isinstance(value, pd.DataFrame):
            frame = value.iloc[base_pos].copy()
            frame.index = obs.index
            out.obsm[key] = frame
        else:
            out.obsm[key] = _tile_matrix(value, n_tiles, n_keep)
    out.uns["tiling"] = {"n_tiles": n_tiles, "n_base_spots": n_base,
                         "tile_width": float(size[0] + pad), "tile_height": float(size[1] + pad),
                         "tiles_per_row": per_row}
    return out


def tiled_simulation(n_spots: int, seed: int = 0, base_spots: int | None = None,
                     **simulate_kwargs) -> SimulatedData:
    """An ``n_spots`` slide made of tiles of one tutorial-sized simulation, with known truth.

    The base slide is :func:`~destvi_core.simulate.simulate_destvi` with the tutorial-sized
    parameters (:data:`TUTORIAL_BASE`: 15,000 reference cells, 12 types, 2,000 genes, 1,100
    spots) unless overridden by ``simulate_kwargs`` (e.g. ``n_types=5``,
    ``st_library_size=1500``); it is tiled with :func:`tile_spatial` and cut to ``n_spots``.

    Parameters
    ----------
    n_spots
        Spots of the tiled slide (e.g. 100_000 for a 16 um Visium HD section).
    seed
        Seed of the base simulation.
    base_spots
        Spots of the base slide (default 1,100, or ``n_spots`` if smaller).
    simulate_kwargs
        Passed to ``simulate_destvi`` (override :data:`TUTORIAL_BASE`).

    Examples
    --------
    >>> sim = tiled_simulation(100_000)          # doctest: +SKIP
    >>> sim.st.n_obs, sim.st.obsm["true_proportions"].shape
    (100000, (100000, 12))
    """
    from .generic import simulate_destvi

    params = {**TUTORIAL_BASE, **simulate_kwargs}
    n_spots = int(n_spots)
    base = int(base_spots) if base_spots is not None else min(params["n_spots"], n_spots)
    params["n_spots"] = max(1, base)
    sim = simulate_destvi(seed=seed, **params)
    n_tiles = math.ceil(n_spots / sim.st.n_obs)
    tiled = tile_spatial(sim, n_tiles, n_spots=n_spots)
    tiled.st.uns["simulation"] = dict(tiled.st.uns["simulation"], tiled_from=int(sim.st.n_obs))
    return tiled
