"""How well does the fitted model explain each spot? (per-spot deviance and noise share)

For every spot the DestVI likelihood (spec 3.4) is ``x_sg ~ NB(total_count = l_s * rate_sg,
logits = px_o_g)`` with ``rate_s = sum_c v_sc r_sc + v_s,noise * softplus(eta)``.
:func:`spot_fit_quality` reports, chunk by chunk over the spots:

``deviance_per_count``
    ``2 * sum_g [log NB(x_sg | saturated) - log NB(x_sg | model)] / l_s``: the NB deviance of
    the spot, against the saturated model of the same family (mean = observed count, same
    logits; a zero count has log-likelihood 0), divided by the spot's total count so deep and
    shallow spots compare. 0 = perfect; larger = worse.
``noise_share``
    Share of the spot's expected counts given to the noise "cell type" (the gene-wise profile
    that absorbs what no reference type explains).
``library``
    Total counts of the spot.

A cell type present in the tissue but missing from the reference shows up as spots that fit
worse or lean on the noise type (which then takes the missing type's profile), *next to each
other* in the tissue. :func:`summarize_fit_quality` flags spots whose deviance is well above the
typical value (median + ``n_mads`` robust standard deviations) or whose noise share is high,
and measures whether the flagged spots cluster on the spatial kNN graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import InputError

__all__ = ["spot_fit_quality", "FitSummary", "summarize_fit_quality", "FIT_COLUMNS"]

FIT_COLUMNS = ["deviance_per_count", "noise_share", "library"]


def spot_fit_quality(st_model, indices=None, batch_size: int = 1024,
                     progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Per-spot fit quality of a trained DestVI model (see the module docstring).

    Parameters
    ----------
    st_model
        Trained :class:`~destvi_core.destvi.DestVI`.
    indices
        Spot positions or a boolean mask (default all spots).
    batch_size
        Spots per chunk (memory grows with ``batch_size * n_types * n_genes``).
    progress
        Called as ``progress(done, total)`` after every chunk.

    Returns
    -------
    pandas.DataFrame
        Index spot names; columns :data:`FIT_COLUMNS`.
    """
    import torch
    import torch.nn.functional as F

    from ..nn_blocks import nb_log_prob_logits

    module = st_model.module
    module.eval()
    n_obs = st_model.adata.n_obs
    idx = np.arange(n_obs) if indices is None else np.asarray(indices)
    idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)
    out = np.zeros((len(idx), 3), dtype=np.float64)
    px_o = module.px_o
    with torch.inference_mode():
        exp_o = torch.exp(px_o)
        noise_profile = F.softplus(module.eta) * exp_o  # [G]
        for sl, x, rows in st_model.iter_spot_batches(idx, batch_size):
            library = x.sum(1, keepdim=True)
            rate, _, v = module.rates(x, rows)
            ll_model = nb_log_prob_logits(x, library * rate, px_o)
            positive = x > 0
            r_sat = torch.where(positive, x * torch.exp(-px_o), torch.ones_like(x))
            ll_sat = torch.where(positive, nb_log_prob_logits(x, r_sat, px_o), torch.zeros_like(x))
            lib = library.squeeze(1)
            deviance = 2.0 * (ll_sat - ll_model).sum(1) / lib.clamp_min(1.0)
            expected = (rate * exp_o).sum(1)
            noise = v[:, -1] * noise_profile.sum()
            share = noise / expected.clamp_min(1e-12)
            out[sl] = torch.stack([deviance, share, lib], 1).double().cpu().numpy()
            if progress is not None:
                progress(sl.stop, len(idx))
    return pd.DataFrame(out, index=st_model.adata.obs_names[idx], columns=FIT_COLUMNS)


@dataclass
class FitSummary:
    """Which spots fit poorly, and do they cluster in space?

    Attributes
    ----------
    flagged
        Bool ``[S]``: deviance or noise share above its cut-off.
    cut_deviance, cut_noise
        Cut-offs used: median deviance + ``n_mads`` x 1.4826 x MAD (the spread floored at 5 %
        of the median), and the noise share ``noise_cut``.
    median_deviance, median_noise
        Typical values.
    neighbour_share
        Of the flagged spots' neighbour weights, the share that goes to flagged spots.
    expected_share
        The share expected if flagged spots were scattered at random (= their overall share).
    cluster_pvalue
        Permutation p-value of ``neighbour_share`` (flags shuffled across spots).
    moran_deviance, moran_noise
        Moran's I of each measure on the kNN graph (spatial autocorrelation, about -1..1).
    clustered
        At least 5 flagged spots whose neighbours are flagged significantly more often than
        by chance (p <= 0.05) and by at least 10 percentage points.
    note
        Plain-words reading for the app.
    """

    flagged: np.ndarray
    cut_deviance: float
    cut_noise: float
    median_deviance: float
    median_noise: float
    neighbour_share: float
    expected_share: float
    cluster_pvalue: float
    moran_deviance: float
    moran_noise: float
    clustered: bool
    note: str

    @property
    def n_flagged(self) -> int:
        return int(self.flagged.sum())


