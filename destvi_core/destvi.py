"""DestVI: the spatial deconvolution model built from a trained CondSCVI (spec section 3, era B).

Each spot's expression rate is a non-negative mix of the reference decoder's cell-type profiles,
each evaluated at a spot- and type-specific continuous state ``gamma``, plus a gene-wise "noise"
profile; the reference decoder stays frozen.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from anndata import AnnData
from torch import nn

from .condscvi import CondSCVI
from .device import resolve_device
from .errors import InputError, ModelMismatchError
from .nn_blocks import FCLayers, inverse_softplus, mean_composition, nb_log_prob_rows
from .tensors import SparseCounts, counts_matrix, iter_chunks, mean_composition_csr
from .training import ProgressCallback, TrainingProgress, fit_model, seed_everything

AMORTIZATIONS = ("both", "latent", "proportion", "none")


class DestVIModule(nn.Module):
    """The MRDeconv network (era B)."""

    def __init__(self, sc_module: nn.Module, n_spots: int, n_latent: int, n_hidden: int,
                 prior: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                 amortization: str = "both", l1_reg: float = 0.0, beta_reg: float = 5.0,
                 eta_reg: float = 1e-4, dropout_amortization: float = 0.05):
        super().__init__()
        if amortization not in AMORTIZATIONS:
            raise InputError(f"unknown amortization {amortization!r}",
                             f"use one of {', '.join(AMORTIZATIONS)}")
        n_genes = sc_module.px_decoder.out_features
        n_labels = sc_module.n_labels
        self.n_labels, self.n_latent, self.n_genes = n_labels, n_latent, n_genes
        self.amortization = amortization
        self.l1_reg, self.beta_reg, self.eta_reg = l1_reg, beta_reg, eta_reg
        # frozen copy of the reference decoder (its dropout stays active in train mode, as era B)
        self.decoder = copy.deepcopy(sc_module.decoder)
        self.px_decoder = copy.deepcopy(sc_module.px_decoder)
        for p in list(self.decoder.parameters()) + list(self.px_decoder.parameters()):
            p.requires_grad_(False)
        self.register_buffer("px_o", sc_module.px_r.detach().clone())
        # free parameters
        self.V = nn.Parameter(torch.randn(n_labels + 1, n_spots))
        self.gamma = nn.Parameter(torch.randn(n_latent, n_labels, n_spots))
        self.eta = nn.Parameter(torch.randn(n_genes))
        self.beta = nn.Parameter(0.01 * torch.randn(n_genes))
        self.gamma_encoder = nn.Sequential(
            FCLayers(n_genes, n_hidden, 0, 2, n_hidden, dropout_amortization),
            nn.Linear(n_hidden, n_latent * n_labels))
        self.V_encoder = nn.Sequential(
            FCLayers(n_genes, n_hidden, 0, 2, n_hidden, dropout_amortization),
            nn.Linear(n_hidden, n_labels + 1))
        if prior is None:
            self.use_vamp = False
        else:
            self.use_vamp = True
            mean, var, weights = (torch.as_tensor(a, dtype=torch.float32) for a in prior)
            self.register_buffer("mean_vprior", mean)  # [C, p, d]
            self.register_buffer("var_vprior", var)  # [C, p, d]
            self.register_buffer("mp_vprior", weights)  # [C, p]

    # ---------------------------------------------------------------- pieces
    def spot_gamma(self, x_log: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
        """Continuous state per spot and type, ``[m, d, C]`` (encoder unit ``i*C + c``)."""
        if self.amortization in ("latent", "both"):
            return self.gamma_encoder(x_log).reshape(-1, self.n_latent, self.n_labels)
        return self.gamma[:, :, ind].permute(2, 0, 1)

    def spot_abundance(self, x_log: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
        """Non-negative abundances ``[m, C + 1]`` (last column: the noise type)."""
        if self.amortization in ("proportion", "both"):
            return F.softplus(self.V_encoder(x_log))
        return F.softplus(self.V[:, ind].T)

    def type_profiles(self, gamma: torch.Tensor) -> torch.Tensor:
        """Decoded profiles ``f_c(gamma_sc)`` for every spot and type, ``[m, C, G]``."""
        m = gamma.shape[0]
        z = gamma.permute(0, 2, 1).reshape(m * self.n_labels, self.n_latent)
        labels = torch.arange(self.n_labels, device=gamma.device).repeat(m)
        f = F.softplus(self.px_decoder(self.decoder(z, labels)))
        return f.reshape(m, self.n_labels, self.n_genes)

    def gamma_log_prior(self, gamma: torch.Tensor) -> torch.Tensor:
        """``log p(gamma_sc)`` summed over types, ``[m]`` (VampPrior mixture or N(0, I))."""
        g = gamma.permute(0, 2, 1)  # [m, C, d]
        if not self.use_vamp:
            return torch.distributions.Normal(0.0, 1.0).log_prob(g).sum((1, 2))
        std = self.var_vprior.sqrt() + 1e-4  # [C, p, d]
        comp = torch.distributions.Normal(self.mean_vprior.unsqueeze(0), std.unsqueeze(0))
        log_comp = comp.log_prob(g.unsqueeze(2)).sum(-1)  # [m, C, p]
        log_w = torch.log(self.mp_vprior)  # -inf for empty slots
        return torch.logsumexp(log_comp + log_w, dim=-1).sum(-1)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Start at the data's scale instead of N(0, 1) (our documented deviation).

        With the reference init the noise profile ``softplus(eta) ~ 0.7`` per gene is about
        ``G`` times larger than a decoded cell-type profile (whose rates sum to ~1 over genes
        after ``exp(px_o)``), so training first spends thousands of steps shrinking the noise
        while proportions stay near uniform. Here the noise profile starts at the average spot
        composition and the abundances start summing to ~1 with the noise at a small share.
        """
        self.init_from_composition(mean_composition(x))

    @torch.no_grad()
    def init_from_composition(self, composition: torch.Tensor) -> None:
        """:meth:`init_from_data` from the average spot composition ``[G]`` (sums to 1)."""
        composition = torch.as_tensor(composition, dtype=torch.float32, device=self.eta.device)
        target = (composition * torch.exp(-self.px_o)).clamp_min(1e-12)
        self.eta.copy_(inverse_softplus(target))
        n = self.n_labels
        type_bias = float(inverse_softplus(torch.tensor(1.0 / n)))
        noise_bias = float(inverse_softplus(torch.tensor(0.05)))
        head = self.V_encoder[-1]
        head.weight.mul_(0.1)
        head.bias.fill_(type_bias)
        head.bias[-1] = noise_bias
        self.V.mul_(0.1).add_(type_bias)
        self.V[-1].fill_(noise_bias)

    def rates(self, x: torch.Tensor, ind: torch.Tensor):
        """Spot rates ``sum_c v_sc exp(beta) f_c(gamma_sc) + v_s,noise softplus(eta)`` ``[m, G]``,
        with ``gamma [m, d, C]`` and ``v [m, C + 1]``.

        ``exp(beta)`` is shared by the types, so it multiplies the mixed profile once, and the
        mix over types is a batched matrix product (no ``[m, C, G]`` product is stored).
        """
        x_log = torch.log1p(x)
        gamma = self.spot_gamma(x_log, ind)
        v = self.spot_abundance(x_log, ind)
        profiles = self.type_profiles(gamma)  # [m, C, G]
        mixed = torch.bmm(v[:, None, :-1], profiles).squeeze(1)  # [m, G]
        rate = torch.exp(self.beta) * mixed + v[:, -1:] * F.softplus(self.eta)
        return rate, gamma, v

    def loss(self, batch: dict[str, torch.Tensor], kl_weight: float, n_obs: int):
        x, ind = batch["x"], batch["ind"]
        library = x.sum(1, keepdim=True)
        rate, gamma, v = self.rates(x, ind)
        recon = -nb_log_prob_rows(x, library * rate, self.px_o, batch.get("x_nz"),
                                  batch.get("x_log_factorial"))  # [m]
        kl_local = -self.gamma_log_prior(gamma)  # [m]
        sparsity = self.l1_reg * v.abs().mean(1)  # [m]
        glob = (-self.eta_reg * torch.distributions.Normal(0.0, 1.0).log_prob(self.eta).sum()
                + self.beta_reg * torch.var(self.beta))
        per_spot = recon + kl_weight * (kl_local + sparsity)
        loss = n_obs * (per_spot.mean() + glob)
        return loss, {"reconstruction": recon, "kl_local": kl_local, "loss": per_spot}


