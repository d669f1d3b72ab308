"""Tests of saving and loading a trained model pair (destvi_core.persistence)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from destvi_core import persistence
from destvi_core.errors import CorruptedModelError, ModelMismatchError
from destvi_core.persistence import load_models, read_metadata, save_models


@pytest.fixture(scope="module")
def saved(tiny_models, tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    sc_model, st_model = tiny_models
    save_models(path, sc_model, st_model, extra_metadata={"note": "tiny", "n": np.int64(3)})
    return path


def _copy_model(saved, tmp_path):
    import shutil

    dest = tmp_path / "model"
    shutil.copytree(saved, dest)
    return dest


def test_round_trip_gives_identical_results(saved, tiny_models, tiny_data):
    sc_model, st_model = tiny_models
    sc2, st2 = load_models(saved, tiny_data.sc, tiny_data.st, device="cpu")
    assert st2.cell_types == st_model.cell_types and st2.genes == st_model.genes
    np.testing.assert_array_equal(st2.get_proportions().to_numpy(),
                                  st_model.get_proportions().to_numpy())
    np.testing.assert_array_equal(st2.get_gamma(return_numpy=True),
                                  st_model.get_gamma(return_numpy=True))
    ct = st_model.cell_types[2]
    np.testing.assert_array_equal(st2.get_scale_for_ct(ct).to_numpy(),
                                  st_model.get_scale_for_ct(ct).to_numpy())
    np.testing.assert_array_equal(sc2.get_latent_representation(),
                                  sc_model.get_latent_representation())
    assert st2.history == st_model.history and sc2.history == sc_model.history
    assert st2.train_params == st_model.train_params
    assert st2.hparams["amortization"] == "both" and st2.is_trained and sc2.is_trained
    assert st2.module.use_vamp
    torch.testing.assert_close(st2.module.mean_vprior, st_model.module.mean_vprior)
    torch.testing.assert_close(st2.module.mp_vprior, st_model.module.mp_vprior)
    assert not st2.module.training  # loaded in eval mode


def test_metadata_content(saved, tiny_models, tiny_data):
    sc_model, st_model = tiny_models
    meta = read_metadata(saved)
    assert meta["format_version"] == persistence.FORMAT_VERSION
    for key in ("destvi_studio", "torch", "numpy", "scipy", "anndata", "scikit-learn", "python"):
        assert isinstance(meta["versions"][key], str) and meta["versions"][key]
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["seed"] == 0 and meta["condscvi"]["seed"] == 0 and meta["destvi"]["seed"] == 0
    assert meta["labels_key"] == "cell_type"
    assert meta["genes"] == list(tiny_data.sc.var_names)
    assert meta["cell_types"] == sc_model.cell_types
    assert meta["condscvi"]["hparams"] == {"n_latent": 3, "n_hidden": 32, "n_layers": 2,
                                           "dropout_rate": 0.05, "weight_obs": False,
                                           "init": "data"}
    assert meta["destvi"]["hparams"]["vamp_prior_p"] == 5
    assert meta["destvi"]["prior_shape"] == [4, 5, 3]
    assert meta["condscvi"]["train"]["max_epochs"] == 3
    assert len(meta["condscvi"]["history"]) == 3 and len(meta["destvi"]["history"]) == 3
    data = meta["data"]
    for key in ("sc_counts_sha256", "st_counts_sha256", "sc_labels_sha256", "genes_sha256"):
        assert re.fullmatch(r"[0-9a-f]{64}", data[key]), key
    assert (data["n_cells"], data["n_spots"], data["n_genes"]) == (
        tiny_data.sc.n_obs, tiny_data.st.n_obs, tiny_data.sc.n_vars)
    assert meta["extra"] == {"note": "tiny", "n": 3}
    assert meta["layers"] == {"sc": None, "st": None}


def test_weights_load_with_weights_only(saved, tiny_models):
    sc_model, st_model = tiny_models
    for fname, module in ((persistence.SC_FILE, sc_model.module),
                          (persistence.ST_FILE, st_model.module)):
        state = torch.load(saved / fname, map_location="cpu", weights_only=True)
        assert set(state) == set(module.state_dict())
        for key, value in module.state_dict().items():
            torch.testing.assert_close(state[key], value.cpu(), rtol=0, atol=0)


def test_load_against_other_genes_is_mismatch(saved, tiny_data):
    sc, st = tiny_data.sc[:, :150].copy(), tiny_data.st[:, :150].copy()
    with pytest.raises(ModelMismatchError, match="genes"):
        load_models(saved, sc, st, device="cpu")
    reordered = list(tiny_data.sc.var_names[::-1])
    with pytest.raises(ModelMismatchError, match="genes"):
        load_models(saved, tiny_data.sc[:, reordered].copy(), tiny_data.st[:, reordered].copy(),
                    device="cpu")


@pytest.mark.parametrize("which,what", [("st", "spatial counts"), ("sc", "reference counts")])
def test_load_against_other_counts_is_mismatch(saved, tiny_data, which, what):
    sc, st = tiny_data.sc.copy(), tiny_data.st.copy()
    target = st if which == "st" else sc
    x = target.X.tocsr(copy=True)
    x.data[0] += 1
    target.X = x
    with pytest.raises(ModelMismatchError, match=what):
        load_models(saved, sc, st, device="cpu")


def test_load_against_other_labels_is_mismatch(saved, tiny_data):
    sc = tiny_data.sc.copy()
    labels = sc.obs["cell_type"].astype(str).to_numpy().copy()
    other = int(np.flatnonzero(labels != labels[0])[0])
    labels[0], labels[other] = labels[other], labels[0]  # same types, two cells swapped
    sc.obs["cell_type"] = labels
    with pytest.raises(ModelMismatchError, match="labels"):
        load_models(saved, sc, tiny_data.st, device="cpu")
    sc.obs = sc.obs.rename(columns={"cell_type": "celltype"})
    with pytest.raises(ModelMismatchError, match="cell_type"):
        load_models(saved, sc, tiny_data.st, device="cpu")


def test_truncated_weights_are_corrupted(saved, tiny_data, tmp_path):
    model = _copy_model(saved, tmp_path)
    blob = (model / persistence.ST_FILE).read_bytes()
    (model / persistence.ST_FILE).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorruptedModelError, match="destvi.pt"):
        load_models(model, tiny_data.sc, tiny_data.st, device="cpu")


def test_missing_weights_or_metadata_are_corrupted(saved, tiny_data, tmp_path):
    model = _copy_model(saved, tmp_path)
    (model / persistence.SC_FILE).unlink()
    with pytest.raises(CorruptedModelError, match="condscvi.pt is missing"):
        load_models(model, tiny_data.sc, tiny_data.st, device="cpu")
    (model / persistence.META_FILE).unlink()
    with pytest.raises(CorruptedModelError, match="metadata.json is missing"):
        load_models(model, tiny_data.sc, tiny_data.st, device="cpu")
    with pytest.raises(CorruptedModelError):
        read_metadata(tmp_path / "does-not-exist")


def test_unreadable_or_incompatible_metadata_is_corrupted(saved, tmp_path):
    model = _copy_model(saved, tmp_path)
    meta_path = model / persistence.META_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta)[:100])
    with pytest.raises(CorruptedModelError, match="unreadable"):
        read_metadata(model)
    meta_path.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(CorruptedModelError, match="incompatible"):
        read_metadata(model)


def test_weights_not_matching_metadata_are_corrupted(saved, tiny_data, tmp_path):
    model = _copy_model(saved, tmp_path)
    meta_path = model / persistence.META_FILE
    meta = json.loads(meta_path.read_text())
    meta["condscvi"]["hparams"]["n_hidden"] = 16
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CorruptedModelError, match="do not fit"):
        load_models(model, tiny_data.sc, tiny_data.st, device="cpu")