def _cut(values: np.ndarray, n_mads: float, floor: float) -> tuple[float, float]:
    med = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - med)))
    return med, med + n_mads * max(mad, floor)


def _moran(values: np.ndarray, w: sparse.csr_matrix, total: float) -> float:
    z = values - values.mean()
    den = float(z @ z)
    if den <= 0:
        return 0.0
    return float(len(z) * (z @ (w @ z)) / (total * den))


def summarize_fit_quality(table: pd.DataFrame, coords: np.ndarray | None = None,
                          weights: sparse.spmatrix | None = None, n_mads: float = 3.0,
                          noise_cut: float = 0.25, n_permutations: int = 199,
                          seed: int = 0) -> FitSummary:
    """Flag poorly fit spots and test whether they cluster in space.

    Parameters
    ----------
    table
        Output of :func:`spot_fit_quality`.
    coords, weights
        Spot coordinates, or a :func:`~destvi_core.analysis.thresholds.spatial_knn_weights`
        graph of the same spots.
    n_mads
        Robust standard deviations above the median deviance that flag a spot.
    noise_cut
        Noise share that flags a spot (default: a quarter of its expected counts explained by
        no reference type). An absolute share, because when a type is missing from the
        reference in much of the tissue the median itself is high.
    n_permutations, seed
        Permutation test of the clustering.
    """
    missing = [c for c in ("deviance_per_count", "noise_share") if c not in table]
    if missing:
        raise InputError(f"fit-quality table lacks column(s) {missing}", "use spot_fit_quality()")
    dev = table["deviance_per_count"].to_numpy(dtype=float)
    noise = table["noise_share"].to_numpy(dtype=float)
    if not (np.isfinite(dev).all() and np.isfinite(noise).all()):
        raise InputError("the fit-quality table has NaN values", "recompute it from the trained model")
    if weights is None:
        if coords is None:
            raise InputError("fit-quality clustering needs spot coordinates or a spatial graph",
                             "pass coords=st.obsm['spatial']")
        from .thresholds import spatial_knn_weights

        weights = spatial_knn_weights(coords)
    w = sparse.csr_matrix(weights)
    w = w + w.T
    w.setdiag(0)
    w.eliminate_zeros()
    total = float(w.sum())
    med_d, cut_d = _cut(dev, n_mads, 0.05 * abs(float(np.median(dev))) + 1e-9)
    med_n, cut_n = float(np.median(noise)), float(noise_cut)
    flagged = (dev > cut_d) | (noise > cut_n)
    f = flagged.astype(float)
    n_flag = int(flagged.sum())
    expected = n_flag / max(len(f), 1)
    out_weight = np.asarray(w @ np.ones(len(f))).ravel()

    def share(flags: np.ndarray) -> float:
        denom = float(flags @ out_weight)
        return float(flags @ (w @ flags)) / denom if denom > 0 else 0.0

    observed = share(f) if n_flag else 0.0
    rng = np.random.default_rng(seed)
    if n_flag and n_flag < len(f):
        exceed = sum(share(rng.permutation(f)) >= observed - 1e-12 for _ in range(n_permutations))
        pvalue = (1 + exceed) / (1 + n_permutations)
    else:
        pvalue = 1.0
    clustered = n_flag >= 5 and pvalue <= 0.05 and observed >= expected + 0.1
    moran_d, moran_n = _moran(dev, w, total), _moran(noise, w, total)
    pct = f"{100 * expected:.1f}%"
    if clustered:
        note = (f"{n_flag} spots ({pct}) fit worse than the rest or lean on the noise type, and they "
                f"sit together in the tissue ({observed:.0%} of their neighbours are flagged too, "
                f"{expected:.0%} expected by chance). The reference may lack a cell type present "
                "there: compare these spots with the rest (make them a region), or add the missing "
                "type to the reference.")
    elif n_flag:
        note = (f"{n_flag} spots ({pct}) fit worse than the rest, but they are scattered "
                f"({observed:.0%} of their neighbours flagged, {expected:.0%} by chance): more likely "
                "low-quality spots than a cell type missing from the reference.")
    else:
        note = "No spot stands out: the model explains every spot about equally well."
    return FitSummary(flagged, cut_d, cut_n, med_d, med_n, observed, expected, float(pvalue),
                      moran_d, moran_n, bool(clustered), note)
