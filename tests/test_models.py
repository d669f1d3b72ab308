"""Tests of the CondSCVI / DestVI models, the training loop and the pipeline (spec sections 1-3, 6).

Small synthetic data (tests/conftest.py), CPU, a few epochs.
"""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_params
from destvi_core.condscvi import CondSCVI, CondSCVIModule
from destvi_core.destvi import AMORTIZATIONS, DestVI, DestVIModule
from destvi_core.errors import DestVIWarning, InputError, TrainingCancelled
from destvi_core.nn_blocks import nb_log_prob_logits
from destvi_core.pipeline import (TrainingParams, preset, spatial_schedule, train_models)
from destvi_core.training import (TrainingProgress, kl_weight_schedule, minibatches)


# ============================================================================================
# building blocks
# ============================================================================================

def test_nb_log_prob_matches_torch_negative_binomial():
    gen = torch.Generator().manual_seed(0)
    total_count = torch.rand(50, 30, generator=gen, dtype=torch.float64) * 20 + 0.05
    logits = torch.randn(30, generator=gen, dtype=torch.float64) * 2
    x = torch.poisson(torch.full((50, 30), 4.0, dtype=torch.float64), generator=gen)
    ours = nb_log_prob_logits(x, total_count, logits)
    ref = torch.distributions.NegativeBinomial(total_count, logits=logits).log_prob(x)
    assert ours.shape == (50, 30)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    # float32, as used in training
    torch.testing.assert_close(nb_log_prob_logits(x.float(), total_count.float(), logits.float()),
                               ref.float(), atol=1e-4, rtol=1e-5)


def test_nb_rates_are_additive_with_shared_logit():
    """NB(r1, o) * NB(r2, o) (convolution) == NB(r1 + r2, o): why the spot rate is a sum."""
    k = torch.arange(0, 400, dtype=torch.float64)
    o = torch.tensor(0.3, dtype=torch.float64)
    r1, r2 = torch.tensor(2.5, dtype=torch.float64), torch.tensor(4.0, dtype=torch.float64)
    p1 = nb_log_prob_logits(k, r1, o).exp().numpy()
    p2 = nb_log_prob_logits(k, r2, o).exp().numpy()
    conv = np.convolve(p1, p2)[:len(k)]
    p12 = nb_log_prob_logits(k, r1 + r2, o).exp().numpy()
    assert p12.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(conv, p12, atol=1e-7)


def test_kl_weight_schedule_values():
    assert kl_weight_schedule(0, 400) == 0.0
    assert kl_weight_schedule(1, 400) == pytest.approx(1 / 400)
    assert kl_weight_schedule(200, 400) == pytest.approx(0.5)
    assert kl_weight_schedule(299, 400) == pytest.approx(299 / 400)
    assert kl_weight_schedule(400, 400) == 1.0
    assert kl_weight_schedule(1000, 200) == 1.0
    assert kl_weight_schedule(3, None) == 1.0
    assert kl_weight_schedule(3, 0) == 1.0


def test_minibatches_drop_last_batch_smaller_than_three():
    gen = torch.Generator().manual_seed(0)
    dev = torch.device("cpu")
    sizes = [len(b) for b in minibatches(130, 64, gen, dev)]  # last batch would have 2
    assert sizes == [64, 64]
    sizes = [len(b) for b in minibatches(131, 64, gen, dev)]  # last batch has 3: kept
    assert sizes == [64, 64, 3]
    assert [len(b) for b in minibatches(2, 64, gen, dev)] == [2]  # a lone small batch is kept
    batches = list(minibatches(131, 64, torch.Generator().manual_seed(1), dev))
    everything = torch.cat(batches)
    assert sorted(everything.tolist()) == list(range(131))  # a permutation, no repeats


# ============================================================================================
# DestVI module pieces on a hand-built module
# ============================================================================================

