"""Result bundle: h5ad + CSV + JSON, and the zip for downloads."""

import io
import json
import zipfile

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from destvi_core.analysis import bundle_zip, export_bundle, json_safe
from destvi_core.errors import InputError


def _st(n=30):
    rng = np.random.default_rng(0)
    a = ad.AnnData(rng.poisson(2, (n, 8)).astype(np.float32),
                   obs=pd.DataFrame(index=[f"s{i}" for i in range(n)]),
                   var=pd.DataFrame(index=[f"g{i}" for i in range(8)]))
    a.obsm["spatial"] = rng.random((n, 2))
    return a


def test_bundle_roundtrip(tmp_path):
    st = _st()
    names = st.obs_names
    rng = np.random.default_rng(1)
    props = pd.DataFrame(rng.dirichlet(np.ones(3), 30), index=names, columns=["B cells", "T/NK", "Mono"])
    gamma = {ct: pd.DataFrame(rng.normal(size=(30, 5)), index=names) for ct in props}  # int columns
    spca = {"T/NK": (list(names[:10]), rng.normal(size=(10, 2)), ["#ff0000"] * 10)}
    de = {"T/NK left vs right": pd.DataFrame({"log2fc": [1.0, -0.5], "padj": [0.01, np.nan]},
                                              index=pd.Index(["g1", "g2"], name="gene"))}
    enr = {"T/NK pc1+": pd.DataFrame({"term": ["X"], "p_value": [0.1]})}
    params = {"epochs": np.int64(10), "lr": np.float32(1e-3), "kind": "secondary", "nan": float("nan"),
              "ids": np.arange(3), "nested": {"a/b": [1, "x", None]}}
    out = export_bundle(tmp_path / "bundle", st, props, thresholds={"B cells": 0.1, "T/NK": np.float64(0.2)},
                        gamma=gamma, spca=spca, de_results=de, enrichment=enr, parameters=params,
                        metadata={"data": tmp_path / "x.h5ad"})
    files = {p.name for p in out.iterdir()}
    assert {"results.h5ad", "proportions.csv", "thresholds.csv", "parameters.json",
            "de_T_NK_left_vs_right.csv", "enrichment_T_NK_pc1.csv"} <= files
    assert not any(f.endswith(".tmp") for f in files)
    back = ad.read_h5ad(out / "results.h5ad")
    assert back.X is None and back.n_vars == 8  # counts only on request
    assert back.obsm["spatial"].shape == (30, 2)
    np.testing.assert_allclose(back.obsm["proportions"].to_numpy(), props.to_numpy())
    assert list(back.obsm["proportions"].columns) == ["B cells", "T_NK", "Mono"]
    assert list(back.uns["destvi"]["cell_types"]) == ["B cells", "T/NK", "Mono"]
    assert pd.read_csv(out / "proportions.csv", index_col=0).columns.tolist() == ["B cells", "T/NK", "Mono"]
    assert back.obsm["gamma_T_NK"].shape == (30, 5)
    assert back.obs["contains_B_cells"].tolist() == (props["B cells"] > 0.1).tolist()
    assert np.isnan(back.obs["spca_T_NK_1"].iloc[20]) and back.obs["spca_T_NK_color"].iloc[0] == "#ff0000"
    info = back.uns["destvi"]
    assert info["parameters"]["kind"] == "secondary" and int(info["parameters"]["epochs"]) == 10
    meta = json.loads((out / "parameters.json").read_text())
    assert meta["parameters"]["nan"] is None and meta["parameters"]["ids"] == [0, 1, 2]
    assert "numpy" in meta["versions"] and "torch" in meta["versions"]
    de_back = pd.read_csv(out / "de_T_NK_left_vs_right.csv", index_col=0)
    assert de_back.index.tolist() == ["g1", "g2"]
    blob = bundle_zip(out)
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        assert set(zf.namelist()) == files


def test_counts_on_request(tmp_path):
    st = _st()
    props = pd.DataFrame(np.full((30, 2), 0.5), index=st.obs_names, columns=["A", "B"])
    out = export_bundle(tmp_path / "b", st, props, include_counts=True)
    back = ad.read_h5ad(out / "results.h5ad")
    np.testing.assert_array_equal(back.X, st.X)
    assert json.loads((out / "parameters.json").read_text())["counts_included"] is True


def test_positional_proportions_and_errors(tmp_path):
    st = _st()
    props = pd.DataFrame(np.full((30, 2), 0.5), columns=["A", "B"])  # RangeIndex -> positional
    out = export_bundle(tmp_path / "b", st, props)
    assert ad.read_h5ad(out / "results.h5ad").obsm["proportions"].index.tolist() == list(st.obs_names)
    with pytest.raises(InputError, match="rows"):
        export_bundle(tmp_path / "c", st, props.iloc[:5])
    with pytest.raises(InputError, match="unknown cell type"):
        export_bundle(tmp_path / "d", st, props, thresholds={"Z": 0.1})
    with pytest.raises(InputError, match="does not exist"):
        bundle_zip(tmp_path / "nope")


def test_json_safe():
    assert json_safe({1: np.float32(0.5), "b": (np.bool_(True), np.inf)}) == {"1": 0.5, "b": [True, None]}
