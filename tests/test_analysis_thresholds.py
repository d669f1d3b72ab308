"""Automatic proportion thresholds (spec 4.1) on planted spatial fields."""

import numpy as np
import pandas as pd
import pytest
from _analysis_fakes import disc_proportions, hex_coords

from destvi_core.analysis import (apply_thresholds, automatic_thresholds, spatial_knn_weights,
                                  spots_containing, threshold_curve)
from destvi_core.errors import InputError


@pytest.fixture(scope="module")
def coords():
    return hex_coords()


@pytest.fixture(scope="module")
def weights(coords):
    return spatial_knn_weights(coords)


def test_knn_weights_structure(coords, weights):
    n = len(coords)
    assert weights.shape == (n, n)
    assert weights.diagonal().sum() == 0  # self-neighbour excluded by default
    # non-redundant: each undirected edge stored once, in the upper triangle
    assert (weights.tocoo().row < weights.tocoo().col).all()
    # rows were normalised before merging -> total weight = number of spots
    assert weights.sum() == pytest.approx(n)
    # on a regular grid: interior spots have 6 nearest neighbours at distance 1 with the largest weights
    self_w = spatial_knn_weights(coords, include_self=True)
    assert self_w.diagonal().min() > 0
    assert self_w.sum() == pytest.approx(n)


def test_z_matches_bruteforce(coords, weights):
    rng = np.random.default_rng(1)
    a = rng.random(len(coords))
    curve = threshold_curve(a, weights)
    t = curve["cutoff"].to_numpy()[10]
    b = a * (a > t)
    w = weights.toarray()
    z = (b @ w @ b) / np.sqrt((w**2).sum())
    assert curve["z"].to_numpy()[10] == pytest.approx(z)
    assert np.all(np.diff(curve["z"].to_numpy()) <= 1e-12)  # Z non-increasing in the cut-off


def test_disc_is_separated(coords):
    weights = spatial_knn_weights(coords)
    for seed in range(4):
        a, disc = disc_proportions(coords, seed=seed)
        res = automatic_thresholds(pd.DataFrame({"A": a}), coords, kind="secondary", weights=weights)
        keep = a > res.thresholds["A"]
        assert keep[disc].mean() > 0.95
        assert keep[~disc].mean() < 0.2
    props = pd.DataFrame({"A": a, "B": 1 - a})
    res = automatic_thresholds(props, coords, kind="secondary")
    # primary = steepest descent is at least the first inflection and drops all background
    assert res.primary["A"] >= res.secondary["A"]
    assert (a > res.primary["A"])[~disc].mean() < 0.01
    curve = res.curves["A"]
    assert {"cutoff", "z", "z_smooth"} <= set(curve.columns)
    assert curve["cutoff"].is_monotonic_increasing
    assert res.kind == "secondary" and set(res.thresholds) == {"A", "B"}


def test_ties_and_degenerate_columns(coords):
    rng = np.random.default_rng(2)
    n = len(coords)
    tied = np.round(rng.random(n), 1)  # only 11 distinct values -> repeated quantiles
    few = np.where(rng.random(n) < 0.5, 0.1, 0.3)  # 2 distinct values: no spline possible
    const = np.full(n, 0.2)
    props = pd.DataFrame({"tied": tied, "few": few, "const": const})
    for grid in ("quantile", "linear"):
        res = automatic_thresholds(props, coords, kind="secondary", cutoffs=grid)
        for ct in props:
            assert np.isfinite(res.thresholds[ct])
        assert "const" in res.notes
        assert res.curves["tied"]["cutoff"].is_unique
    # quantile grid: repeated quantiles deduplicated (interpolation adds a few midpoints)
    res_q = automatic_thresholds(props, coords, cutoffs="quantile")
    assert len(res_q.curves["tied"]) < 30
    assert len(res_q.curves["few"]) <= 4


def test_quantile_grid_matches_spec(coords, weights):
    a, _ = disc_proportions(coords, seed=4)
    curve = threshold_curve(a, weights, cutoffs="quantile")
    expected = np.unique(np.quantile(a, np.arange(100) / 100))
    np.testing.assert_allclose(curve["cutoff"], expected)


def test_no_inflection_falls_back_to_primary(coords, monkeypatch):
    import destvi_core.analysis.thresholds as th

    a, _ = disc_proportions(coords, seed=3)
    real = th.threshold_curve

    def no_inflection(col, w, **kw):
        c = real(col, w, **kw)
        c["d2_sign"] = 1
        return c

    monkeypatch.setattr(th, "threshold_curve", no_inflection)
    res = th.automatic_thresholds(pd.DataFrame({"A": a}), coords, kind="secondary")
    assert res.secondary["A"] == res.primary["A"]
    assert "inflection" in res.notes["A"]


def test_errors(coords):
    props = pd.DataFrame({"A": np.ones(len(coords))})
    with pytest.raises(InputError, match="unknown threshold kind"):
        automatic_thresholds(props, coords, kind="min_value")
    with pytest.raises(InputError, match="unknown cell type"):
        automatic_thresholds(props, coords, cell_types=["Z"])
    with pytest.raises(InputError, match="cut-off grid"):
        automatic_thresholds(props, coords, cutoffs="log")
    with pytest.raises(InputError, match="same spots"):
        threshold_curve(np.ones(5), spatial_knn_weights(coords))


def test_apply_and_contains():
    props = pd.DataFrame({"A": [0.1, 0.5, 0.2], "B": [0.9, 0.5, 0.8]}, index=["s1", "s2", "s3"])
    thr = {"A": 0.2, "B": 0.85}
    out = apply_thresholds(props, thr)
    assert out["A"].tolist() == [0.0, 0.5, 0.0]  # equal to the threshold -> 0
    assert out["B"].tolist() == [0.9, 0.0, 0.0]
    assert spots_containing(props, {"A": 0.15}).values.tolist() == [[False, True], [True, True], [True, True]]
    with pytest.raises(InputError, match="unknown cell type"):
        apply_thresholds(props, {"C": 0.1})