def _toy_module(n_genes=7, n_labels=3, n_latent=2, n_spots=5, amortization="both", prior=None):
    torch.manual_seed(0)
    sc = CondSCVIModule(n_genes, n_labels, n_latent=n_latent, n_hidden=8)
    return sc, DestVIModule(sc, n_spots, n_latent, 8, prior, amortization=amortization)


class _FixedOutput(nn.Module):
    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out[: x.shape[0]]


def test_spot_gamma_amortized_unit_order_is_i_times_c_plus_c():
    _, module = _toy_module(n_labels=3, n_latent=2)
    d, c, m = 2, 3, 4
    out = torch.tensor([[100.0 * s + k for k in range(d * c)] for s in range(m)])
    module.gamma_encoder = _FixedOutput(out)
    gamma = module.spot_gamma(torch.zeros(m, 7), torch.arange(m))
    assert gamma.shape == (m, d, c)
    for s in range(m):
        for i in range(d):
            for ct in range(c):
                assert gamma[s, i, ct].item() == 100.0 * s + i * c + ct


def test_spot_gamma_and_abundance_non_amortized_index_parameters():
    _, module = _toy_module(amortization="none", n_spots=5)
    ind = torch.tensor([4, 0, 2])
    gamma = module.spot_gamma(torch.zeros(3, 7), ind)
    assert gamma.shape == (3, 2, 3)
    for row, s in enumerate(ind.tolist()):
        torch.testing.assert_close(gamma[row], module.gamma[:, :, s])
    v = module.spot_abundance(torch.zeros(3, 7), ind)
    torch.testing.assert_close(v, F.softplus(module.V[:, ind].T))
    assert v.shape == (3, 4)  # C + 1 (noise)


def test_type_profiles_decode_each_type_with_its_label():
    sc, module = _toy_module()
    sc.eval()
    module.eval()
    gamma = torch.randn(4, 2, 3)
    prof = module.type_profiles(gamma)
    assert prof.shape == (4, 3, 7)
    for ct in range(3):
        expected = sc.decode(gamma[:, :, ct], torch.full((4,), ct))
        torch.testing.assert_close(prof[:, ct], expected)


def test_destvi_loss_equals_hand_computation():
    sc, module = _toy_module(amortization="none", n_spots=5)
    module.l1_reg = 2.0
    sc.eval()
    module.eval()  # no dropout in the frozen decoder
    gen = torch.Generator().manual_seed(3)
    x = torch.poisson(torch.full((5, 7), 3.0), generator=gen)
    ind = torch.arange(5)
    kl_weight, n_obs = 0.3, 11
    loss, terms = module.loss({"x": x, "ind": ind}, kl_weight, n_obs)

    lib = x.sum(1, keepdim=True)
    v = F.softplus(module.V.T)  # [S, C+1]
    gamma = module.gamma.permute(2, 0, 1)  # [S, d, C]
    rate = torch.zeros(5, 7)
    for ct in range(3):
        f = sc.decode(gamma[:, :, ct], torch.full((5,), ct))
        rate += v[:, ct:ct + 1] * torch.exp(module.beta) * f
    rate += v[:, 3:4] * F.softplus(module.eta)
    nb = torch.distributions.NegativeBinomial(lib * rate, logits=module.px_o)
    recon = -nb.log_prob(x).sum(1)
    kl = -torch.distributions.Normal(0.0, 1.0).log_prob(gamma).sum((1, 2))
    sparsity = 2.0 * v.abs().mean(1)
    glob = (-module.eta_reg * torch.distributions.Normal(0.0, 1.0).log_prob(module.eta).sum()
            + module.beta_reg * torch.var(module.beta))
    expected = n_obs * ((recon + kl_weight * (kl + sparsity)).mean() + glob)
    torch.testing.assert_close(terms["reconstruction"], recon, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(terms["kl_local"], kl)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-3)


