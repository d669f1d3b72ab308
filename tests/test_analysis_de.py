"""Cell-type-specific DE (spec 4.3/4.4) with a fake DestVI model."""

import numpy as np
import pandas as pd
import pytest
from _analysis_fakes import FakeDestVI
from scipy import stats

from destvi_core.analysis import (benjamini_hochberg, de_genes, group_from_gamma_axis, group_from_obs,
                                  group_from_spot_names, group_from_threshold, ks_2samp_columns,
                                  significance)
from destvi_core.errors import InputError


@pytest.fixture(scope="module")
def model():
    return FakeDestVI(n_spots_side=20, n_rows=20, n_genes=200, n_planted=15, fold=3.0)


@pytest.mark.parametrize("n1,n2,ties", [(40, 55, False), (300, 1000, False), (200, 70, True), (1, 9, True)])
def test_ks_matches_scipy(n1, n2, ties):
    rng = np.random.default_rng(n1)
    x = rng.gamma(2.0, size=(n1, 40))
    y = rng.gamma(2.0, size=(n2, 40)) * np.linspace(0.8, 1.2, 40)
    if ties:
        x, y = np.round(x), np.round(y)
    d, p = ks_2samp_columns(x, y, chunk=16)
    for g in range(40):
        ref = stats.ks_2samp(x[:, g], y[:, g], method="asymp")
        assert d[g] == pytest.approx(ref.statistic, abs=1e-12)
        assert p[g] == pytest.approx(ref.pvalue, abs=1e-6)


def test_bh_matches_reference():
    p = np.array([0.01, 0.04, 0.03, 0.2, 0.5, np.nan])
    out = benjamini_hochberg(p)
    order = np.argsort(p[:5])
    ranked = p[:5][order] * 5 / np.arange(1, 6)
    expected = np.minimum.accumulate(ranked[::-1])[::-1]
    np.testing.assert_allclose(out[:5][order], expected)
    assert np.isnan(out[5])


def test_planted_genes_found(model):
    g1 = model.left.copy()
    res = de_genes(model, "type_0", g1, n_samples=10, seed=0)
    t = res.table
    assert list(t.columns) == ["log2fc", "ks_score", "pval", "padj", "significant"]
    planted = t.index[model.planted]
    other = t.index.difference(planted)
    # found: the planted genes are exactly the top KS scores, all FDR-significant
    assert set(t.sort_values("ks_score", ascending=False).index[:len(planted)]) == set(planted)
    assert (t.loc[planted, "padj"] < 1e-10).all()
    assert (t.loc[other, "padj"] < 0.05).mean() < 0.05
    np.testing.assert_allclose(t.loc[planted, "log2fc"], np.log2(3.0), atol=0.1)
    # destvi_utils rule: |log2fc| > largest |GMM mean|; the planted cluster is a GMM component,
    # so the cut-off sits inside it -> some planted genes pass, no null gene does
    assert 0 < res.fc_cutoff < np.log2(3.0) + 0.1
    assert t["significant"].any() and set(t.index[t["significant"]]) <= set(planted)
    assert res.n_group1 == g1.sum() and res.n_group2 == (~g1).sum()
    assert res.min_score == pytest.approx(t.loc[t.padj < 0.05, "ks_score"].min())
    # another type: nothing planted -> (almost) nothing significant
    res1 = de_genes(model, "type_1", g1, seed=0)
    assert res1.table["significant"].sum() <= 3


def test_deterministic_and_threshold_masks(model):
    props = model.get_proportions()
    g1 = model.left.copy()
    thr = float(props["type_0"].quantile(0.3))
    a = de_genes(model, "type_0", g1, threshold=thr, proportions=props, seed=3)
    b = de_genes(model, "type_0", g1, threshold=thr, proportions=props, seed=3)
    pd.testing.assert_frame_equal(a.table, b.table)
    present = props["type_0"].to_numpy() > thr
    assert a.n_group1 == (g1 & present).sum() and a.n_group2 == (~g1 & present).sum()
    g2 = group_from_obs(model.adata.obs, "region", "right")
    c = de_genes(model, "type_0", g1, g2, threshold=thr, proportions=props, seed=3)
    pd.testing.assert_frame_equal(a.table, c.table)


