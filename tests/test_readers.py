"""Large-input readers: Space Ranger Visium HD folders, lean .h5ad reading, streamed hashing."""

from __future__ import annotations

import hashlib

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from destvi_core import data as data_mod
from destvi_core import readers
from destvi_core.data import hash_matrix, prepare_inputs
from destvi_core.errors import InputError
from destvi_core.readers import (read_10x_h5, read_h5ad_counts, read_spatial, read_visium_hd,
                                 visium_hd_bins)
from destvi_core.simulate import simulate_destvi, write_10x_h5, write_visium_hd

SMALL = dict(n_cells=300, n_types=3, n_genes=60, n_latent=2, n_markers=8, program_size=4,
             n_decoys=1)


@pytest.fixture(scope="module")
def hd(tmp_path_factory):
    """A Visium HD output with two bin sizes (different slides, so a mix-up shows)."""
    out = tmp_path_factory.mktemp("hd") / "outs"
    bins = {16: simulate_destvi(n_spots=120, seed=1, **SMALL),
            8: simulate_destvi(n_spots=300, seed=2, **SMALL)}
    for size, sim in bins.items():
        write_visium_hd(sim.st, out, bin_size=size)
    return out, bins


def test_visium_hd_bins_found_from_any_level(hd):
    out, _ = hd
    for path in (out, out / "binned_outputs", out.parent):
        assert sorted(visium_hd_bins(path)) == [8, 16]
    assert list(visium_hd_bins(out / "binned_outputs" / "square_016um")) == [16]
    assert visium_hd_bins(out / "binned_outputs" / "square_016um" / "spatial") == {}


@pytest.mark.parametrize("size", [16, 8])
def test_read_visium_hd_chosen_bin_size(hd, size):
    out, bins = hd
    truth = bins[size].st
    adata = read_visium_hd(out, bin_size=size)
    assert adata.shape == truth.shape
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), truth.X.toarray())
    np.testing.assert_allclose(adata.obsm["spatial"], truth.obsm["spatial"])
    assert list(adata.var_names) == list(truth.var_names)
    assert adata.obs_names[0].startswith(f"s_{size:03d}um_")
    np.testing.assert_array_equal(adata.obs["array_row"], truth.obs["array_row"])
    assert adata.uns["visium_hd"]["bin_size_um"] == size
    (library,) = adata.uns["spatial"]
    assert adata.uns["spatial"][library]["scalefactors"]["bin_size_um"] == size
    # the generic entry point picks the same bins (16 um by default)
    same = read_spatial(out, bin_size=size) if size != 16 else read_spatial(out)
    np.testing.assert_array_equal(same.X.toarray(), adata.X.toarray())


def test_visium_hd_errors(hd, tmp_path):
    out, _ = hd
    with pytest.raises(InputError, match=r"bin size 2 um is not in .*available: 8 um, 16 um"):
        read_visium_hd(out, bin_size=2)
    with pytest.raises(InputError, match="not a Visium HD output"):
        read_visium_hd(tmp_path)
    broken = tmp_path / "outs"
    (broken / "binned_outputs" / "square_016um" / "spatial").mkdir(parents=True)
    with pytest.raises(InputError, match="filtered_feature_bc_matrix.h5"):
        read_visium_hd(broken)
    file = tmp_path / "x.h5ad"
    ad.AnnData(np.ones((3, 2), np.float32)).write_h5ad(file)
    with pytest.raises(InputError, match="bin size"):
        read_spatial(file, bin_size=16)


def test_read_10x_h5_keeps_gene_expression_only(tmp_path):
    counts = sp.random(5, 4, density=0.6, random_state=0, format="csr") * 10
    counts.data = np.ceil(counts.data)
    path = write_10x_h5(counts, [f"b{i}" for i in range(5)], ["A", "B", "C", "A"],
                        tmp_path / "m.h5")
    import h5py

    with h5py.File(path, "r+") as f:  # mark the last feature as an antibody
        kinds = f["matrix/features/feature_type"][()]
        kinds[3] = b"Antibody Capture"
        del f["matrix/features/feature_type"]
        f["matrix/features/feature_type"] = kinds
    adata = read_10x_h5(path)
    assert list(adata.var_names) == ["A", "B", "C"]
    np.testing.assert_array_equal(adata.X.toarray(), counts.toarray()[:, :3])


def test_prepared_hd_data_train_ready(hd):
    out, bins = hd
    st = read_spatial(out)
    prep = prepare_inputs(bins[16].sc, st, labels_key="cell_type", hvg=False)
    assert prep.st.n_obs == 120 and prep.st.obsm["spatial"].shape == (120, 2)


