"""Tests of the command-line interface (destvi_core.cli, ``python -m destvi_core``)."""

from __future__ import annotations

import re

import json
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from conftest import TINY_SIM
from destvi_core import pipeline
from destvi_core.cli import CANCELLED_MESSAGE, main

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["B/plasma", "T cells", "Monocytes", "DC"]
TRAIN = ["--label-key", "cell_type", "--sc-epochs", "2", "--st-epochs", "2", "--device", "cpu",
         "--n-top-genes", "150"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny raw reference/spatial .h5ad files (a '/' in a cell-type name on purpose)."""
    from destvi_core.simulate import simulate_destvi

    sim = simulate_destvi(**{**TINY_SIM, "n_types": len(TYPES)}, type_names=TYPES)
    for key in [k for k in sim.st.obsm if k.startswith("true_")]:
        del sim.st.obsm[key]  # truth keys contain the '/' (not storable in h5ad)
    sim.st.uns.pop("simulation", None)
    root = tmp_path_factory.mktemp("cli_data")
    sim.sc.write_h5ad(root / "sc.h5ad")
    sim.st.write_h5ad(root / "st.h5ad")
    return {"sc": root / "sc.h5ad", "st": root / "st.h5ad", "root": root, "sim": sim}


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory):
    """A model directory written by ``train`` (with its own cache folder)."""
    out = tmp_path_factory.mktemp("cli_model") / "model"
    cache = tmp_path_factory.mktemp("cli_cache")
    code = main(["train", "--sc", str(files["sc"]), "--st", str(files["st"]), "--out", str(out),
                 "--cache-dir", str(cache), *TRAIN])
    assert code == 0
    return {"model": out, "cache": cache}


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    assert lines[-1].startswith("error: ")
    return lines[-1]


# ============================================================================================
# entry point
# ============================================================================================

def test_python_m_help_and_usage_error_exit_codes():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "destvi_core", "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    for command in ("demo", "train", "export", "jobs", "cache"):
        assert command in done.stdout
    done = subprocess.run([sys.executable, "-m", "destvi_core", "export", "--model", "nowhere",
                           "--st", "nowhere.h5ad", "--out", "r.h5ad"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: nowhere is not a DestVI")


def test_argparse_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["train", "--sc", "a.h5ad"]) == 2
    assert "required" in capsys.readouterr().err
    assert main(["train", "--sc", "a", "--st", "b", "--label-key", "c", "--out", "d",
                 "--preset", "turbo"]) == 2
    assert main(["cache"]) == 2
    assert main(["--help"]) == 0


# ============================================================================================
# demo
# ============================================================================================

def test_demo_writes_three_files(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--seed", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("sc.h5ad", "st.h5ad", "genesets.gmt"):
        assert (tmp_path / "demo" / name).is_file()
        assert name in out
    st = ad.read_h5ad(tmp_path / "demo" / "st.h5ad")
    assert st.n_obs == 1000 and "spatial" in st.obsm


# ============================================================================================
# train / export
# ============================================================================================

def test_train_writes_model_dir_with_metadata(trained, files):
    model = trained["model"]
    for name in ("metadata.json", "condscvi.pt", "destvi.pt"):
        assert (model / name).is_file()
    meta = json.loads((model / "metadata.json").read_text())
    extra = meta["extra"]
    assert extra["preprocessing"] == {"labels_key": "cell_type", "layer_sc": None,
                                      "layer_st": None, "spatial_key": "spatial",
                                      "n_top_genes": 150, "hvg": True}
    assert extra["inputs"] == {"sc": str(files["sc"].resolve()), "st": str(files["st"].resolve())}
    assert extra["params"]["sc_epochs"] == 2 and extra["params"]["st_epochs"] == 2
    assert extra["params"]["device"] == "cpu"
    assert len(meta["genes"]) == 150
    assert meta["cell_types"] == TYPES
    assert len(meta["condscvi"]["history"]) == 2 and len(meta["destvi"]["history"]) == 2


def test_train_prints_summary_and_hits_cache(trained, files, tmp_path, capsys):
    out = tmp_path / "again"
    code = main(["train", "--sc", str(files["sc"]), "--st", str(files["st"]), "--out", str(out),
                 "--cache-dir", str(trained["cache"]), *TRAIN])
    assert code == 0
    captured = capsys.readouterr()
    assert "Reference: 600 cells x 200 genes, 4 cell types in obs['cell_type']" in captured.out
    assert "Shared genes: 200; used: 150 after HVG selection" in captured.out
    assert "Loaded the trained models from the cache" in captured.out
    assert (out / "metadata.json").is_file()
    assert main(["cache", "list", "--cache-dir", str(trained["cache"])]) == 0
    listing = capsys.readouterr().out
    assert "1 entries" in listing and "B/plasma" in listing


def test_train_progress_bar_has_two_phases(files, tmp_path, capsys):
    code = main(["train", "--sc", str(files["sc"]), "--st", str(files["st"]),
                 "--out", str(tmp_path / "m"), "--no-cache", *TRAIN[:-2], "--no-hvg",
                 "--sc-epochs", "1", "--st-epochs", "1"])
    assert code == 0
    err = capsys.readouterr().err
    assert "Reference model (CondSCVI)" in err and "Spatial model (DestVI)" in err
    assert "loss=" in err
    meta = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert meta["extra"]["preprocessing"]["hvg"] is False and len(meta["genes"]) == 200


def test_train_reports_small_data_step_floor(files, tmp_path, capsys):
    code = main(["train", "--sc", str(files["sc"]), "--st", str(files["st"]),
                 "--out", str(tmp_path / "m"), "--no-cache", *TRAIN[:-2], "--no-hvg",
                 "--sc-epochs", "1", "--st-epochs", "1", "--st-min-steps", "6"])
    assert code == 0
    out = capsys.readouterr().out
    # 150 spots = 2 steps per epoch: 1 epoch is stretched to 3 epochs (6 steps)
    assert re.search(r"DestVI 6 steps \(3 epochs of 2\)", out), out
    assert "at least 6 steps: 1 epochs would be 2 steps" in out, out


def test_train_says_the_schedule_before_training(files, tmp_path, capsys, monkeypatch):
    """Default preset: epochs from steps, and the plan (with a measured time) comes first."""
    from destvi_core import schedule

    monkeypatch.setattr(schedule, "ST_MIN_STEPS", 4)  # keep the test short: 2 epochs
    monkeypatch.setattr(schedule, "ST_MAX_STEPS", 4)
    monkeypatch.setattr(schedule, "SC_MAX_STEPS", 10)
    code = main(["train", "--sc", str(files["sc"]), "--st", str(files["st"]),
                 "--out", str(tmp_path / "m"), "--no-cache", "--label-key", "cell_type",
                 "--device", "cpu", "--no-hvg"])
    assert code == 0
    captured = capsys.readouterr()
    line = next(x for x in captured.out.splitlines() if x.startswith("Schedule"))
    assert "preset default" in line
    assert re.search(r"DestVI 4 steps \(2 epochs of 2\) \+ CondSCVI 10 steps \(2 epochs of 5\), "
                     r"about \d+ s here on CPU", line), line
    assert "at most 4 steps: 2,500 epochs would be 5,000 steps" in captured.out
    assert "ms per reference step" in captured.out
    assert "step" in captured.err and "epoch=2/2" in captured.err
    meta = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert len(meta["destvi"]["history"]) == 2 and len(meta["condscvi"]["history"]) == 2
    assert meta["destvi"]["train"]["n_steps_kl_warmup"] == 1  # 8 % of 4 steps, at least 1


def _check_result(path: Path, n_spots: int):
    res = ad.read_h5ad(path)
    assert res.n_obs == n_spots and res.n_vars == 150
    props = res.obsm["proportions"]
    assert list(props.columns) == ["B_plasma", "T cells", "Monocytes", "DC"]
    assert "noise_term" not in props.columns
    np.testing.assert_allclose(props.sum(1), 1.0, atol=1e-9)
    assert (props.to_numpy() >= 0).all()
    for key in ("gamma_B_plasma", "gamma_T_cells", "gamma_Monocytes", "gamma_DC"):
        assert np.asarray(res.obsm[key]).shape == (n_spots, 5)
    uns = res.uns["destvi"]
    assert list(uns["cell_types"]) == TYPES
    assert uns["labels_key"] == "cell_type"
    assert "sc_counts_sha256" in uns["data"]
    return res


def test_export_writes_proportions_and_gamma(trained, files, tmp_path, capsys):
    out = tmp_path / "res" / "result.h5ad"
    code = main(["export", "--model", str(trained["model"]), "--st", str(files["st"]),
                 "--out", str(out), "--device", "cpu"])  # reference from the metadata
    assert code == 0, capsys.readouterr().err
    res = _check_result(out, 150)
    assert res.X is None  # no dense spots x genes copy: the file scales with spots x types
    assert "without the counts" in capsys.readouterr().out
    # the exported proportions are those of the saved model
    from destvi_core.data import prepare_inputs
    from destvi_core.persistence import load_models

    prep = prepare_inputs(ad.read_h5ad(files["sc"]), ad.read_h5ad(files["st"]), n_top_genes=150)
    _, st_model = load_models(trained["model"], prep.sc, prep.st, device="cpu")
    np.testing.assert_allclose(res.obsm["proportions"].to_numpy(),
                               st_model.get_proportions().to_numpy(), rtol=1e-5)
    # explicit --sc gives the same file content
    out2 = tmp_path / "result2.h5ad"
    assert main(["export", "--model", str(trained["model"]), "--st", str(files["st"]),
                 "--sc", str(files["sc"]), "--out", str(out2)]) == 0
    np.testing.assert_array_equal(ad.read_h5ad(out2).obsm["proportions"].to_numpy(),
                                  res.obsm["proportions"].to_numpy())
    # --with-counts keeps the (sparse) counts of the prepared spatial data
    out3 = tmp_path / "result3.h5ad"
    assert main(["export", "--model", str(trained["model"]), "--st", str(files["st"]),
                 "--out", str(out3), "--with-counts"]) == 0
    with_counts = ad.read_h5ad(out3)
    assert sp.issparse(with_counts.X)
    np.testing.assert_array_equal(with_counts.X.toarray(), prep.st.X.toarray())
    assert out.stat().st_size < out3.stat().st_size


def test_export_without_reference_is_error(trained, files, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(trained["model"], model)
    meta = json.loads((model / "metadata.json").read_text())
    meta["extra"]["inputs"]["sc"] = str(tmp_path / "moved_away.h5ad")
    (model / "metadata.json").write_text(json.dumps(meta))
    code = main(["export", "--model", str(model), "--st", str(files["st"]),
                 "--out", str(tmp_path / "r.h5ad")])
    assert code == 2
    line = _error_line(capsys)
    assert "moved_away.h5ad does not exist" in line and "--sc" in line
    assert not (tmp_path / "r.h5ad").exists()


def test_export_against_mismatched_data_is_error(trained, files, tmp_path, capsys):
    st = ad.read_h5ad(files["st"])
    x = sp.csr_matrix(st.X, copy=True)
    x.data[:10] += 1
    st.X = x
    st.write_h5ad(tmp_path / "other_st.h5ad")
    code = main(["export", "--model", str(trained["model"]), "--st",
                 str(tmp_path / "other_st.h5ad"), "--out", str(tmp_path / "r.h5ad")])
    assert code == 2
    assert "spatial counts differ" in _error_line(capsys)
    assert not (tmp_path / "r.h5ad").exists()


def test_export_of_missing_model_is_error(files, tmp_path, capsys):
    code = main(["export", "--model", str(tmp_path / "none"), "--st", str(files["st"]),
                 "--out", str(tmp_path / "r.h5ad")])
    assert code == 2
    assert "metadata.json is missing" in _error_line(capsys)


# ============================================================================================
# bad input
# ============================================================================================

def test_train_missing_label_column(files, tmp_path, capsys):
    code = main(["train", "--sc", str(files["sc"]), "--st", str(files["st"]), "--out",
                 str(tmp_path / "m"), "--no-cache", *TRAIN[2:], "--label-key", "missing_column"])
    assert code == 2
    line = _error_line(capsys)
    assert "no obs column 'missing_column'" in line and "cell_type" in line
    assert not (tmp_path / "m").exists()


def test_train_missing_file(files, tmp_path, capsys):
    code = main(["train", "--sc", str(tmp_path / "nope.h5ad"), "--st", str(files["st"]),
                 "--out", str(tmp_path / "m"), "--no-cache", *TRAIN])
    assert code == 2
    assert "nope.h5ad does not exist" in _error_line(capsys)


def test_train_normalised_counts(files, tmp_path, capsys):
    sc = ad.read_h5ad(files["sc"])
    x = sc.X.toarray()
    x = np.log1p(x / x.sum(1, keepdims=True) * 1e4)
    sc.X = sp.csr_matrix(x.astype(np.float32))
    sc.write_h5ad(tmp_path / "norm.h5ad")
    code = main(["train", "--sc", str(tmp_path / "norm.h5ad"), "--st", str(files["st"]),
                 "--out", str(tmp_path / "m"), "--no-cache", *TRAIN])
    assert code == 2
    line = _error_line(capsys)
    assert "non-integer" in line and "raw" in line
    assert not (tmp_path / "m").exists()


def test_train_cuda_without_gpu(files, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    code = main(["train", "--sc", str(files["sc"]), "--st", str(files["st"]), "--out",
                 str(tmp_path / "m"), "--no-cache", *TRAIN, "--device", "cuda"])
    assert code == 2
    assert "no CUDA GPU" in _error_line(capsys)


def test_ctrl_c_during_training_and_warnings_printed(files, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "fit_models", interrupted)
    sc = ad.read_h5ad(files["sc"])
    labels = sc.obs["cell_type"].astype(str).to_numpy().copy()
    labels[:4] = "Rare"
    sc.obs["cell_type"] = labels
    sc.write_h5ad(tmp_path / "rare.h5ad")
    out = tmp_path / "m"
    code = main(["train", "--sc", str(tmp_path / "rare.h5ad"), "--st", str(files["st"]),
                 "--out", str(out), "--no-cache", *TRAIN])
    assert code == 130
    captured = capsys.readouterr()
    assert CANCELLED_MESSAGE in captured.err and "Traceback" not in captured.err
    assert not out.exists()
    warned = [line for line in captured.out.splitlines() if line.startswith("Warning:")]
    assert len(warned) == 1  # printed once although caught twice (report + warnings)
    assert "dropped cell types with fewer than 10 reference cells: Rare (4)" in warned[0]


# ============================================================================================
# cache
# ============================================================================================

def test_cache_list_and_clear(trained, files, tmp_path, capsys):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(trained["cache"], cache)
    key = next(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert main(["cache", "list", "--cache-dir", str(cache)]) == 0
    assert key[:12] in capsys.readouterr().out
    assert main(["cache", "clear", "--key", "0" * 64, "--cache-dir", str(cache)]) == 0
    assert "No cache entry" in capsys.readouterr().out
    assert main(["cache", "clear", "--key", key, "--cache-dir", str(cache)]) == 0
    assert "Removed cache entry" in capsys.readouterr().out
    assert not (cache / key).exists()
    shutil.copytree(trained["cache"], cache, dirs_exist_ok=True)
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert "Removed 1 cache entries" in capsys.readouterr().out
    assert main(["cache", "list", "--cache-dir", str(cache)]) == 0
    assert "is empty" in capsys.readouterr().out
