"""Scale behaviour of the engine: sparse minibatches, chunked inference, progress within long
epochs, and a 50,000-spot tiled slide trained, exported and thresholded end to end."""

from __future__ import annotations

import copy
import math

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from destvi_core.condscvi import CondSCVIModule
from destvi_core.destvi import DestVI, DestVIModule
from destvi_core.errors import TrainingCancelled
from destvi_core.nn_blocks import nb_log_prob_logits, nb_log_prob_rows
from destvi_core.tensors import SparseCounts
from destvi_core.training import TrainingConfig, run_training, take_batch


def test_nb_rows_equals_the_elementwise_likelihood():
    gen = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.full((40, 25), 1.5), generator=gen)
    x[3] = 0  # an empty row
    theta = torch.rand(40, 25, generator=gen) * 8 + 0.01
    logits = torch.randn(25, generator=gen)
    expected = nb_log_prob_logits(x.double(), theta.double(), logits.double()).sum(-1)
    np.testing.assert_allclose(nb_log_prob_rows(x, theta, logits).double(), expected, rtol=2e-5)
    csr = SparseCounts(sp.csr_matrix(x.numpy()))
    batch = csr.batch(torch.arange(40))
    torch.testing.assert_close(batch["x"], x)
    np.testing.assert_allclose(nb_log_prob_rows(x, theta, logits, batch["x_nz"],
                                                batch["x_log_factorial"]).double(),
                               expected, rtol=2e-5)
    full = torch.randn(40, 25, generator=gen)  # per-entry logits take the elementwise path
    np.testing.assert_allclose(nb_log_prob_rows(x, theta, full).double(),
                               nb_log_prob_logits(x.double(), theta.double(),
                                                  full.double()).sum(-1), rtol=2e-5)


def test_sparse_counts_gather_any_rows():
    rng = np.random.default_rng(0)
    dense = rng.poisson(0.4, (30, 12)).astype(np.float32)
    dense[7] = 0
    counts = SparseCounts(sp.csr_matrix(dense))
    rows = torch.tensor([7, 0, 29, 7, 13])
    x, nz = counts.gather(rows)
    np.testing.assert_array_equal(x.numpy(), dense[rows.numpy()])
    assert sorted(nz.tolist()) == sorted(np.flatnonzero(dense[rows.numpy()].ravel()).tolist())
    np.testing.assert_allclose(counts.log_factorial.numpy(),
                               np.array([sum(math.lgamma(v + 1) for v in row) for row in dense]),
                               rtol=1e-6)
    np.testing.assert_array_equal(counts.library.numpy(), dense.sum(1))
    empty = SparseCounts(sp.csr_matrix((4, 3), dtype=np.float32))
    x, nz = empty.gather(torch.arange(4))
    assert x.abs().sum() == 0 and nz.numel() == 0