class DestVI:
    """Spatial deconvolution model. Build it with :meth:`from_rna_model`.

    After training, read results with :meth:`get_proportions`, :meth:`get_gamma`,
    :meth:`get_scale_for_ct` and :meth:`sample_expression_for_ct`.
    """

    def __init__(self, adata: AnnData, sc_model: CondSCVI, module: DestVIModule, layer: str | None,
                 hparams: dict, seed: int, device: torch.device):
        self.adata = adata
        self.sc_model = sc_model
        self.module = module
        self.layer = layer
        self.hparams = hparams
        self.seed = seed
        self.device = device
        self.cell_types = list(sc_model.cell_types)
        self.genes = [str(g) for g in adata.var_names]
        self.history: list[dict] = []
        self.train_params: dict = {}
        self.is_trained = False
        self._x_cache: SparseCounts | None = None
        lib = np.asarray(counts_matrix(adata, layer).sum(1)).ravel()
        self.mean_library_size = float(lib.mean())

    @classmethod
    def from_rna_model(cls, st_adata: AnnData, sc_model: CondSCVI, vamp_prior_p: int | None = 15,
                       amortization: str = "both", l1_reg: float = 0.0, beta_reg: float = 5.0,
                       eta_reg: float = 1e-4, dropout_amortization: float = 0.05,
                       layer: str | None = None, seed: int = 0,
                       device: str | torch.device | None = None,
                       init: str = "data") -> "DestVI":
        """Build the spatial model from a trained reference model (decoder copied and frozen).

        ``st_adata`` must hold the same genes, in the same order, as the reference.
        ``init="data"`` (default, our deviation) starts the noise profile and abundances at the
        data's scale (:meth:`DestVIModule.init_from_data`); ``"reference"`` is scvi-tools' init.
        """
        st_genes = [str(g) for g in st_adata.var_names]
        if st_genes != sc_model.genes:
            shared = len(set(st_genes) & set(sc_model.genes))
            raise ModelMismatchError(
                f"the spatial data has {len(st_genes)} genes and the reference model "
                f"{len(sc_model.genes)} ({shared} shared, order must match). Fix: subset both to "
                "the same ordered gene list (destvi_core.data.prepare_inputs does this)")
        device = sc_model.device if device is None else resolve_device(device)
        seed_everything(seed)
        prior = sc_model.get_vamp_prior(vamp_prior_p) if vamp_prior_p else None
        hp = sc_model.hparams
        module = DestVIModule(sc_model.module, st_adata.n_obs, hp["n_latent"], hp["n_hidden"],
                              prior, amortization, l1_reg, beta_reg, eta_reg,
                              dropout_amortization).to(device)
        hparams = dict(vamp_prior_p=vamp_prior_p, amortization=amortization, l1_reg=l1_reg,
                       beta_reg=beta_reg, eta_reg=eta_reg,
                       dropout_amortization=dropout_amortization, init=init)
        model = cls(st_adata, sc_model, module, layer, hparams, seed, device)
        if init == "data":
            module.init_from_composition(
                torch.from_numpy(mean_composition_csr(counts_matrix(st_adata, layer))))
        elif init != "reference":
            raise InputError(f"unknown init {init!r}", "use 'reference' or 'data'")
        return model

    # ---------------------------------------------------------------- training
    def _counts(self) -> SparseCounts:
        """The spot counts as CSR tensors on the device (built once; shares memory on a CPU)."""
        if self._x_cache is None:
            self._x_cache = SparseCounts(counts_matrix(self.adata, self.layer), self.device)
        return self._x_cache

    def train(self, max_epochs: int = 2500, lr: float = 3e-3, batch_size: int = 128,
              n_epochs_kl_warmup: int | None = 200, callback: ProgressCallback | None = None,
              should_stop=None, n_steps_kl_warmup: int | None = None,
              progress_interval_s: float = 1.0) -> "DestVI":
        """Fit abundances, states, eta and beta (Adam eps 0.01, wd 1e-6; loss scaled by n_spots).

        The counts stay sparse on the device; minibatches are densified when used.
        ``n_steps_kl_warmup`` ramps the KL weight per step instead of per epoch.
        """
        x = self._counts()
        ind = torch.arange(x.n_rows, device=self.device)
        return fit_model(self, {"x": x, "ind": ind}, "destvi", max_epochs, lr, batch_size,
                         n_epochs_kl_warmup, callback, should_stop, n_steps_kl_warmup,
                         progress_interval_s)

    # ---------------------------------------------------------------- inference helpers
    def _indices(self, indices) -> np.ndarray:
        if indices is None:
            return np.arange(self.adata.n_obs)
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return idx.astype(np.int64)

    def _label_index(self, label: str) -> int:
        if label not in self.cell_types:
            raise InputError(f"unknown cell type {label!r}",
                             f"use one of: {', '.join(self.cell_types)}")
        return self.cell_types.index(label)

    def iter_spot_batches(self, indices=None, batch_size: int = 4096):
        """Counts of the spots in chunks: yields ``(slice into indices, x [m, G] dense float32 on
        the model's device, rows [m] long tensor of spot indices on the device)``.

        ``indices``: spot positions or a boolean mask (all spots when None). Every chunked
        inference (proportions, gamma, imputed expression, fit quality) reads the counts this way.
        """
        idx = self._indices(indices)
        x_all = self._counts()
        for sl in iter_chunks(len(idx), batch_size):
            rows = torch.as_tensor(idx[sl], device=self.device)
            yield sl, x_all.dense(rows), rows

    def _chunks(self, idx: np.ndarray, chunk: int, callback: ProgressCallback | None = None,
                what: str = "inference"):
        """:meth:`iter_spot_batches` that reports ``TrainingProgress(phase="inference")`` after
        every chunk (time left from the measured time per chunk)."""
        if callback is None:
            yield from self.iter_spot_batches(idx, chunk)
            return
        import time

        n_chunks = max(1, -(-len(idx) // chunk))
        start = time.perf_counter()
        for done, item in enumerate(self.iter_spot_batches(idx, chunk), start=1):
            yield item
            elapsed = time.perf_counter() - start
            callback(TrainingProgress(what, 0, 0, done, {}, elapsed,
                                      elapsed / done * (n_chunks - done), n_chunks, False,
                                      "inference", elapsed / done))

    # ---------------------------------------------------------------- public getters
    @torch.inference_mode()
    def get_proportions(self, keep_noise: bool = False, indices=None,
                        batch_size: int = 4096, callback: ProgressCallback | None = None
                        ) -> pd.DataFrame:
        """Cell-type proportions per spot (rows sum to 1), index = spot names.

        With ``keep_noise`` an extra ``noise_term`` column is kept before normalising.
        ``callback`` receives ``TrainingProgress(phase="inference")`` after every chunk.
        """
        self.module.eval()
        idx = self._indices(indices)
        out = []
        for _, x, rows in self._chunks(idx, batch_size, callback, "proportions"):
            out.append(self.module.spot_abundance(torch.log1p(x), rows).cpu().numpy())
        v = np.concatenate(out) if out else np.zeros((0, len(self.cell_types) + 1), np.float32)
        columns = list(self.cell_types)
        if keep_noise:
            columns.append("noise_term")
        else:
            v = v[:, :-1]
        v = v / v.sum(1, keepdims=True)
        return pd.DataFrame(v, index=self.adata.obs_names[idx], columns=columns)

    @torch.inference_mode()
    def get_gamma(self, indices=None, return_numpy: bool = False, batch_size: int = 4096,
                  callback: ProgressCallback | None = None):
        """Continuous state per spot: array ``[n, d, C]`` or dict type -> DataFrame ``[n, d]``."""
        self.module.eval()
        idx = self._indices(indices)
        out = [self.module.spot_gamma(torch.log1p(x), rows).cpu().numpy()
               for _, x, rows in self._chunks(idx, batch_size, callback, "gamma")]
        d, c = self.module.n_latent, self.module.n_labels
        gamma = np.concatenate(out) if out else np.zeros((0, d, c), np.float32)
        if return_numpy:
            return gamma
        names = self.adata.obs_names[idx]
        return {ct: pd.DataFrame(gamma[:, :, i], index=names, columns=list(range(d)))
                for i, ct in enumerate(self.cell_types)}

    @torch.inference_mode()
    def _scale_tensor(self, ct: int, x: torch.Tensor, rows: torch.Tensor,
                      gene_idx: torch.Tensor | None) -> torch.Tensor:
        gamma = self.module.spot_gamma(torch.log1p(x), rows)[:, :, ct]  # [m, d]
        labels = torch.full((gamma.shape[0],), ct, device=self.device, dtype=torch.long)
        h = self.module.decoder(gamma, labels)
        weight, bias = self.module.px_decoder.weight, self.module.px_decoder.bias
        log_scale = self.module.px_o + self.module.beta
        if gene_idx is not None:
            weight, bias, log_scale = weight[gene_idx], bias[gene_idx], log_scale[gene_idx]
        return torch.exp(log_scale) * F.softplus(F.linear(h, weight, bias))

    def _gene_index(self, genes) -> tuple[torch.Tensor | None, list[str]]:
        if genes is None:
            return None, self.genes
        lookup = {g: i for i, g in enumerate(self.genes)}
        missing = [g for g in genes if g not in lookup]
        if missing:
            raise InputError(f"genes not in the model: {', '.join(map(str, missing[:5]))}",
                             "pick genes from the model's gene list")
        return torch.as_tensor([lookup[g] for g in genes], device=self.device), list(genes)

    @torch.inference_mode()
    def get_scale_for_ct(self, label: str, indices=None, genes=None,
                         batch_size: int = 2048) -> pd.DataFrame:
        """Imputed expression of one cell type per spot (tutorial ``get_scale_for_ct``).

        ``exp(px_o) * exp(beta) * f_label(gamma_s,label)`` for each spot, not multiplied by the
        library size: the NB mean per unit library contributed by one unit of that type.
        """
        self.module.eval()
        ct = self._label_index(label)
        idx = self._indices(indices)
        gene_idx, names = self._gene_index(genes)
        out = [self._scale_tensor(ct, x, rows, gene_idx).cpu().numpy()
               for _, x, rows in self._chunks(idx, batch_size)]
        values = np.concatenate(out) if out else np.zeros((0, len(names)), np.float32)
        return pd.DataFrame(values, index=self.adata.obs_names[idx], columns=names)

    @torch.inference_mode()
    def mean_scale_for_ct(self, label: str, indices=None, genes=None,
                          batch_size: int = 4096) -> np.ndarray:
        """Mean of :meth:`get_scale_for_ct` over the spots, ``[G]`` float64, computed chunk by
        chunk (never holds the ``[n, G]`` matrix)."""
        self.module.eval()
        ct = self._label_index(label)
        idx = self._indices(indices)
        gene_idx, names = self._gene_index(genes)
        total = torch.zeros(len(names), dtype=torch.float64, device=self.device)
        for _, x, rows in self._chunks(idx, batch_size):
            total += self._scale_tensor(ct, x, rows, gene_idx).sum(0, dtype=torch.float64)
        return (total / max(len(idx), 1)).cpu().numpy()

    @torch.inference_mode()
    def sample_expression_for_ct(self, label: str, indices, n_samples: int = 10,
                                 library_size: float | None = None, seed: int = 0,
                                 genes=None, batch_size: int = 2048) -> np.ndarray:
        """Draws of imputed expression for DE (destvi_utils ``de_genes``).

        For each spot, ``n_samples`` draws ``w ~ Gamma(shape=L*scale/e^{px_o}, rate=e^{-px_o})``
        (mean ``L*scale``) at a shared library size ``L`` (default: mean spot library), returned
        as ``log1p(w)`` with shape ``[n_samples * n_spots, G]`` (sample-major).
        """
        self.module.eval()
        ct = self._label_index(label)
        idx = self._indices(indices)
        gene_idx, names = self._gene_index(genes)
        lib = self.mean_library_size if library_size is None else float(library_size)
        px_o = self.module.px_o if gene_idx is None else self.module.px_o[gene_idx]
        rng = np.random.default_rng(seed)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        out = np.empty((n_samples, len(idx), len(names)), np.float32)
        rate = torch.exp(-px_o)
        for sl, x, rows in self._chunks(idx, batch_size):
            mean = lib * self._scale_tensor(ct, x, rows, gene_idx)  # [m, G]
            shape = (mean * rate).clamp_min(1e-8)
            if self.device.type == "cpu":  # numpy's Gamma sampler is several times faster on CPU
                draws = rng.standard_gamma(shape.numpy(), size=(n_samples, *shape.shape),
                                           dtype=np.float32)
                out[:, sl] = np.log1p(draws / rate.numpy())
                continue
            for s in range(n_samples):
                draws = _gamma_sample(shape, generator) / rate
                out[s, sl] = torch.log1p(draws).cpu().numpy()
        return out.reshape(n_samples * len(idx), len(names))


def _gamma_sample(shape: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard Gamma(shape) draws reproducible under ``generator``.

    ``torch._standard_gamma`` ignores explicit generators, so we fork the global RNG state,
    seed it from ``generator`` and restore it afterwards.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    devices = [shape.device] if shape.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return torch._standard_gamma(shape)
