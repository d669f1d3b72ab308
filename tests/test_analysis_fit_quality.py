"""Per-spot fit quality (NB deviance per count, noise share) and the poorly-fit-spots summary."""

import numpy as np
import pandas as pd
import pytest
from _analysis_fakes import hex_coords
from conftest import TINY_SIM, tiny_params

from destvi_core.analysis import spot_fit_quality, summarize_fit_quality
from destvi_core.errors import InputError


def test_deviance_and_noise_share_match_the_likelihood(tiny_models):
    import torch
    import torch.nn.functional as F

    _, st_model = tiny_models
    table = spot_fit_quality(st_model, batch_size=64)  # several chunks
    assert list(table.index) == list(st_model.adata.obs_names)
    assert np.isfinite(table.to_numpy()).all()
    assert (table["deviance_per_count"] > 0).all() and table["noise_share"].between(0, 1).all()
    picked = np.array([0, 7, 70, 149])
    sub = spot_fit_quality(st_model, indices=picked)
    np.testing.assert_allclose(sub.to_numpy(), table.iloc[picked].to_numpy(), rtol=1e-5)
    module = st_model.module
    with torch.inference_mode():
        x = torch.as_tensor(np.asarray(st_model.adata.X[picked].todense()), dtype=torch.float32)
        rows = torch.as_tensor(picked)
        rate, _, v = module.rates(x, rows)
        lib = x.sum(1, keepdim=True)
        model = torch.distributions.NegativeBinomial(lib * rate, logits=module.px_o).log_prob(x)
        r_sat = x * torch.exp(-module.px_o)
        sat = torch.distributions.NegativeBinomial(r_sat.clamp_min(1e-30), logits=module.px_o).log_prob(x)
        sat = torch.where(x > 0, sat, torch.zeros_like(sat))
        deviance = (2 * (sat - model).sum(1) / lib.squeeze(1)).numpy()
        noise = (v[:, -1:] * F.softplus(module.eta) * torch.exp(module.px_o)).sum(1)
        share = (noise / (rate * torch.exp(module.px_o)).sum(1)).numpy()
    np.testing.assert_allclose(sub["deviance_per_count"], deviance, rtol=2e-3)
    np.testing.assert_allclose(sub["noise_share"], share, rtol=1e-4)
    np.testing.assert_allclose(sub["library"], lib.squeeze(1).numpy())


def test_cell_type_missing_from_the_reference_is_found():
    """Spots rich in a type the reference lacks lean on the noise type, and cluster."""
    from scipy.stats import spearmanr

    from destvi_core.data import prepare_inputs
    from destvi_core.pipeline import train_models
    from destvi_core.simulate import simulate_destvi

    sim = simulate_destvi(**TINY_SIM)
    missing = sim.cell_types[-1]
    sc = sim.sc[sim.sc.obs["cell_type"] != missing].copy()
    sc.obs["cell_type"] = sc.obs["cell_type"].cat.remove_unused_categories()
    prep = prepare_inputs(sc, sim.st, labels_key="cell_type", hvg=False)
    _, st_model = train_models(prep.sc, prep.st, "cell_type", tiny_params(sc_epochs=10, st_epochs=100))
    table = spot_fit_quality(st_model)
    truth = sim.st.obsm["true_proportions"][missing].reindex(table.index).to_numpy()
    rich, without = truth > 0.3, truth < 0.05
    assert rich.sum() >= 10 and without.sum() >= 10
    assert spearmanr(truth, table["noise_share"]).statistic > 0.4
    assert table["noise_share"][rich].median() > 3 * table["noise_share"][without].median()
    summary = summarize_fit_quality(table, coords=prep.st.obsm["spatial"])
    assert summary.flagged[rich].mean() > 0.6 > 0.4 > summary.flagged[without].mean()
    assert summary.clustered and "reference may lack a cell type" in summary.note


def _table(noise: np.ndarray, deviance: np.ndarray | None = None) -> pd.DataFrame:
    deviance = np.full(len(noise), 0.1) if deviance is None else deviance
    return pd.DataFrame({"deviance_per_count": deviance, "noise_share": noise,
                         "library": np.full(len(noise), 1000.0)})


def test_summary_tells_clustered_from_scattered():
    coords = hex_coords(30, 30)
    rng = np.random.default_rng(0)
    disc = np.hypot(*(coords - coords.mean(0)).T) < 5
    base = rng.uniform(0.02, 0.08, len(coords))
    clustered = summarize_fit_quality(_table(np.where(disc, 0.6, base)), coords=coords)
    assert (clustered.flagged == disc).all() and clustered.clustered
    assert clustered.neighbour_share > 0.8 and clustered.cluster_pvalue <= 0.01
    assert clustered.moran_noise > 0.5
    scattered_mask = np.zeros(len(coords), bool)
    scattered_mask[rng.choice(len(coords), disc.sum(), replace=False)] = True
    scattered = summarize_fit_quality(_table(np.where(scattered_mask, 0.6, base)), coords=coords)
    assert scattered.n_flagged == disc.sum() and not scattered.clustered
    assert "scattered" in scattered.note
    # deviance outliers are flagged by the robust cut-off (median + 3 robust SD)
    dev = rng.normal(0.1, 0.005, len(coords))
    dev[disc] = 0.3
    by_dev = summarize_fit_quality(_table(base, dev), coords=coords)
    assert (by_dev.flagged == disc).all() and by_dev.clustered
    calm = summarize_fit_quality(_table(base, rng.normal(0.1, 0.005, len(coords))), coords=coords)
    assert calm.n_flagged <= 3 and not calm.clustered


def test_summary_errors():
    coords = hex_coords(5, 5)
    with pytest.raises(InputError, match="lacks column"):
        summarize_fit_quality(pd.DataFrame({"noise_share": np.zeros(25)}), coords=coords)
    with pytest.raises(InputError, match="NaN"):
        summarize_fit_quality(_table(np.full(25, np.nan)), coords=coords)
    with pytest.raises(InputError, match="coordinates"):
        summarize_fit_quality(_table(np.zeros(25)))