def test_empty_group_message(model):
    g1 = np.zeros(model.adata.n_obs, dtype=bool)
    with pytest.raises(InputError, match="group 1 has no spots.*empty.*Fix: lower the type_0 threshold"):
        de_genes(model, "type_0", g1)
    g1[:5] = True
    with pytest.raises(InputError, match="group 1 has no spots.*proportion above"):
        de_genes(model, "type_0", g1, threshold=0.99)
    with pytest.raises(InputError, match="group 2"):
        de_genes(model, "type_0", np.ones(model.adata.n_obs, dtype=bool))
    with pytest.raises(InputError, match="unknown cell type"):
        de_genes(model, "nope", g1)
    with pytest.raises(InputError, match="boolean"):
        de_genes(model, "type_0", np.arange(model.adata.n_obs))


def test_significance_helper(model):
    res = de_genes(model, "type_0", model.left.copy(), seed=1)
    pd.testing.assert_series_equal(significance(res.table, 0.05, res.fc_cutoff), res.table["significant"],
                                   check_names=False)
    loose, strict = significance(res.table, 0.05, 0.0), significance(res.table, 0.05, res.fc_cutoff)
    assert loose.sum() >= strict.sum() and (loose | ~strict).all()
    assert significance(res.table).equals(res.table["significant"].rename(None)) or \
        (significance(res.table) == res.table["significant"]).all()
    assert not significance(res.table, 0.05, 100.0).any()


def test_group_builders(model):
    props = model.get_proportions()
    n = model.adata.n_obs
    m = group_from_threshold(props, "type_1", 0.3)
    np.testing.assert_array_equal(m, props["type_1"].to_numpy() > 0.3)
    sel = np.array([2, 5, 9])
    proj = np.array([[0.1, 1.0], [0.5, -1.0], [0.9, 0.0]])
    np.testing.assert_array_equal(np.flatnonzero(group_from_gamma_axis(proj, sel, 0.4, 1.0, n)), [5, 9])
    np.testing.assert_array_equal(np.flatnonzero(group_from_gamma_axis(proj, sel, -2, 0, n, axis=1)), [5, 9])
    names = model.adata.obs_names[[3, 7]]
    np.testing.assert_array_equal(np.flatnonzero(group_from_spot_names(model.adata.obs_names, names)), [3, 7])
    np.testing.assert_array_equal(group_from_obs(model.adata.obs, "is_left"), model.left)
    with pytest.raises(InputError, match="not found"):
        group_from_spot_names(model.adata.obs_names, ["spot_x"])
    with pytest.raises(InputError, match="no column"):
        group_from_obs(model.adata.obs, "tissue")
    with pytest.raises(InputError, match="not boolean"):
        group_from_obs(model.adata.obs, "region")
    with pytest.raises(InputError, match="no spot has"):
        group_from_obs(model.adata.obs, "region", "middle")
    with pytest.raises(InputError, match="unknown cell type"):
        group_from_threshold(props, "x", 0.1)


def test_large_groups_are_subsampled_for_the_ks_test_only(model):
    g1 = model.left.copy()
    full = de_genes(model, "type_0", g1, seed=0)
    assert full.n_sampled1 == g1.sum() and full.notes == []  # below the cap: every spot
    sub = de_genes(model, "type_0", g1, seed=0, max_spots_per_group=50)
    assert (sub.n_sampled1, sub.n_sampled2) == (50, 50)
    assert sub.n_group1 == g1.sum() and sub.params["sampled_spots"] == [50, 50]
    assert len(sub.notes) == 2 and "random subsample of 50" in sub.notes[0]
    # fold changes still use every spot; the planted genes are still the top KS scores
    np.testing.assert_allclose(sub.table["log2fc"], full.table["log2fc"])
    planted = set(sub.table.index[model.planted])
    top = set(sub.table.sort_values("ks_score", ascending=False).index[:len(planted)])
    assert top == planted
    again = de_genes(model, "type_0", g1, seed=0, max_spots_per_group=50)
    pd.testing.assert_frame_equal(again.table, sub.table)  # seeded subsample
