"""Spatially-weighted PCA of gamma, colour map and axis genes (spec 4.2)."""

import numpy as np
import pytest
from _analysis_fakes import FakeCondSCVI, FakeDestVI, hex_coords

from destvi_core.analysis import (axis_genes, colormap_2d, colormap_legend, explore_gamma, project_cells,
                                  spatial_pca)
from destvi_core.errors import DestVIWarning, InputError


def _planted(seed=0, n_latent=5):
    rng = np.random.default_rng(seed)
    coords = hex_coords(20, 20)
    x = (coords[:, 0] - coords[:, 0].mean()) / coords[:, 0].std()
    direction = np.array([0.6, -0.8, 0, 0, 0])[:n_latent]
    gamma = 2.0 + x[:, None] * direction[None] + 0.15 * rng.normal(size=(len(x), n_latent))
    return coords, gamma, direction, x


@pytest.mark.parametrize("weighting", ["outer", "scalar", "none"])
def test_pc1_recovers_planted_direction(weighting):
    coords, gamma, direction, x = _planted()
    prop = np.random.default_rng(1).uniform(0.2, 0.8, len(x))
    res = spatial_pca(gamma, coords, prop, weighting=weighting)
    assert res.components.shape == (5, 2) and res.spot_projection.shape == (len(x), 2)
    assert abs(res.components[:, 0] @ direction) > 0.98
    assert np.allclose(res.components.T @ res.components, np.eye(2), atol=1e-10)
    assert abs(np.corrcoef(res.spot_projection[:, 0], x)[0, 1]) > 0.98
    assert res.explained_variance[0] > 70 and res.explained_variance[0] > res.explained_variance[1]
    np.testing.assert_allclose(res.center, gamma.mean(0))
    # deterministic sign: largest-|loading| entry positive
    for j in range(2):
        assert res.components[np.argmax(np.abs(res.components[:, j])), j] > 0


def test_scalar_weighting_is_a_rescaling():
    coords, gamma, _, _ = _planted(2)
    prop = np.random.default_rng(3).uniform(0.1, 0.9, len(gamma))
    a = spatial_pca(gamma, coords, prop, weighting="scalar")
    b = spatial_pca(gamma, coords, None, weighting="none")
    np.testing.assert_allclose(a.components, b.components, atol=1e-8)
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues * (prop @ prop), rtol=1e-8)


def test_matches_dense_reference_formula():
    coords, gamma, _, _ = _planted(4)
    prop = np.random.default_rng(5).uniform(0.1, 0.9, len(gamma))
    d = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    bw = np.median(d[np.triu_indices(len(d), 1)])
    w = np.exp(-d**2 / (0.5 * bw**2)) * np.outer(prop, prop)
    lmat = -w.copy()
    np.fill_diagonal(lmat, w.sum(1))
    xc = gamma - gamma.mean(0)
    ev = np.sort(np.linalg.eigvalsh(xc.T @ lmat @ xc))[::-1][:2]
    res = spatial_pca(gamma, coords, prop, weighting="outer")
    np.testing.assert_allclose(res.eigenvalues, ev, rtol=1e-8)


def test_project_cells_centres_by_cell_mean():
    coords, gamma, direction, _ = _planted()
    res = spatial_pca(gamma, coords)
    latent = 5.0 + np.outer(np.linspace(-1, 1, 50), direction)
    p = project_cells(latent, res)
    assert p.shape == (50, 2)
    np.testing.assert_allclose(p.mean(0), 0, atol=1e-12)
    with pytest.raises(InputError, match="latent shape"):
        project_cells(np.ones((3, 4)), res)


def test_colormap_vertices_and_scaling():
    assert colormap_2d([-1, -1, 1], [-1, 1, 0], scale="none") == ["#ff0000", "#00ff00", "#0000ff"]
    # "max" scaling: doubling the coordinates does not change colours
    u, v = np.array([0.1, -0.3, 0.2]), np.array([0.05, 0.1, -0.2])
    assert colormap_2d(u, v) == colormap_2d(2 * u, 2 * v)
    assert colormap_2d(u, v, scale=0.3) == colormap_2d(u / 0.3, v / 0.3, scale="none")
    leg = colormap_legend(5)
    assert leg.shape == (25, 3) and leg["color"].str.match(r"^#[0-9a-f]{6}$").all()
    with pytest.raises(InputError):
        colormap_2d(u, v, scale="log")