def _fat_h5ad(path):
    rng = np.random.default_rng(0)
    counts = rng.poisson(1.5, (50, 20)).astype(np.float32)
    adata = ad.AnnData(np.log1p(counts),  # dense, log-normalised X
                       obs=pd.DataFrame({"tag": np.arange(50)}, index=[f"s{i}" for i in range(50)]),
                       var=pd.DataFrame(index=[f"g{i}" for i in range(20)]))
    adata.layers["counts"] = sp.csr_matrix(counts)
    adata.layers["scaled"] = np.asarray(counts) * 3
    adata.obsm["spatial"] = rng.random((50, 2))
    adata.uns["note"] = "kept"
    adata.write_h5ad(path)
    return counts


def test_lean_h5ad_reads_only_annotations_and_counts(tmp_path):
    path = tmp_path / "fat.h5ad"
    counts = _fat_h5ad(path)
    lean = read_h5ad_counts(path)
    assert lean.X is None and list(lean.layers) == ["counts"]
    assert sp.isspmatrix_csr(lean.layers["counts"])
    np.testing.assert_array_equal(lean.layers["counts"].toarray(), counts)
    assert lean.obsm["spatial"].shape == (50, 2) and lean.uns["note"] == "kept"
    assert lean.obs["tag"].tolist() == list(range(50))
    scaled = read_h5ad_counts(path, layer="scaled")
    assert list(scaled.layers) == ["scaled"]
    with pytest.raises(InputError, match=r"layer 'raw' not found .*'counts'"):
        read_h5ad_counts(path, layer="raw")
    with pytest.raises(InputError, match="does not exist"):
        read_h5ad_counts(tmp_path / "missing.h5ad")
    # X holds the counts when there is no counts layer (dense X read in row chunks)
    plain = tmp_path / "plain.h5ad"
    ad.AnnData(counts, obsm={"spatial": np.zeros((50, 2))}).write_h5ad(plain)
    lean_x = read_h5ad_counts(plain)
    assert sp.isspmatrix_csr(lean_x.X)
    np.testing.assert_array_equal(lean_x.X.toarray(), counts)


def test_large_h5ad_is_read_lean(tmp_path, monkeypatch):
    path = tmp_path / "fat.h5ad"
    _fat_h5ad(path)
    assert "scaled" in read_spatial(path).layers  # small file: read whole
    monkeypatch.setattr(readers, "LEAN_READ_BYTES", 0)
    lean = read_spatial(path)
    assert "scaled" not in lean.layers and "counts" in lean.layers


def _hash_reference(matrix) -> str:
    """The one-shot canonical-CSR digest (the format before streaming)."""
    digest = hashlib.sha256()
    csr = sp.csr_matrix(np.atleast_2d(matrix) if not sp.issparse(matrix) else matrix,
                        dtype=np.float64, copy=True)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    csr.sort_indices()
    digest.update(b"csr")
    digest.update(np.asarray(csr.shape, dtype=np.int64).tobytes())
    for array, dtype in ((csr.indptr, np.int64), (csr.indices, np.int64),
                         (csr.data, np.float64)):
        digest.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
    return digest.hexdigest()


def test_streamed_hash_equals_the_one_shot_digest(monkeypatch):
    monkeypatch.setattr(data_mod, "_HASH_CHUNK", 7)  # many pieces on a small matrix
    rng = np.random.default_rng(0)
    dense = rng.poisson(0.7, (23, 5)).astype(np.float32)
    csr = sp.csr_matrix(dense)
    order = np.concatenate([np.arange(a, b)[::-1] for a, b in zip(csr.indptr[:-1], csr.indptr[1:])])
    unsorted = sp.csr_matrix((csr.data[order], csr.indices[order], csr.indptr), shape=csr.shape)
    assert not unsorted.has_sorted_indices
    coo = sp.coo_matrix(dense)
    duplicated = sp.coo_matrix((np.r_[coo.data, 0.0, 1.0], (np.r_[coo.row, 0, 1],
                                                             np.r_[coo.col, 0, 0])),
                               shape=coo.shape).tocsr()  # duplicates and an explicit zero
    for matrix in (dense, csr, csr.tocsc(), coo, duplicated, unsorted, dense[0]):
        assert hash_matrix(matrix) == _hash_reference(matrix)
    assert hash_matrix(dense) == hash_matrix(csr) == hash_matrix(csr.tocsc()) == \
        hash_matrix(unsorted)
    # remembered for the same object, recomputed after an in-place change
    first = hash_matrix(csr)
    assert hash_matrix(csr) == first
    csr.data[0] += 1
    assert hash_matrix(csr) != first and hash_matrix(csr) == _hash_reference(csr)
