"""Regions of the tissue (composition test, masks and their text encoding) and co-localisation."""

import numpy as np
import pandas as pd
import pytest
from _analysis_fakes import hex_coords

from destvi_core.analysis import (blend_colors, blend_legend, check_region_name, cooccurrence_scores,
                                  decode_mask, encode_mask, region_composition, region_labels,
                                  spatial_knn_weights, spots_in_box, spots_in_polygon,
                                  strongest_pairs, within_spot_correlation)
from destvi_core.errors import InputError

TYPES = ["A", "B", "C", "D", "E"]


@pytest.fixture(scope="module")
def coords():
    return hex_coords(34, 33)  # 1,122 spots, unit spacing


def _planted(coords, seed=0, boost=0.15):
    """Dirichlet proportions, type A richer by ``boost`` inside a disc (returned as mask)."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(len(TYPES), 2.0), len(coords))
    disc = np.hypot(*(coords - coords.mean(0)).T) < 6
    p[disc, 0] += boost
    p /= p.sum(1, keepdims=True)
    return pd.DataFrame(p, columns=TYPES, index=[f"s{i}" for i in range(len(p))]), disc


# ------------------------------------------------------------------ composition test
def test_planted_region_richer_in_one_type_is_significant(coords):
    props, disc = _planted(coords)
    res = region_composition(props, disc, label_a="disc")
    t = res.table
    assert res.n_a == disc.sum() and res.n_b == (~disc).sum() and res.label_b == "rest of the tissue"
    assert t.loc["A", "padj"] < 1e-6 and t.loc["A", "difference"] > 0.08 and t.loc["A", "auc"] > 0.7
    assert t["padj"].idxmin() == "A"
    np.testing.assert_allclose(t.loc["A", "mean_a"], props.loc[disc, "A"].mean())
    np.testing.assert_allclose(t.loc["A", "mean_b"], props.loc[~disc, "A"].mean())
    long = res.long_means()
    assert set(long["region"]) == {"disc", "rest of the tissue"} and len(long) == 2 * len(TYPES)


def test_shuffled_region_is_not_significant(coords):
    props, disc = _planted(coords)
    rng = np.random.default_rng(3)
    for seed in range(3):
        shuffled = np.zeros(len(disc), bool)
        shuffled[np.random.default_rng(seed).choice(len(disc), disc.sum(), replace=False)] = True
        res = region_composition(props, shuffled)
        assert (res.table["padj"] > 0.05).all(), res.table
        assert res.table["auc"].between(0.4, 0.6).all()
    # the permutation test agrees with Mann-Whitney on both
    perm = region_composition(props, disc, test="permutation", n_permutations=199, seed=1)
    assert perm.table.loc["A", "pval"] == pytest.approx(1 / 200)  # no relabelling does as well
    random = np.zeros(len(disc), bool)
    random[rng.choice(len(disc), 80, replace=False)] = True
    assert (region_composition(props, random, test="permutation", n_permutations=199).table["padj"] > 0.05).all()


def test_two_regions_thresholds_and_overlap(coords):
    props, disc = _planted(coords)
    left = coords[:, 0] < np.median(coords[:, 0])
    res = region_composition(props, disc, left, thresholds={"A": 0.3, "B": 0.2},
                             label_a="disc", label_b="left half")
    shared = disc & left
    assert res.n_shared == shared.sum() > 0
    a, b = disc & ~shared, left & ~shared
    assert res.n_a == a.sum() and res.n_b == b.sum()
    assert res.table.loc["A", "above_a"] == (props.loc[a, "A"] > 0.3).sum()
    assert res.table.loc["B", "above_b"] == (props.loc[b, "B"] > 0.2).sum()
    assert np.isnan(res.table.loc["C", "above_a"])  # no threshold given for C
    assert res.table.loc["A", "share_above_a"] == pytest.approx(res.table.loc["A", "above_a"] / a.sum())
    # spot positions work like masks
    idx = region_composition(props, np.flatnonzero(disc))
    assert idx.n_a == disc.sum()


def test_composition_errors(coords):
    props, disc = _planted(coords)
    one = np.zeros(len(disc), bool)
    one[0] = True
    with pytest.raises(InputError, match="at least 2"):
        region_composition(props, one)
    with pytest.raises(InputError, match="covers"):
        region_composition(props, disc[:-1])
    with pytest.raises(InputError, match="unknown test"):
        region_composition(props, disc, test="t-test")
    with pytest.raises(InputError, match="unknown cell type"):
        region_composition(props, disc, thresholds={"Z": 0.1})
    with pytest.raises(InputError, match="NaN"):
        region_composition(props.assign(A=np.nan), disc)


# ------------------------------------------------------------------ shapes and text
def test_polygon_and_box(coords):
    square = spots_in_polygon(coords, [2.3, 9.7, 9.7, 2.3], [2.1, 2.1, 7.9, 7.9])
    expected = (coords[:, 0] > 2.3) & (coords[:, 0] < 9.7) & (coords[:, 1] > 2.1) & (coords[:, 1] < 7.9)
    assert square.sum() > 40
    assert (square == expected).all()
    triangle = spots_in_polygon(coords, [0.7, 20.7, 0.7], [0.1, 0.1, 20.1])
    assert (triangle == ((coords[:, 0] > 0.7) & (coords[:, 1] > 0.1)
                         & (coords[:, 0] + coords[:, 1] < 20.8))).all()
    box = spots_in_box(coords, (10, 2), (2, 8))  # either order; edges included
    assert (box == ((coords[:, 0] >= 2) & (coords[:, 0] <= 10) & (coords[:, 1] >= 2)
                    & (coords[:, 1] <= 8))).all()
    assert box.sum() > square.sum()
    with pytest.raises(InputError, match="at least 3"):
        spots_in_polygon(coords, [1, 2], [1, 2])


@pytest.mark.parametrize("kind", ["empty", "disc", "random", "all", "ends"])
def test_mask_text_roundtrip(coords, kind):
    n = len(coords)
    rng = np.random.default_rng(0)
    mask = {"empty": np.zeros(n, bool),
            "disc": np.hypot(*(coords - coords.mean(0)).T) < 6,
            "random": rng.random(n) < 0.3,
            "all": np.ones(n, bool),
            "ends": np.r_[True, np.zeros(n - 2, bool), True]}[kind]
    text = encode_mask(mask)
    assert text[0] in "rz" and all(c.isalnum() or c in "._-" for c in text)
    assert (decode_mask(text, n) == mask).all()
    if kind == "disc":  # a compact region of a grid read row by row: a few runs, short text
        assert text.startswith("r") and len(text) < 150
    if kind == "random":  # no runs: the compressed bitset is shorter
        assert text.startswith("z") and len(text) < n / 4


def test_mask_text_errors(coords):
    mask = np.hypot(*(coords - coords.mean(0)).T) < 6
    for text, n in ((encode_mask(mask), 100), ("r1.2.3", 50), ("zzzz", len(mask)), ("hello", 10),
                    ("r0.zz", 10)):
        with pytest.raises(InputError, match="damaged or belongs to other data"):
            decode_mask(text, n)


def test_region_names_and_labels():
    assert check_region_name("  tumour edge ") == "tumour edge"
    with pytest.raises(InputError, match="no name"):
        check_region_name("  ")
    with pytest.raises(InputError, match="already exists"):
        check_region_name("a", ["a"])
    with pytest.raises(InputError, match="unusual characters"):
        check_region_name("x" * 41)
    labels = region_labels({"a": np.array([1, 1, 0, 0], bool), "b": np.array([0, 1, 1, 0], bool)}, 4)
    assert list(labels) == ["a", "a|b", "b", ""]
    with pytest.raises(InputError, match="same spatial data"):
        region_labels({"a": np.ones(3, bool)}, 4)


# ------------------------------------------------------------------ co-localisation
def _smooth(coords, rng, n_bumps=6, width=4.0):
    centres = coords[rng.choice(len(coords), n_bumps, replace=False)]
    d2 = ((coords[:, None, :] - centres[None]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * width**2)).sum(1)


@pytest.fixture(scope="module")
def colocalised(coords):
    """A and B follow the same smooth field; C and D their own fields; E is spatial noise."""
    rng = np.random.default_rng(0)
    shared, fc, fd = (_smooth(coords, rng) for _ in range(3))
    raw = np.c_[shared + 0.1 * rng.random(len(coords)), shared + 0.1 * rng.random(len(coords)),
                fc, fd, 0.5 * rng.random(len(coords))] + 0.05
    return pd.DataFrame(raw / raw.sum(1, keepdims=True), columns=TYPES)


def test_planted_colocalised_pair_scores_highest(coords, colocalised):
    scores = cooccurrence_scores(colocalised, coords)
    assert scores.shape == (5, 5) and np.allclose(scores, scores.T)
    pairs = strongest_pairs(scores, within_spot_correlation(colocalised))
    assert set(pairs.iloc[0][["type_a", "type_b"]]) == {"A", "B"}
    assert pairs.iloc[0]["neighbour_score"] > 0.5 > pairs.iloc[1]["neighbour_score"] + 0.2
    assert len(pairs) == 10 and "within_spot" in pairs
    assert scores.loc["A", "A"] > 0.5  # a smooth field: strong spatial autocorrelation
    # spots shuffled: no neighbourhood structure left
    shuffled = colocalised.sample(frac=1.0, random_state=0).reset_index(drop=True)
    s2 = cooccurrence_scores(shuffled, coords).to_numpy()
    assert np.abs(s2).max() < 0.15


def test_cooccurrence_matches_dense_formula(coords, colocalised):
    w = spatial_knn_weights(coords)
    scores = cooccurrence_scores(colocalised, weights=w).to_numpy()
    dense = w.toarray()
    dense = dense + dense.T
    np.fill_diagonal(dense, 0)
    v = colocalised.to_numpy()
    z = (v - v.mean(0)) / v.std(0)
    np.testing.assert_allclose(scores, z.T @ dense @ z / dense.sum(), atol=1e-10)
    with pytest.raises(InputError, match="same spots"):
        cooccurrence_scores(colocalised.iloc[:-1], weights=w)
    with pytest.raises(InputError, match="coordinates"):
        cooccurrence_scores(colocalised)


def test_blend_colours_and_legends():
    two = blend_colors(np.array([[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0]]), vmax=[1, 1])
    assert two.tolist() == [[0, 0, 0], [255, 0, 255], [0, 255, 0], [255, 255, 255], [128, 0, 128]]
    three = blend_colors(np.array([[0.2, 0, 0], [0, 0.2, 0], [0, 0, 0.2], [0.2, 0.2, 0.2]]), vmax=[0.2] * 3)
    assert three.tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]
    auto = blend_colors(np.c_[np.linspace(0, 0.1, 101), np.linspace(0, 0.5, 101)])
    assert auto.max() == 255  # each type reaches full brightness at its own 99th percentile
    sq = blend_legend(2, steps=3)
    assert len(sq) == 9 and sq.loc[(sq.a == 1) & (sq.b == 1), "color"].item() == "#ffffff"
    tri = blend_legend(3, steps=5)
    assert len(tri) == 15 and tri.loc[tri.a == 1, "color"].item() == "#ff0000"
    assert tri.loc[(tri.x == 0.5) & (tri.c == 1), "color"].item() == "#0000ff"
    with pytest.raises(InputError, match="2 or 3"):
        blend_colors(np.zeros((3, 4)))


# ------------------------------------------------------------------ export
def test_export_bundle_carries_regions(tmp_path):
    import json

    import anndata as ad

    from destvi_core.analysis import export_bundle

    n = 12
    st = ad.AnnData(np.ones((n, 3), np.float32), obs=pd.DataFrame(index=[f"s{i}" for i in range(n)]))
    props = pd.DataFrame(np.full((n, 2), 0.5), index=st.obs_names, columns=["A", "B"])
    regions = {"tumour edge": np.arange(n) < 4, "core/left": (np.arange(n) >= 2) & (np.arange(n) < 6)}
    out = export_bundle(tmp_path / "b", st, props, regions=regions)
    back = ad.read_h5ad(out / "results.h5ad")
    assert back.obs["regions"].astype(str).tolist()[:7] == ["tumour edge", "tumour edge",
                                                             "tumour edge|core/left", "tumour edge|core/left",
                                                             "core/left", "core/left", ""]
    assert back.obs["region_tumour_edge"].tolist() == regions["tumour edge"].tolist()
    assert back.obs["region_core_left"].sum() == 4
    csv = pd.read_csv(out / "regions.csv", index_col=0)
    assert csv.columns.tolist() == ["tumour edge", "core/left"] and csv["core/left"].sum() == 4
    texts = json.loads((out / "parameters.json").read_text())["regions"]
    assert (decode_mask(texts["core/left"], n) == regions["core/left"]).all()
    st.obs["regions"] = "user's own column"  # never overwritten
    back = ad.read_h5ad(export_bundle(tmp_path / "c", st, props, regions=regions) / "results.h5ad")
    assert (back.obs["regions"] == "user's own column").all() and "destvi_regions" in back.obs
    with pytest.raises(InputError, match="same spatial data"):
        export_bundle(tmp_path / "d", st, props, regions={"x": np.ones(3, bool)})