def test_gamma_log_prior_vamp_mixture():
    mean = np.zeros((3, 2, 2), np.float32)
    mean[:, 1] = 1.0
    var = np.ones((3, 2, 2), np.float32)
    weights = np.array([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]], np.float32)
    _, module = _toy_module(prior=(mean, var, weights))
    g = torch.zeros(1, 2, 3)
    lp = module.gamma_log_prior(g)
    n0 = torch.distributions.Normal(0.0, 1.0 + 1e-4)
    n1 = torch.distributions.Normal(1.0, 1.0 + 1e-4)
    comp0 = n0.log_prob(torch.zeros(2)).sum()
    comp1 = n1.log_prob(torch.zeros(2)).sum()
    expected = (torch.logsumexp(torch.stack([comp0 + math.log(0.25), comp1 + math.log(0.75)]), 0)
                + comp0  # type 1: only slot 0 (slot 1 has weight 0)
                + torch.logsumexp(torch.stack([comp0 + math.log(0.5), comp1 + math.log(0.5)]), 0))
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp[0], expected)


# ============================================================================================
# VampPrior statistics
# ============================================================================================

def _toy_reference(over: list[str] | None):
    rng = np.random.default_rng(0)
    labels = ["A"] * 6 + ["B"] * 4
    obs = pd.DataFrame({"cell_type": pd.Categorical(labels)}, index=[f"c{i}" for i in range(10)])
    if over is not None:
        obs["overclustering_vamp"] = over
    x = sp.csr_matrix(rng.poisson(3.0, (10, 12)).astype(np.float32))
    return ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(12)]))