def test_axis_genes_vectorised_pearson():
    rng = np.random.default_rng(0)
    proj = rng.normal(size=(100, 2))
    expr = rng.normal(size=(100, 30))
    expr[:, 3] = proj[:, 0] * 2 + 0.1 * rng.normal(size=100)
    expr[:, 7] = -proj[:, 1]
    expr[:, 9] = 1.0  # zero variance
    genes = [f"g{i}" for i in range(30)]
    t = axis_genes(expr, proj, genes, n_top=5)
    assert len(t) == 2 * 2 * 5
    top = t[(t.axis == "SpatialPC1") & (t.direction == "positive")].iloc[0]
    assert top.gene == "g3"
    assert top.correlation == pytest.approx(np.corrcoef(expr[:, 3], proj[:, 0])[0, 1])
    assert t[(t.axis == "SpatialPC2") & (t.direction == "negative")].iloc[0].gene == "g7"
    full = axis_genes(expr, proj, genes, n_top=30)
    assert (full.loc[full.gene == "g9", "correlation"] == 0).all()


def test_explore_gamma_with_fake_models():
    st = FakeDestVI(n_spots_side=20, n_rows=20, n_genes=120)
    sc = FakeCondSCVI(st.cell_types, n_genes=120, direction=st.direction)
    props = st.get_proportions()
    ex = explore_gamma(st, sc, "type_1", threshold=float(props["type_1"].median()), proportions=props)
    assert len(ex.spot_indices) == int((props["type_1"] > props["type_1"].median()).sum())
    assert abs(ex.pca.components[:, 0] @ st.direction) > 0.95
    assert ex.cell_projection.shape == (150, 2) and len(ex.cell_colors) == 150
    assert len(ex.spot_colors) == len(ex.spot_indices)
    pc1 = ex.genes[(ex.genes.axis == "SpatialPC1")]
    sign = np.sign(ex.pca.components[:, 0] @ st.direction)
    up = set(pc1[pc1.direction == ("positive" if sign > 0 else "negative")].gene.head(10))
    down = set(pc1[pc1.direction == ("negative" if sign > 0 else "positive")].gene.head(10))
    assert len(up & {f"g{i}" for i in sc.axis_up}) >= 8
    assert len(down & {f"g{i}" for i in sc.axis_down}) >= 8
    assert set(ex.spot_table().columns) == {"spot", "pc1", "pc2", "color"}
    # threshold above the maximum -> 0 with a warning
    with pytest.warns(DestVIWarning, match="maximum proportion"):
        ex2 = explore_gamma(st, sc, "type_1", threshold=2.0)
    assert ex2.threshold == 0.0 and len(ex2.spot_indices) == st.adata.n_obs
    with pytest.raises(InputError, match="unknown cell type"):
        explore_gamma(st, sc, "nope")


def test_too_few_spots():
    with pytest.raises(InputError, match="at least 3"):
        spatial_pca(np.ones((2, 5)), np.ones((2, 2)))
    with pytest.raises(InputError, match="weighting"):
        spatial_pca(np.ones((5, 5)), np.ones((5, 2)), weighting="bad")


@pytest.mark.parametrize("weighting", ["outer", "none", "scalar"])
def test_grid_kernel_sums_agree_with_the_exact_kernel(weighting):
    """Large selections use the grid path; on 1,500 spots both paths give the same axes."""
    from destvi_core.analysis.spatial_pca import EXACT_MAX_SPOTS

    rng = np.random.default_rng(4)
    n = 1500
    loc = rng.uniform(0, 1000, (n, 2)) * np.array([1.0, 0.6])
    pi = rng.uniform(0.05, 1.0, n)
    x = rng.normal(size=(n, 5))
    x[:, 1] += 2 * np.sin(loc[:, 0] / 150)  # a planted spatial axis
    exact = spatial_pca(x, loc, pi, weighting=weighting, method="exact")
    grid = spatial_pca(x, loc, pi, weighting=weighting, method="grid")
    cos = np.abs((exact.components * grid.components).sum(axis=0))
    assert cos.min() > 0.9999
    np.testing.assert_allclose(grid.eigenvalues, exact.eigenvalues, rtol=1e-3)
    np.testing.assert_allclose(grid.explained_variance, exact.explained_variance, rtol=1e-4)
    assert np.argmax(np.abs(exact.components[:, 0])) == 1
    # auto = exact at this size (the results of today), grid above EXACT_MAX_SPOTS
    auto = spatial_pca(x, loc, pi, weighting=weighting)
    np.testing.assert_array_equal(auto.components, exact.components)
    assert n < EXACT_MAX_SPOTS
    with pytest.raises(InputError, match="method"):
        spatial_pca(x, loc, pi, method="fast")


def test_median_distance_is_sampled_only_above_the_exact_size():
    from scipy.spatial.distance import pdist

    from destvi_core.analysis.spatial_pca import median_pairwise_distance

    rng = np.random.default_rng(0)
    loc = rng.uniform(0, 100, (400, 2))
    assert median_pairwise_distance(loc) == np.median(pdist(loc))
    sampled = median_pairwise_distance(loc, max_points=100, sample=300)
    assert sampled == median_pairwise_distance(loc, max_points=100, sample=300)  # seeded
    assert abs(sampled - np.median(pdist(loc))) < 0.05 * np.median(pdist(loc))
