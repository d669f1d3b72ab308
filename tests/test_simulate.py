"""Tests of the simulators (destvi_core.simulate)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.optimize as so
import scipy.sparse as sp
from scipy.spatial import cKDTree

from destvi_core.errors import InputError
from destvi_core.simulate import (
    DEMO_TYPES, SimulatedData, demo_dataset, hex_grid, paper_simulation, read_gmt,
    simulate_destvi, true_scale_for_ct, write_demo, write_gmt,
)


def _shared_data() -> Path:
    env = os.environ.get("DESTVI_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


SMALL = dict(n_spots=200, n_cells=600, n_types=4, n_genes=400, n_latent=2, n_markers=20,
             program_size=10, n_decoys=5)


@pytest.fixture(scope="module")
def small() -> SimulatedData:
    return simulate_destvi(seed=3, **SMALL)


@pytest.fixture(scope="module")
def demo() -> SimulatedData:
    return demo_dataset(seed=0)


def _is_integer_csr(matrix) -> bool:
    return sp.isspmatrix_csr(matrix) and matrix.dtype == np.float32 and np.all(
        matrix.data == np.round(matrix.data)) and matrix.data.min() >= 0


def test_shapes_and_truth_layout(small):
    sc, st = small.sc, small.st
    assert sc.shape == (600, 400) and st.shape == (200, 400)
    assert list(sc.var_names) == list(st.var_names)
    assert _is_integer_csr(sc.X) and _is_integer_csr(st.X)
    assert isinstance(sc.obs["cell_type"].dtype, pd.CategoricalDtype)
    assert small.cell_types == [f"Type {i}" for i in range(4)]
    props = st.obsm["true_proportions"]
    assert isinstance(props, pd.DataFrame)
    assert list(props.columns) == small.cell_types and list(props.index) == list(st.obs_names)
    np.testing.assert_allclose(props.sum(axis=1), 1.0)
    for ct in small.cell_types:
        assert st.obsm[f"true_gamma_{ct}"].shape == (200, 2)
    assert small.true_gamma().shape == (200, 2, 4)
    assert sc.obsm["true_gamma"].shape == (600, 2)
    assert st.obsm["spatial"].dtype == np.float64 and st.obsm["spatial"].shape == (200, 2)
    assert set(st.obs["region"].cat.categories) == {"region_0", "region_1", "region_2"}


def test_deterministic_for_seed(small):
    again = simulate_destvi(seed=3, **SMALL)
    other = simulate_destvi(seed=4, **SMALL)
    assert (again.st.X != small.st.X).nnz == 0 and (again.sc.X != small.sc.X).nnz == 0
    assert again.gene_sets == small.gene_sets
    assert (other.st.X != small.st.X).nnz > 0


def test_hex_grid_is_visium_like():
    coords, array_rc = hex_grid(300)
    assert coords.shape == (300, 2) and array_rc.shape == (300, 2)
    dist, _ = cKDTree(coords).query(coords, k=7)
    np.testing.assert_allclose(dist[:, 1], 100.0)  # nearest neighbour at the spot spacing
    assert np.median((np.abs(dist[:, 1:] - 100.0) < 1e-6).sum(axis=1)) == 6  # hexagonal


def test_fields_are_spatially_smooth(small):
    coords = small.st.obsm["spatial"]
    gamma = small.st.obsm["true_gamma_Type 0"][:, 0]
    _, nn = cKDTree(coords).query(coords, k=2)
    neighbour_corr = np.corrcoef(gamma, gamma[nn[:, 1]])[0, 1]
    assert neighbour_corr > 0.8


def test_library_sizes_are_realistic(demo):
    sc_lib = np.asarray(demo.sc.X.sum(axis=1)).ravel()
    st_lib = np.asarray(demo.st.X.sum(axis=1)).ravel()
    assert 2000 < np.median(sc_lib) < 4500
    assert 3000 < np.median(st_lib) < 7000
    assert sc_lib.min() > 0 and st_lib.min() > 0


def test_deconvolution_is_identifiable(demo):
    """Plain NNLS on reference mean profiles recovers proportions well (markers are distinct)."""
    sc, st = demo.sc, demo.st
    x = sc.X.toarray()
    x /= x.sum(axis=1, keepdims=True)
    profiles = np.stack([x[(sc.obs["cell_type"] == ct).to_numpy()].mean(0)
                         for ct in demo.cell_types], axis=1)
    y = st.X.toarray()
    y /= y.sum(axis=1, keepdims=True)
    est = np.stack([so.nnls(profiles, row)[0] for row in y])
    est /= est.sum(axis=1, keepdims=True)
    truth = st.obsm["true_proportions"].to_numpy()
    assert np.sqrt(((est - truth) ** 2).mean()) < 0.1


def test_planted_program_follows_gamma(demo):
    sc = demo.sc
    mono = (sc.obs["cell_type"] == "Monocytes").to_numpy()
    x = sc.X[mono].toarray()
    x = np.log1p(1e4 * x / x.sum(axis=1, keepdims=True))
    gamma = sc.obsm["true_gamma"][mono, 0]
    up = sc.var_names.get_indexer(demo.gene_sets["PLANTED_MONOCYTES_STATE0_UP"])
    down = sc.var_names.get_indexer(demo.gene_sets["PLANTED_MONOCYTES_STATE0_DOWN"])
    decoy = sc.var_names.get_indexer(demo.gene_sets["DECOY_01"])
    assert np.corrcoef(x[:, up].mean(1), gamma)[0, 1] > 0.7
    assert np.corrcoef(x[:, down].mean(1), gamma)[0, 1] < -0.5
    assert abs(np.corrcoef(x[:, decoy].mean(1), gamma)[0, 1]) < 0.3


def test_gene_sets_planted_and_decoys(small):
    sets = small.gene_sets
    for ct in ("TYPE_0", "TYPE_3"):
        for k in range(2):
            assert len(sets[f"PLANTED_{ct}_STATE{k}_UP"]) == 10
            assert len(sets[f"PLANTED_{ct}_STATE{k}_DOWN"]) == 10
    assert "PLANTED_TYPE_0_REGION_REGION_0_UP" in sets
    decoys = [k for k in sets if k.startswith("DECOY_")]
    assert len(decoys) == 5
    genes = set(small.sc.var_names)
    assert all(set(v) <= genes for v in sets.values())


def test_region_program_is_regional(small):
    st = small.st
    genes = small.gene_sets["PLANTED_TYPE_0_REGION_REGION_0_UP"]
    scale = true_scale_for_ct(st, "Type 0")
    in_region = (st.obs["region"] == "region_0").to_numpy()
    score = scale[genes].sum(axis=1).to_numpy()
    assert score[in_region].mean() > 2 * score[~in_region].mean()


def test_true_scale_rows_sum_to_one(small):
    scale = true_scale_for_ct(small.st, "Type 1", indices=np.arange(5))
    assert scale.shape == (5, 400)
    np.testing.assert_allclose(scale.sum(axis=1), 1.0, rtol=1e-5)


def test_demo_story(demo):
    assert demo.sc.n_obs == 4000 and demo.st.n_obs == 1000 and demo.sc.n_vars == 2000
    assert demo.cell_types == DEMO_TYPES
    assert demo.sc.var_names.is_unique
    ifn = demo.gene_sets["PLANTED_MONOCYTES_STATE0_UP"]
    assert ifn[:3] == ["Isg15", "Ifit1", "Ifit3"]
    assert "IFN_RESPONSE" in demo.descriptions["PLANTED_MONOCYTES_STATE0_UP"]
    assert {"Cd19", "Lyz2", "Cd8a"} <= set(demo.sc.var_names)
    props = demo.st.obsm["true_proportions"].groupby(demo.st.obs["region"].to_numpy()).mean()
    assert props.loc["cortex", "B cells"] > props.loc["medulla", "B cells"]
    assert props.loc["medulla", "Plasma cells"] > props.loc["cortex", "Plasma cells"]


def test_demo_is_fast():
    start = time.perf_counter()
    demo_dataset(seed=1)
    assert time.perf_counter() - start < 10.0


def test_write_demo_and_gmt_roundtrip(tmp_path):
    import anndata as ad

    paths = write_demo(tmp_path / "demo")
    assert all(p.is_file() for p in paths.values())
    st = ad.read_h5ad(paths["st"])
    assert isinstance(st.obsm["true_proportions"], pd.DataFrame)
    assert "true_gamma_B cells" in st.obsm
    sets = read_gmt(paths["gene_sets"])
    assert "PLANTED_MONOCYTES_STATE0_UP" in sets and sets["PLANTED_MONOCYTES_STATE0_UP"][0] == "Isg15"


def test_gmt_roundtrip_and_errors(tmp_path):
    sets = {"A": ["g1", "g2"], "B": ["g3"]}
    path = write_gmt(sets, tmp_path / "x.gmt", {"A": "first\tset"})
    assert path.read_text().splitlines()[0] == "A\tfirst set\tg1\tg2"
    assert read_gmt(path) == sets
    with pytest.raises(InputError, match="does not exist"):
        read_gmt(tmp_path / "missing.gmt")
    bad = tmp_path / "bad.gmt"
    bad.write_text("\tdesc\tg1\n")
    with pytest.raises(InputError, match="line 1 of bad.gmt has no gene set name"):
        read_gmt(bad)


def test_paper_simulation_small():
    params = _shared_data() / "destvi_sim_params"
    if not (params / "grtruth_PCA.npz").is_file():
        pytest.skip("shared data (destvi_sim_params) not available")
    sim = paper_simulation(params, n_spots=100, cells_per_spot=100, sc_cells_per_spot=5,
                           seed=0)
    assert sim.st.n_obs == 100 and sim.sc.n_obs == 500 and sim.sc.n_vars == 2000
    props = sim.st.obsm["true_proportions"]
    np.testing.assert_allclose(props.sum(axis=1), 1.0)
    np.testing.assert_allclose(props.to_numpy() * 100, np.round(props.to_numpy() * 100), atol=1e-9)
    lib = np.median(np.asarray(sim.st.X.sum(axis=1)))
    assert 3e4 < lib < 1e5  # paper scale (normalised to 1e5 counts on all genes)
    shallow = paper_simulation(params, n_spots=100, sc_cells_per_spot=5, library_size=3000)
    assert 2000 < np.median(np.asarray(shallow.sc.X.sum(axis=1))) < 4500
    assert "PLANTED_CT0_STATE0_UP" in sim.gene_sets
    np.testing.assert_allclose(true_scale_for_ct(sim.st, "ct2").sum(axis=1), 1.0, rtol=1e-5)