def test_vamp_prior_statistics_with_fixed_clusters():
    over = ["x", "x", "y", "y", "y", "z", "p", "p", "p", "q"]
    adata = _toy_reference(over)
    model = CondSCVI(adata, n_latent=2, n_hidden=8, device="cpu")
    model.is_trained = True  # statistics do not depend on training
    mean_v, var_v, w_v = model.get_vamp_prior(p=4)
    assert mean_v.shape == (2, 4, 2) and var_v.shape == (2, 4, 2) and w_v.shape == (2, 4)
    m, v = model.get_latent_representation(return_var=True)
    groups = {0: [[0, 1], [2, 3, 4], [5]], 1: [[6, 7, 8], [9]]}
    for c, clusters in groups.items():
        n_c = sum(len(g) for g in clusters)
        for j, members in enumerate(clusters):
            np.testing.assert_allclose(mean_v[c, j], m[members].mean(0), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(var_v[c, j], v[members].mean(0) + m[members].var(0, ddof=0),
                                       rtol=1e-5, atol=1e-6)
            assert w_v[c, j] == pytest.approx(len(members) / n_c)
        for j in range(len(clusters), 4):  # unused slots
            assert w_v[c, j] == 0.0
            np.testing.assert_array_equal(mean_v[c, j], 0.0)
            np.testing.assert_array_equal(var_v[c, j], 1.0)
    np.testing.assert_allclose(w_v.sum(1), 1.0, rtol=1e-6)
    # a singleton cluster has the posterior variance of its cell (var of one mean is 0)
    np.testing.assert_allclose(var_v[0, 2], v[5], rtol=1e-6)


def test_vamp_prior_p_below_number_of_clusters_is_an_input_error():
    adata = _toy_reference(["x", "x", "y", "y", "y", "z", "p", "p", "p", "q"])
    model = CondSCVI(adata, n_latent=2, n_hidden=8, device="cpu")
    model.is_trained = True
    with pytest.raises(InputError, match="vamp_prior_p"):
        model.get_vamp_prior(p=2)
    # through DestVI: scvi-tools' "vamp_prior_p=1 with an overclustering column" case
    st = adata[:5].copy()
    with pytest.raises(ValueError, match="increase vamp_prior_p"):
        DestVI.from_rna_model(st, model, vamp_prior_p=1)


def test_vamp_prior_kmeans_and_untrained_warning():
    adata = _toy_reference(None)
    model = CondSCVI(adata, n_latent=2, n_hidden=8, device="cpu")
    with pytest.warns(DestVIWarning, match="not trained"):
        mean_v, var_v, w_v = model.get_vamp_prior(p=3)
    assert (w_v > 0).sum(1).tolist() == [3, 3]  # 3 k-means clusters per type
    np.testing.assert_allclose(w_v.sum(1), 1.0, rtol=1e-6)
    assert (var_v > 0).all()
    # p >= cells of a type: each cell is its own cluster
    model.is_trained = True
    _, _, w_v = model.get_vamp_prior(p=6)
    np.testing.assert_allclose(w_v[0], [1 / 6] * 6, rtol=1e-6)
    np.testing.assert_allclose(w_v[1], [0.25] * 4 + [0, 0], rtol=1e-6)


# ============================================================================================
# training loop
# ============================================================================================

def test_history_one_finite_record_per_epoch(tiny_models):
    sc_model, st_model = tiny_models
    for model, warmup in ((sc_model, 400), (st_model, 200)):
        assert len(model.history) == 3
        assert [r["epoch"] for r in model.history] == [1, 2, 3]
        assert [r["kl_weight"] for r in model.history] == [kl_weight_schedule(e, warmup)
                                                          for e in range(3)]
        for record in model.history:
            for key in ("reconstruction", "kl_local", "loss"):
                assert math.isfinite(record[key])
        assert model.is_trained
    assert sc_model.history[-1]["reconstruction"] < sc_model.history[0]["reconstruction"]


def test_callback_receives_progress_and_should_stop_cancels(tiny_data):
    model = CondSCVI(tiny_data.sc, n_latent=2, n_hidden=16, device="cpu")
    seen: list[TrainingProgress] = []
    model.train(max_epochs=3, batch_size=128, callback=seen.append)
    n_batches = math.ceil(tiny_data.sc.n_obs / 128)
    assert [p.epoch for p in seen] == [1, 2, 3]
    assert all(p.n_epochs == 3 and p.model == "condscvi" for p in seen)
    assert [p.step for p in seen] == [n_batches, 2 * n_batches, 3 * n_batches]
    assert all(p.eta_s >= 0 and p.elapsed_s >= 0 for p in seen)
    assert seen[-1].eta_s == 0
    assert "epoch" not in seen[0].loss and math.isfinite(seen[0].loss["loss"])

    calls = {"n": 0}

    def stop_in_second_epoch():
        calls["n"] += 1
        return calls["n"] > n_batches + 2

    model2 = CondSCVI(tiny_data.sc, n_latent=2, n_hidden=16, device="cpu")
    with pytest.raises(TrainingCancelled, match="epoch 2"):
        model2.train(max_epochs=5, should_stop=stop_in_second_epoch)
    assert not model2.is_trained
    assert len(model2.history) == 1  # only the completed epoch was recorded


# ============================================================================================
# public getters (invariants)
# ============================================================================================

def test_get_proportions_invariants(tiny_models, tiny_data):
    _, st_model = tiny_models
    props = st_model.get_proportions()
    assert list(props.columns) == st_model.cell_types == sorted(tiny_data.report.cell_type_counts)
    assert list(props.index) == list(tiny_data.st.obs_names)
    assert (props.to_numpy() >= 0).all()
    np.testing.assert_allclose(props.sum(1), 1.0, rtol=1e-5)
    noisy = st_model.get_proportions(keep_noise=True)
    assert list(noisy.columns) == st_model.cell_types + ["noise_term"]
    np.testing.assert_allclose(noisy.sum(1), 1.0, rtol=1e-5)
    assert (noisy["noise_term"] > 0).all()
    renorm = noisy[st_model.cell_types].div(noisy[st_model.cell_types].sum(1), axis=0)
    np.testing.assert_allclose(renorm.to_numpy(), props.to_numpy(), rtol=1e-5)
    sub = st_model.get_proportions(indices=np.array([7, 0, 3]))
    assert list(sub.index) == [tiny_data.st.obs_names[i] for i in (7, 0, 3)]
    np.testing.assert_allclose(sub.to_numpy(), props.iloc[[7, 0, 3]].to_numpy(), rtol=1e-6)
    mask = np.zeros(tiny_data.st.n_obs, bool)
    mask[[1, 2]] = True
    assert st_model.get_proportions(indices=mask).shape == (2, 4)


def test_get_gamma_shapes(tiny_models, tiny_data):
    _, st_model = tiny_models
    n, d, c = tiny_data.st.n_obs, 3, 4
    arr = st_model.get_gamma(return_numpy=True)
    assert arr.shape == (n, d, c)
    as_dict = st_model.get_gamma()
    assert list(as_dict) == st_model.cell_types
    for i, ct in enumerate(st_model.cell_types):
        df = as_dict[ct]
        assert df.shape == (n, d) and list(df.columns) == [0, 1, 2]
        assert list(df.index) == list(tiny_data.st.obs_names)
        np.testing.assert_array_equal(df.to_numpy(), arr[:, :, i])
    np.testing.assert_allclose(st_model.get_gamma(indices=[5, 2], return_numpy=True),
                               arr[[5, 2]], rtol=1e-5, atol=1e-6)


def test_get_scale_for_ct_shapes_and_gene_subset(tiny_models, tiny_data):
    _, st_model = tiny_models
    ct = st_model.cell_types[1]
    full = st_model.get_scale_for_ct(ct)
    assert full.shape == (tiny_data.st.n_obs, tiny_data.st.n_vars)
    assert list(full.columns) == st_model.genes
    assert (full.to_numpy() > 0).all()
    genes = [st_model.genes[i] for i in (17, 3, 150)]
    sub = st_model.get_scale_for_ct(ct, genes=genes, indices=np.arange(10))
    assert list(sub.columns) == genes and sub.shape == (10, 3)
    np.testing.assert_allclose(sub.to_numpy(), full[genes].iloc[:10].to_numpy(), rtol=1e-5)
    # differs between cell types
    other = st_model.get_scale_for_ct(st_model.cell_types[0])
    assert not np.allclose(other.to_numpy(), full.to_numpy())
    with pytest.raises(InputError, match="unknown cell type"):
        st_model.get_scale_for_ct("Not a type")
    with pytest.raises(InputError, match="genes not in the model"):
        st_model.get_scale_for_ct(ct, genes=["NOPE"])


def test_sample_expression_for_ct(tiny_models, tiny_data):
    _, st_model = tiny_models
    ct = st_model.cell_types[0]
    idx = np.arange(6)
    a = st_model.sample_expression_for_ct(ct, idx, n_samples=4, seed=0)
    assert a.shape == (4 * 6, tiny_data.st.n_vars)
    assert np.isfinite(a).all() and (a >= 0).all()
    np.testing.assert_array_equal(a, st_model.sample_expression_for_ct(ct, idx, n_samples=4,
                                                                        seed=0))
    assert not np.array_equal(a, st_model.sample_expression_for_ct(ct, idx, n_samples=4, seed=1))
    # Gamma draws have mean library * scale
    lib = 1e4
    draws = st_model.sample_expression_for_ct(ct, [0], n_samples=400, seed=2, library_size=lib)
    mean = np.expm1(draws).mean(0)
    expected = lib * st_model.get_scale_for_ct(ct, indices=[0]).to_numpy()[0]
    shape = expected * np.exp(-st_model.module.px_o.cpu().numpy())
    big = shape > 2
    assert big.sum() > 20
    np.testing.assert_allclose(mean[big], expected[big], rtol=0.3)
    with pytest.raises(InputError):
        st_model.sample_expression_for_ct("Not a type", idx)


@pytest.mark.parametrize("amortization", AMORTIZATIONS)
def test_amortization_modes_train_and_give_valid_outputs(tiny_models, tiny_data, amortization):
    sc_model, _ = tiny_models
    st = DestVI.from_rna_model(tiny_data.st, sc_model, vamp_prior_p=None,
                               amortization=amortization, l1_reg=50.0, seed=0)
    st.train(max_epochs=2)
    assert len(st.history) == 2 and math.isfinite(st.history[0]["loss"])
    props = st.get_proportions()
    n = tiny_data.st.n_obs
    assert props.shape == (n, 4)
    assert (props.to_numpy() >= 0).all()
    np.testing.assert_allclose(props.sum(1), 1.0, rtol=1e-5)
    gamma = st.get_gamma(return_numpy=True)
    assert gamma.shape == (n, 3, 4)
    assert st.get_scale_for_ct(st.cell_types[0], indices=np.arange(50)).shape == (50, 200)
    if amortization in ("none", "latent"):  # free abundances: proportions from V
        v = F.softplus(st.module.V.detach()).T.numpy()[:, :4]
        np.testing.assert_allclose(props.to_numpy(), v / v.sum(1, keepdims=True), rtol=1e-5)
    if amortization in ("none", "proportion"):  # free states: gamma from the parameter
        np.testing.assert_allclose(gamma, st.module.gamma.detach().permute(2, 0, 1).numpy(),
                                   rtol=1e-6)


def test_unknown_amortization_is_input_error(tiny_models, tiny_data):
    with pytest.raises(InputError, match="amortization"):
        DestVI.from_rna_model(tiny_data.st, tiny_models[0], vamp_prior_p=None,
                              amortization="everything")


def test_frozen_decoder_unchanged_and_px_o_is_sc_px_r(tiny_models, tiny_data):
    sc_model, _ = tiny_models
    st = DestVI.from_rna_model(tiny_data.st, sc_model, vamp_prior_p=None, seed=0)
    before = {k: v.clone() for k, v in st.module.state_dict().items()}
    st.train(max_epochs=2)
    after = st.module.state_dict()
    sc_state = sc_model.module.state_dict()
    for key in before:
        if key.startswith(("decoder.", "px_decoder.")):
            torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
            torch.testing.assert_close(after[key], sc_state[key], rtol=0, atol=0)
    assert not any(p.requires_grad for p in st.module.decoder.parameters())
    assert not any(p.requires_grad for p in st.module.px_decoder.parameters())
    torch.testing.assert_close(after["px_o"], sc_state["px_r"], rtol=0, atol=0)
    assert "px_o" not in dict(st.module.named_parameters())
    # the free parameters did move
    assert not torch.equal(after["eta"], before["eta"])
    assert not torch.equal(after["V_encoder.1.weight"], before["V_encoder.1.weight"])


def test_gene_mismatch_between_reference_and_spots(tiny_models, tiny_data):
    from destvi_core.errors import ModelMismatchError

    st = tiny_data.st[:, tiny_data.st.var_names[::-1]].copy()  # same genes, other order
    with pytest.raises(ModelMismatchError, match="genes"):
        DestVI.from_rna_model(st, tiny_models[0])


# ============================================================================================
# determinism
# ============================================================================================

def test_same_seed_same_results_other_seed_differs(tiny_models, tiny_data):
    _, st_ref = tiny_models
    _, st_again = train_models(tiny_data.sc, tiny_data.st, "cell_type", tiny_params())
    np.testing.assert_allclose(st_again.get_proportions().to_numpy(),
                               st_ref.get_proportions().to_numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(st_again.get_gamma(return_numpy=True),
                               st_ref.get_gamma(return_numpy=True), rtol=0, atol=1e-5)
    _, st_other = train_models(tiny_data.sc, tiny_data.st, "cell_type", tiny_params(seed=1))
    diff = np.abs(st_other.get_proportions().to_numpy() - st_ref.get_proportions().to_numpy())
    assert diff.max() > 1e-3


# ============================================================================================
# pipeline
# ============================================================================================

def test_spatial_schedule_stretches_given_epochs_and_warmup():
    tutorial = TrainingParams(st_epochs=2500)
    assert spatial_schedule(96, tutorial) == (2500, 200)  # given epochs: no step floor
    assert spatial_schedule(96, TrainingParams(st_epochs=2500, st_min_steps=5000)) == (5000, 400)
    assert spatial_schedule(300, TrainingParams(st_epochs=2500, st_min_steps=5000)) == (2500, 200)
    assert spatial_schedule(100_000, tutorial) == (2500, 200)  # given epochs: no cap either
    p = TrainingParams(st_epochs=10, st_kl_warmup_epochs=4, st_batch_size=128)
    assert spatial_schedule(150, p) == (10, 4)  # st_min_steps = 0: unchanged
    p.st_min_steps = 100  # 10 epochs x 2 steps = 20 < 100 -> factor 5
    assert spatial_schedule(150, p) == (50, 20)
    p.st_min_steps = 20  # already reached
    assert spatial_schedule(150, p) == (10, 4)
    p.st_min_steps = 25  # factor 1.25 -> ceil
    assert spatial_schedule(150, p) == (13, 5)
    assert spatial_schedule(10, TrainingParams(st_epochs=3, st_min_steps=30)) == (30, 2000)


def test_train_models_uses_spatial_schedule(tiny_data):
    params = tiny_params(sc_epochs=1, st_epochs=1, st_min_steps=4, vamp_prior_p=2)
    _, st = train_models(tiny_data.sc, tiny_data.st, "cell_type", params)
    assert len(st.history) == 2  # 150 spots = 2 steps/epoch -> 2 epochs for 4 steps
    assert st.train_params["max_epochs"] == 2
    assert st.train_params["n_epochs_kl_warmup"] == 400


@pytest.mark.parametrize("field,value,match", [
    ("sc_epochs", 0, "sc_epochs"), ("st_epochs", -1, "st_epochs"),
    ("st_batch_size", 0, "st_batch_size"), ("n_latent", 0, "n_latent"),
    ("sc_lr", 0.0, "sc_lr"), ("st_lr", 1.5, "st_lr"), ("device", "tpu", "device"),
    ("st_max_steps", -1, "st_max_steps"), ("sc_max_steps", -5, "sc_max_steps"),
])
def test_training_params_validate_errors(field, value, match):
    with pytest.raises(InputError, match=match):
        TrainingParams(**{field: value}).validate()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_training_params_cuda_without_gpu():
    with pytest.raises(InputError, match="no CUDA GPU"):
        TrainingParams(device="cuda").validate()


def test_presets_and_param_dicts():
    default = preset("default")
    assert default == TrainingParams() and default.st_epochs is None and default.sc_epochs is None
    tutorial = preset("tutorial")
    assert (tutorial.sc_epochs, tutorial.st_epochs, tutorial.init) == (300, 2500, "data")
    assert (tutorial.sc_lr, tutorial.st_lr, tutorial.vamp_prior_p) == (1e-3, 3e-3, 15)
    quick = preset("quick", seed=3)
    assert (quick.sc_epochs, quick.st_epochs, quick.seed, quick.st_min_steps) == (100, 300, 3, None)
    assert preset("tutorial", st_min_steps=5000).st_min_steps == 5000
    reference = preset("reference")
    assert (reference.init, reference.sc_epochs, reference.st_epochs) == ("reference", 300, 2500)
    assert reference.st_min_steps is None and tutorial.st_max_steps is None
    assert preset("quick", st_epochs=7).st_epochs == 7
    with pytest.raises(InputError, match="unknown preset"):
        preset("fast")
    with pytest.raises(InputError):
        preset("quick", sc_epochs=0)
    d = quick.to_dict()
    assert TrainingParams.from_dict({**d, "unknown": 1}) == quick
    assert "device" in d and "device" not in quick.cache_dict()
