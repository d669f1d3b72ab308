"""Tiled simulations: large slides with known truth made of copies of a small one."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from destvi_core.errors import InputError
from destvi_core.simulate import simulate_destvi, tile_spatial, tiled_simulation

SMALL = dict(n_spots=60, n_cells=200, n_types=3, n_genes=50, n_latent=2, n_markers=5,
             program_size=4, n_decoys=1)


@pytest.fixture(scope="module")
def small():
    return simulate_destvi(seed=1, **SMALL)


def test_tiles_repeat_counts_and_truth_with_shifted_coordinates(small):
    tiled = tile_spatial(small, 4, n_spots=200)
    st, base = tiled.st, small.st
    assert st.n_obs == 200 and st.n_vars == base.n_vars
    assert sp.issparse(st.X)
    pos = np.arange(200) % base.n_obs
    np.testing.assert_array_equal(st.X.toarray(), base.X.toarray()[pos])
    np.testing.assert_array_equal(st.obsm["true_proportions"].to_numpy(),
                                  base.obsm["true_proportions"].to_numpy()[pos])
    assert list(st.obsm["true_proportions"].index) == list(st.obs_names)
    for key in base.obsm:
        if key.startswith("true_gamma"):
            np.testing.assert_array_equal(st.obsm[key], np.asarray(base.obsm[key])[pos])
    assert st.obs_names.is_unique and st.obs_names[0].endswith("-t0")
    np.testing.assert_array_equal(st.obs["tile"].to_numpy(), np.arange(200) // base.n_obs)
    # tiles do not overlap: every tile's bounding box is disjoint from the others
    xy = st.obsm["spatial"]
    boxes = [(xy[st.obs["tile"] == k].min(0), xy[st.obs["tile"] == k].max(0)) for k in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            (lo_i, hi_i), (lo_j, hi_j) = boxes[i], boxes[j]
            assert (hi_i < lo_j).any() or (hi_j < lo_i).any()
    # within a tile, geometry is a pure shift
    shift = xy[base.n_obs:2 * base.n_obs] - base.obsm["spatial"]
    np.testing.assert_allclose(shift, shift[0][None, :].repeat(base.n_obs, 0))
    # Visium grid indices stay unique and keep the hexagonal parity
    rc = st.obs[["array_row", "array_col"]].to_numpy()
    assert len({tuple(r) for r in rc}) == st.n_obs
    assert ((base.obs["array_row"] % 2) == (base.obs["array_col"] % 2)).all()
    assert ((rc[:, 0] % 2) == (rc[:, 1] % 2)).all()
    assert st.uns["tiling"]["n_tiles"] == 4 and st.uns["tiling"]["n_base_spots"] == base.n_obs
    assert tiled.sc is small.sc


def test_tile_anndata_and_errors(small):
    out = tile_spatial(small.st, 2)
    assert out.n_obs == 2 * small.st.n_obs
    with pytest.raises(InputError, match="n_tiles"):
        tile_spatial(small.st, 0)
    with pytest.raises(InputError, match="n_spots"):
        tile_spatial(small.st, 2, n_spots=3 * small.st.n_obs)
    bare = small.st.copy()
    del bare.obsm["spatial"]
    with pytest.raises(InputError, match="spatial"):
        tile_spatial(bare, 2)


def test_tiled_simulation_has_requested_size():
    sim = tiled_simulation(130, base_spots=50, n_cells=150, n_types=3, n_genes=40,
                           n_markers=5, program_size=4, n_decoys=1)
    assert sim.st.n_obs == 130
    assert sim.st.obsm["true_proportions"].shape == (130, 3)
    assert sim.st.uns["simulation"]["tiled_from"] == 50
    np.testing.assert_allclose(sim.st.obsm["true_proportions"].sum(1), 1.0)