def test_sparse_batch_training_equals_dense_training():
    """The same steps from CSR batches and from dense tensors give the same weights."""
    rng = np.random.default_rng(1)
    x = rng.poisson(1.2, (90, 30)).astype(np.float32)
    torch.manual_seed(0)
    sc = CondSCVIModule(30, 3, n_latent=2, n_hidden=16)
    module = DestVIModule(sc, 90, 2, 16, None)
    results = []
    for data in ({"x": SparseCounts(sp.csr_matrix(x)), "ind": torch.arange(90)},
                 {"x": torch.from_numpy(x), "ind": torch.arange(90)}):
        m = copy.deepcopy(module)
        torch.manual_seed(5)  # same dropout masks
        history = run_training(m, data, TrainingConfig(max_epochs=3, lr=3e-3, batch_size=32,
                                                       n_epochs_kl_warmup=2), "destvi")
        results.append((m.state_dict(), history))
    (sparse_state, sparse_hist), (dense_state, dense_hist) = results
    for key in sparse_state:
        torch.testing.assert_close(sparse_state[key], dense_state[key], rtol=1e-4, atol=1e-5)
    for a, b in zip(sparse_hist, dense_hist):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_chunked_inference_equals_unchunked(tiny_models):
    _, st_model = tiny_models
    idx = np.arange(0, st_model.adata.n_obs, 2)
    ct = st_model.cell_types[1]
    np.testing.assert_allclose(st_model.get_proportions(batch_size=7).to_numpy(),
                               st_model.get_proportions(batch_size=4096).to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(st_model.get_gamma(return_numpy=True, batch_size=5),
                               st_model.get_gamma(return_numpy=True), rtol=1e-5, atol=1e-6)
    one = st_model.get_scale_for_ct(ct, indices=idx, batch_size=11).to_numpy()
    np.testing.assert_allclose(one, st_model.get_scale_for_ct(ct, indices=idx).to_numpy(),
                               rtol=1e-5)
    np.testing.assert_allclose(st_model.mean_scale_for_ct(ct, indices=idx, batch_size=9),
                               one.astype(np.float64).mean(0), rtol=1e-5)
    seen = []
    st_model.get_proportions(batch_size=40, callback=seen.append)
    n_chunks = math.ceil(st_model.adata.n_obs / 40)
    assert [p.step for p in seen] == list(range(1, n_chunks + 1))
    assert all(p.phase == "inference" and p.n_steps == n_chunks for p in seen)
    assert seen[-1].eta_s == 0 and seen[-1].fraction == 1.0


def test_progress_within_long_epochs_and_responsive_cancel(tiny_data, tiny_models):
    sc_model, _ = tiny_models
    model = DestVI.from_rna_model(tiny_data.st, sc_model, vamp_prior_p=2, seed=0)
    seen = []
    model.train(max_epochs=2, batch_size=16, callback=seen.append, progress_interval_s=0.0)
    per_epoch = tiny_data.st.n_obs // 16 + (1 if tiny_data.st.n_obs % 16 >= 3 else 0)
    inside = [p for p in seen if not p.end_of_epoch]
    ends = [p for p in seen if p.end_of_epoch]
    assert [p.epoch for p in ends] == [1, 2]
    assert len(inside) == 2 * (per_epoch - 1)  # every step but the last of each epoch
    assert [p.step for p in seen] == list(range(1, 2 * per_epoch + 1))
    assert all(p.n_steps == 2 * per_epoch for p in seen)
    assert inside[0].epoch == 0 and math.isfinite(inside[0].loss["loss"])
    assert all(p.seconds_per_step > 0 for p in seen) and seen[-1].eta_s == 0
    assert [p.fraction for p in seen] == pytest.approx(
        [s / (2 * per_epoch) for s in range(1, 2 * per_epoch + 1)])

    calls = {"n": 0}

    def stop_mid_epoch():
        calls["n"] += 1
        return calls["n"] > 3  # long before the end of the first epoch

    fresh = DestVI.from_rna_model(tiny_data.st, sc_model, vamp_prior_p=2, seed=0)
    with pytest.raises(TrainingCancelled, match="epoch 1"):
        fresh.train(max_epochs=5, batch_size=16, should_stop=stop_mid_epoch)
    assert calls["n"] == 4 and not fresh.is_trained


def test_50k_tiled_slide_trains_exports_and_thresholds(tmp_path, capsys):
    """A 50,000-spot tiled slide through the CLI (a few hundred steps), then thresholds."""
    from destvi_core import analysis
    from destvi_core.cli import main
    from destvi_core.simulate import tiled_simulation

    sim = tiled_simulation(50_000, base_spots=500, n_cells=800, n_types=4, n_genes=150,
                           n_latent=2, n_markers=15, program_size=6, n_decoys=1)
    truth = sim.st.obsm["true_proportions"].copy()
    for key in [k for k in sim.st.obsm if k.startswith("true_")]:
        del sim.st.obsm[key]
    sim.st.uns.pop("simulation", None)
    sim.sc.write_h5ad(tmp_path / "sc.h5ad")
    sim.st.write_h5ad(tmp_path / "st.h5ad")
    code = main(["train", "--sc", str(tmp_path / "sc.h5ad"), "--st", str(tmp_path / "st.h5ad"),
                 "--label-key", "cell_type", "--out", str(tmp_path / "model"), "--no-cache",
                 "--no-hvg", "--device", "cpu", "--sc-epochs", "2", "--st-epochs", "1"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "DestVI 391 steps (1 epochs of 391)" in out  # 50,000 = 390 x 128 + 80
    code = main(["export", "--model", str(tmp_path / "model"), "--st", str(tmp_path / "st.h5ad"),
                 "--out", str(tmp_path / "result.h5ad")])
    assert code == 0, capsys.readouterr().err
    result = ad.read_h5ad(tmp_path / "result.h5ad")
    assert result.n_obs == 50_000 and result.X is None
    props = result.obsm["proportions"]
    np.testing.assert_allclose(props.sum(1), 1.0, atol=1e-9)
    # a few hundred steps already separate the types: better than uniform proportions
    rmse = float(np.sqrt(((props.to_numpy() - truth.to_numpy()) ** 2).mean()))
    uniform = float(np.sqrt(((0.25 - truth.to_numpy()) ** 2).mean()))
    assert rmse < 0.8 * uniform
    res = analysis.automatic_thresholds(props, result.obsm["spatial"], kind="secondary")
    assert set(res.thresholds) == set(props.columns)
    assert all(0 <= t < props[c].max() for c, t in res.thresholds.items())
