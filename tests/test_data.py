"""Tests of loading, validation and preparation (destvi_core.data)."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from destvi_core.data import (
    MIN_CELLS_PER_TYPE, MIN_SHARED_GENES, PreparedData, get_counts, hash_matrix,
    prepare_inputs, read_h5ad_safe, read_spatial, read_visium_folder, select_hvgs,
    shared_genes, validate_counts, validate_reference, validate_spatial,
)
from destvi_core.errors import DestVIWarning, InputError


def make_sc(n_cells: int = 60, n_genes: int = 80, n_types: int = 3, seed: int = 0,
            genes: list[str] | None = None) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(2.0, size=(n_cells, n_genes)).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical(
        [f"T{i % n_types}" for i in range(n_cells)]), "batch": "b1"},
        index=[f"c{i}" for i in range(n_cells)])
    var = pd.DataFrame(index=genes or [f"Gene{i}" for i in range(n_genes)])
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)


def make_st(n_spots: int = 40, n_genes: int = 80, seed: int = 1,
            genes: list[str] | None = None) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(3.0, size=(n_spots, n_genes)).astype(np.float32)
    st = ad.AnnData(X=counts, obs=pd.DataFrame(index=[f"s{i}" for i in range(n_spots)]),
                    var=pd.DataFrame(index=genes or [f"Gene{i}" for i in range(n_genes)]))
    st.obsm["spatial"] = rng.uniform(0, 1000, size=(n_spots, 2))
    st.uns["spatial"] = {"lib": {"scalefactors": {"spot_diameter_fullres": 89.0}}}
    return st


def destvi_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, DestVIWarning)]


# --------------------------------------------------------------------------------------------
# hashing
# --------------------------------------------------------------------------------------------

def test_hash_matrix_is_canonical():
    dense = np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]])
    h = hash_matrix(dense)
    assert len(h) == 64
    assert h == hash_matrix(sp.csr_matrix(dense)) == hash_matrix(sp.csc_matrix(dense))
    assert h == hash_matrix(dense.astype(np.float32))
    with_zero = sp.csr_matrix(dense)
    with_zero.data[0] = 0.0  # explicit zero stored -> same values as dense with that entry 0
    other = dense.copy()
    other[0, 1] = 0.0
    assert hash_matrix(with_zero) == hash_matrix(other)
    assert hash_matrix(other) != h
    assert hash_matrix(dense.reshape(3, 2)) != h  # shape matters


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------

def test_read_h5ad_safe_roundtrip(tmp_path):
    path = tmp_path / "ok.h5ad"
    make_sc().write_h5ad(path)
    assert read_h5ad_safe(path).shape == (60, 80)


def test_read_h5ad_safe_missing(tmp_path):
    with pytest.raises(InputError, match=r"nope\.h5ad does not exist.*Fix: check the path"):
        read_h5ad_safe(tmp_path / "nope.h5ad")


def test_read_h5ad_safe_folder(tmp_path):
    with pytest.raises(InputError, match="is a folder, not an .h5ad file"):
        read_h5ad_safe(tmp_path)


def test_read_h5ad_safe_not_hdf5(tmp_path):
    path = tmp_path / "table.h5ad"
    path.write_text("gene,cell\nA,1\n")
    with pytest.raises(InputError, match=r"table\.h5ad is not an AnnData \.h5ad file \(not HDF5\)"):
        read_h5ad_safe(path)


def test_read_h5ad_safe_truncated(tmp_path):
    path = tmp_path / "full.h5ad"
    make_sc(n_cells=300, n_genes=200).write_h5ad(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.h5ad"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="could not be read as AnnData .truncated or corrupted"):
        read_h5ad_safe(cut)


def test_read_visium_folder_errors(tmp_path):
    with pytest.raises(InputError, match="Visium folder .* does not exist"):
        read_visium_folder(tmp_path / "missing")
    (tmp_path / "outs").mkdir()
    (tmp_path / "outs" / "readme.txt").write_text("x")
    with pytest.raises(InputError, match=r"has no filtered_feature_bc_matrix\.h5 .found: readme"):
        read_spatial(tmp_path / "outs")  # folders dispatch to the Visium reader
    (tmp_path / "outs" / "filtered_feature_bc_matrix.h5").write_bytes(b"")
    with pytest.raises(InputError, match="lacks tissue_positions.csv or scalefactors_json.json"):
        read_visium_folder(tmp_path / "outs")


def test_read_spatial_h5ad(tmp_path):
    path = tmp_path / "st.h5ad"
    make_st().write_h5ad(path)
    assert read_spatial(path).n_obs == 40


# --------------------------------------------------------------------------------------------
# counts
# --------------------------------------------------------------------------------------------

def test_get_counts_prefers_counts_layer_and_lists_layers():
    adata = make_sc()
    adata.layers["counts"] = adata.X.copy()
    adata.X = adata.X * 0.5
    assert get_counts(adata) is adata.layers["counts"]
    with pytest.raises(InputError, match=r"layer 'raw' not found \(available layers: 'counts'\)"):
        get_counts(adata, layer="raw")
    with pytest.raises(InputError, match=r"available layers: none"):
        get_counts(make_sc(), layer="raw")


def test_validate_counts_negative():
    adata = make_sc()
    adata.X = adata.X.toarray() - 1.5
    with pytest.raises(InputError, match=r"reference X holds negative values \(min -1\.5\) — "
                                         r"looks scaled.*Fix: pass raw UMI counts"):
        validate_counts(adata)


def test_validate_counts_negative_integers():
    adata = make_sc()
    adata.X = adata.X.toarray().astype(np.int64) - 1
    with pytest.raises(InputError, match="holds negative values"):
        validate_counts(adata, what="spatial")


def test_validate_counts_nan_and_inf():
    adata = make_sc()
    x = adata.X.toarray()
    x[0, 0], x[1, 1] = np.nan, np.inf
    adata.X = x
    with pytest.raises(InputError, match="reference X contains 2 NaN or infinite values"):
        validate_counts(adata)


def test_validate_counts_log_normalised():
    adata = make_sc()
    adata.X = sp.csr_matrix(np.log1p(adata.X.toarray()))
    with pytest.raises(InputError, match=r"X holds non-integer values \(e\.g\. 1\.\d+, max .*\) "
                                         r"— looks log-normalised\. Fix: pass raw UMI counts.*"
                                         r"layers\['counts'\]"):
        validate_counts(adata)


def test_validate_counts_normalised_not_log():
    adata = make_sc()
    x = adata.X.toarray()
    adata.X = x / np.maximum(x.sum(1, keepdims=True), 1) * 1e4
    with pytest.raises(InputError, match="looks normalised .CPM/TPM"):
        validate_counts(adata)


def test_validate_counts_checks_named_layer():
    adata = make_sc()
    adata.layers["lognorm"] = adata.X.copy()
    adata.layers["lognorm"].data = np.log1p(adata.layers["lognorm"].data)
    validate_counts(adata)  # X is fine
    with pytest.raises(InputError, match=r"spatial layers\['lognorm'\] holds non-integer"):
        validate_counts(adata, layer="lognorm", what="spatial")


def test_validate_counts_empty():
    with pytest.raises(InputError, match=r"the reference data is empty \(0 observations"):
        validate_counts(make_sc()[:0])


# --------------------------------------------------------------------------------------------
# reference
# --------------------------------------------------------------------------------------------

def test_validate_reference_missing_column_lists_columns():
    with pytest.raises(InputError, match=r"no obs column 'celltype'.*available columns: "
                                         r"cell_type, batch.*likely label columns: cell_type"):
        validate_reference(make_sc(), labels_key="celltype")


def test_validate_reference_single_type():
    with pytest.raises(InputError, match=r"1 usable cell type.*needs at least 2"):
        validate_reference(make_sc(n_types=1))


def test_validate_reference_drops_small_types():
    adata = make_sc(n_cells=60)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    labels[:3] = "Rare"
    adata.obs["cell_type"] = pd.Categorical(labels)
    with pytest.warns(DestVIWarning, match=rf"fewer than {MIN_CELLS_PER_TYPE} reference cells: "
                                           r"Rare \(3\)"):
        out = validate_reference(adata)
    assert "Rare" not in out.obs["cell_type"].cat.categories
    assert out.n_obs == 57


def test_validate_reference_small_types_leave_one():
    adata = make_sc(n_cells=30, n_types=1)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    labels[:4] = "Rare"
    adata.obs["cell_type"] = labels  # plain strings become categorical
    with pytest.warns(DestVIWarning), pytest.raises(InputError, match="1 usable cell type"):
        validate_reference(adata)


def test_validate_reference_nan_labels_dropped():
    adata = make_sc()
    labels = adata.obs["cell_type"].astype(object).to_numpy()
    labels[[0, 5]] = np.nan
    adata.obs["cell_type"] = labels
    with pytest.warns(DestVIWarning, match=r"dropped 2 cells without a label"):
        out = validate_reference(adata)
    assert out.n_obs == 58 and isinstance(out.obs["cell_type"].dtype, pd.CategoricalDtype)


def test_validate_reference_all_nan_labels():
    adata = make_sc()
    adata.obs["cell_type"] = np.nan
    with pytest.raises(InputError, match=r"every label in obs\['cell_type'\] is missing"):
        validate_reference(adata)


def test_validate_reference_zero_count_cells_and_layer():
    adata = make_sc()
    x = adata.X.toarray()
    x[:4] = 0
    adata.layers["counts"] = sp.csr_matrix(x)
    adata.X = sp.csr_matrix(np.log1p(x))
    with pytest.warns(DestVIWarning, match="reference: dropped 4 cells with zero counts"):
        out = validate_reference(adata)
    assert out.n_obs == 56 and len(out.layers) == 0
    assert sp.isspmatrix_csr(out.X) and out.X.dtype == np.float32
    assert np.all(out.X.data == np.round(out.X.data))  # counts moved to X


def test_validate_reference_duplicated_genes():
    adata = make_sc(genes=["A", "A"] + [f"G{i}" for i in range(78)])
    with pytest.warns(DestVIWarning, match=r"1 duplicated gene names \(e\.g\. A\)"):
        out = validate_reference(adata)
    assert out.var_names.is_unique and adata.var_names[1] == "A"  # input untouched


# --------------------------------------------------------------------------------------------
# spatial
# --------------------------------------------------------------------------------------------

def test_validate_spatial_missing_key_lists_keys():
    st = make_st()
    st.obsm["X_umap"] = np.zeros((st.n_obs, 2))
    with pytest.raises(InputError, match=r"no coordinates in obsm\['coords'\] \(available obsm "
                                         r"keys: 'spatial', 'X_umap'\)"):
        validate_spatial(st, spatial_key="coords")


def test_validate_spatial_wrong_shape():
    st = make_st()
    st.obsm["spatial"] = np.zeros((st.n_obs, 1))
    with pytest.raises(InputError, match=r"obsm\['spatial'\] has shape \(40, 1\); expected "
                                         r"\(40, 2\)"):
        validate_spatial(st)


def test_validate_spatial_non_numeric():
    st = make_st()
    st.obsm["spatial"] = np.array([["a", "b"]] * st.n_obs, dtype=object)
    with pytest.raises(InputError, match="is not numeric"):
        validate_spatial(st)


def test_validate_spatial_takes_first_two_columns():
    st = make_st()
    st.obsm["spatial"] = np.column_stack([st.obsm["spatial"], np.ones(st.n_obs)]).astype(
        np.int32)
    out = validate_spatial(st)
    assert out.obsm["spatial"].shape == (40, 2) and out.obsm["spatial"].dtype == np.float64
    assert "spatial" in out.uns


def test_validate_spatial_nan_coordinates():
    st = make_st()
    st.obsm["spatial"][[1, 2], 0] = np.nan
    with pytest.warns(DestVIWarning, match="dropped 2 spots with NaN/infinite coordinates"):
        out = validate_spatial(st)
    assert out.n_obs == 38
    st.obsm["spatial"][:] = np.nan
    with pytest.raises(InputError, match="every spot has NaN/infinite coordinates"):
        validate_spatial(st)


def test_validate_spatial_zero_count_spots():
    st = make_st()
    st.X[[0, 3, 7]] = 0
    with pytest.warns(DestVIWarning, match="spatial: dropped 3 spots with zero counts"):
        out = validate_spatial(st)
    assert out.n_obs == 37
    st.X[:] = 0
    with pytest.raises(InputError, match="every spot of the spatial data has zero counts"):
        validate_spatial(st)


def test_validate_spatial_log_normalised():
    st = make_st()
    st.X = np.log1p(st.X)
    with pytest.raises(InputError, match="spatial X holds non-integer values .* log-normalised"):
        validate_spatial(st)


# --------------------------------------------------------------------------------------------
# genes
# --------------------------------------------------------------------------------------------

def test_shared_genes_too_few():
    sc = make_sc(genes=[f"A{i}" for i in range(80)])
    st = make_st(genes=[f"A{i}" for i in range(10)] + [f"B{i}" for i in range(70)])
    with pytest.raises(InputError, match=rf"share only 10 gene names \(need at least "
                                         rf"{MIN_SHARED_GENES}; reference has e\.g\. A0, A1, A2; "
                                         r"spatial has e\.g\. A0, A1, A2\).*Fix: use the same"):
        shared_genes(sc, st)


def test_shared_genes_ensembl_vs_symbols():
    sc = make_sc(genes=[f"ENSMUSG{i:011d}" for i in range(80)])
    st = make_st(genes=[f"Gene{i}" for i in range(80)])
    with pytest.raises(InputError, match=r"share only 0 .*reference uses Ensembl IDs.*"
                                         r"\(Ensembl IDs vs symbols\)"):
        shared_genes(sc, st)


def test_shared_genes_human_vs_mouse_case():
    sc = make_sc(genes=[f"Cd{i}a" for i in range(80)])
    st = make_st(genes=[f"CD{i}A" for i in range(80)])
    with pytest.raises(InputError, match=r"80 genes match when case is ignored: the spatial "
                                         r"data looks like human.*different species"):
        shared_genes(sc, st)


def test_shared_genes_suggests_var_column():
    sc = make_sc()
    st = make_st(genes=[f"ENSG{i:011d}" for i in range(80)])
    st.var["symbol"] = [f"Gene{i}" for i in range(80)]
    with pytest.raises(InputError, match=r"spatial data's var\['symbol'\] matches 80 genes"):
        shared_genes(sc, st)


def test_shared_genes_order_follows_reference():
    sc = make_sc(genes=[f"G{i}" for i in range(80)][::-1])
    st = make_st(genes=[f"G{i}" for i in range(80)])
    assert shared_genes(sc, st) == [f"G{i}" for i in range(80)][::-1]


# --------------------------------------------------------------------------------------------
# prepare_inputs
# --------------------------------------------------------------------------------------------

def test_prepare_inputs_aligns_and_reports():
    sc = make_sc(n_genes=120, genes=[f"G{i}" for i in range(120)])
    st = make_st(n_genes=100, genes=[f"G{i}" for i in range(20, 120)])
    sc.layers["counts"] = sc.X.copy()
    sc.X = sc.X.multiply(0.1).tocsr()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DestVIWarning)
        prep = prepare_inputs(sc, st, n_top_genes=2000)
    assert isinstance(prep, PreparedData)
    assert list(prep.sc.var_names) == list(prep.st.var_names) == [f"G{i}" for i in
                                                                   range(20, 120)]
    for adata in (prep.sc, prep.st):
        assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(prep.sc.X.toarray(), sc.layers["counts"][:, 20:].toarray())
    assert prep.st.obsm["spatial"].dtype == np.float64 and "spatial" in prep.st.uns
    rep = prep.report
    assert (rep.n_cells, rep.n_spots, rep.n_genes_sc, rep.n_genes_st) == (60, 40, 120, 100)
    assert rep.n_shared == rep.n_used_genes == 100
    assert rep.cell_type_counts == {"T0": 20, "T1": 20, "T2": 20}
    lines = rep.summary_lines()
    assert lines[0] == "Reference: 60 cells x 120 genes, 3 cell types in obs['cell_type']"
    assert "Shared genes: 100; used: 100" in lines[2]


def test_prepare_inputs_hvg_selection_and_warnings():
    rng = np.random.default_rng(0)
    sc = make_sc(n_cells=90, n_genes=300)
    x = sc.X.toarray()
    x[:, :10] = rng.poisson(rng.gamma(0.2, 10.0, size=(90, 10)))  # overdispersed, same mean
    x[:5] = 0  # empty cells
    sc.X = sp.csr_matrix(x)
    st = make_st(n_genes=300)
    with pytest.warns(DestVIWarning):
        prep = prepare_inputs(sc, st, n_top_genes=50)
    assert prep.sc.n_vars == prep.st.n_vars == 50
    assert len({f"Gene{i}" for i in range(10)} & set(prep.sc.var_names)) >= 8
    assert prep.report.n_shared == 300 and prep.report.n_used_genes == 50
    assert any("dropped 5 cells with zero counts" in w for w in prep.report.warnings)
    assert "Warning: reference: dropped 5 cells with zero counts" in prep.report.summary_lines()
    assert "after HVG selection" in prep.report.summary_lines()[2]


def test_prepare_inputs_drops_cells_empty_after_gene_subset():
    sc = make_sc(n_cells=60, n_genes=100, genes=[f"G{i}" for i in range(100)])
    x = sc.X.toarray()
    x[0, :60] = 0  # cell 0 only expresses genes missing from the spatial data
    sc.X = sp.csr_matrix(x)
    st = make_st(n_genes=60, genes=[f"G{i}" for i in range(60)])
    with pytest.warns(DestVIWarning, match=r"reference \(after gene selection\): dropped 1 cell"):
        prep = prepare_inputs(sc, st, hvg=False)
    assert prep.sc.n_obs == 59 and "c0" not in prep.sc.obs_names


def test_prepare_inputs_removes_unused_categories_and_keeps_inputs():
    sc = make_sc()
    sc.obs["cell_type"] = sc.obs["cell_type"].cat.add_categories(["Ghost"])
    st = make_st()
    before = sc.X.copy()
    prep = prepare_inputs(sc, st)
    assert list(prep.sc.obs["cell_type"].cat.categories) == ["T0", "T1", "T2"]
    assert "Ghost" in sc.obs["cell_type"].cat.categories  # input not modified
    assert (sc.X != before).nnz == 0


def test_prepare_inputs_propagates_errors():
    with pytest.raises(InputError, match="share only 0 gene names"):
        prepare_inputs(make_sc(), make_st(genes=[f"X{i}" for i in range(80)]))
    with pytest.raises(InputError, match=r"no obs column 'label'"):
        prepare_inputs(make_sc(), make_st(), labels_key="label")
    with pytest.raises(InputError, match=r"layer 'counts' not found"):
        prepare_inputs(make_sc(), make_st(), layer_st="counts")


def test_select_hvgs_keeps_all_when_few_genes():
    sc = make_sc(n_genes=30)
    assert select_hvgs(sc, n_top_genes=2000) == list(sc.var_names)


# --------------------------------------------------------------------------------------------
# pseudo-spots (synthetic cells; real seqFISH checks live in test_real_data.py)
# --------------------------------------------------------------------------------------------

def test_pseudospots_pool_cells_in_discs():
    from destvi_core.pseudospots import reference_from_cells, seqfish_pseudospots

    # two fields; cells 0-2 sit together, cell 3 is far away, cell 4 in the other field
    xy = np.array([[100.0, 100.0], [110.0, 100.0], [100.0, 120.0], [1900.0, 1900.0],
                   [100.0, 100.0]])
    adata = ad.AnnData(sp.csr_matrix(np.arange(15, dtype=np.float32).reshape(5, 3)),
                       obs=pd.DataFrame({"cell_type": pd.Categorical(["A", "A", "B", "B", "C"]),
                                         "field_of_view": [0, 0, 0, 0, 1]},
                                        index=[f"c{i}" for i in range(5)]))
    adata.obsm["spatial"] = xy
    spots = seqfish_pseudospots(adata, spot_diameter_um=10.0, pixel_size_um=0.1)
    props = spots.obsm["true_proportions"]
    assert list(props.columns) == ["A", "B", "C"]
    np.testing.assert_allclose(props.sum(axis=1), 1.0)
    assert spots.obs["n_cells"].sum() == 5  # every cell pooled exactly once (touching discs)
    assert spots.X.sum() == adata.X.sum()
    big = spots.obs["n_cells"].idxmax()
    assert spots.obs.loc[big, "n_cells"] == 3  # seed 0 grid keeps cells 0-2 in one disc
    np.testing.assert_allclose(props.loc[big], [2 / 3, 1 / 3, 0.0])
    np.testing.assert_array_equal(spots[big].X.toarray().ravel(), [9.0, 12.0, 15.0])
    xs = spots.obsm["spatial"][:, 0]
    fov1 = (spots.obs["field_of_view"] == 1).to_numpy()
    assert xs[fov1].min() > xs[~fov1].max()  # fields laid side by side, no overlap
    with pytest.raises(InputError, match="no pseudo-spot has at least 9 cells"):
        seqfish_pseudospots(adata, spot_diameter_um=10.0, pixel_size_um=0.1, min_cells=9)
    with pytest.raises(InputError, match=r"no obs column 'label'"):
        seqfish_pseudospots(adata, label_key="label")
    ref = reference_from_cells(adata, drop_labels=("C",))
    assert ref.n_obs == 4 and list(ref.obs["cell_type"].cat.categories) == ["A", "B"]
