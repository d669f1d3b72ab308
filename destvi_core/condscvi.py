"""CondSCVI: the single-cell reference model (spec section 2, era B).

A conditional VAE: the cell type is injected into every layer of encoder and decoder; the decoder
gives a non-normalised expression profile ``s`` and counts follow
``NB(total_count = library * s, logit = px_r)``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from anndata import AnnData
from torch import nn

from .device import resolve_device
from .errors import DestVIWarning, InputError
from .nn_blocks import (FCLayers, GaussianEncoder, inverse_softplus, kl_normal_standard,
                        mean_composition, nb_log_prob_rows)
from .tensors import (SparseCounts, counts_matrix, iter_chunks, mean_composition_csr,
                      to_device_tensor)
from .training import ProgressCallback, fit_model, seed_everything


class CondSCVIModule(nn.Module):
    """The CondSCVI network: encoder, label-conditioned decoder and gene-wise NB logits."""

    def __init__(self, n_genes: int, n_labels: int, n_latent: int = 5, n_hidden: int = 128,
                 n_layers: int = 2, dropout_rate: float = 0.05):
        super().__init__()
        self.n_labels = n_labels
        self.encoder = GaussianEncoder(n_genes, n_latent, n_labels, n_layers, n_hidden, dropout_rate)
        self.decoder = FCLayers(n_latent, n_hidden, n_labels, n_layers, n_hidden, dropout_rate)
        self.px_decoder = nn.Linear(n_hidden, n_genes)
        self.px_r = nn.Parameter(torch.randn(n_genes))
        self.register_buffer("ct_weight", torch.ones(n_labels))

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Start the decoder at the data's scale (our documented deviation, ``init="data"``).

        With the reference init, ``softplus(px_decoder)`` starts near 0.7 per gene while the
        data need about ``1/G``: the first thousands of steps only shrink the output scale and
        small references never get to learn cell-type structure. Here the output bias starts
        at the average expression profile and ``px_r`` at 0, so training starts at the right
        scale and only learns deviations from it.
        """
        self.init_from_composition(mean_composition(x))

    @torch.no_grad()
    def init_from_composition(self, composition: torch.Tensor) -> None:
        """:meth:`init_from_data` from the average row composition ``[G]`` (sums to 1)."""
        composition = torch.as_tensor(composition, dtype=torch.float32,
                                      device=self.px_decoder.bias.device)
        self.px_decoder.bias.copy_(inverse_softplus(composition.clamp_min(1e-8)))
        self.px_r.zero_()

    def decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Non-normalised expression profile ``softplus(px_decoder(decoder(z, y)))`` [n, G]."""
        return F.softplus(self.px_decoder(self.decoder(z, labels)))

    def loss(self, batch: dict[str, torch.Tensor], kl_weight: float, n_obs: int):
        x, y = batch["x"], batch["y"]
        library = x.sum(1, keepdim=True)  # [m, 1]
        mean, var, z = self.encoder(torch.log1p(x), y)
        scale = self.decode(z, y)  # [m, G]
        recon = -nb_log_prob_rows(x, library * scale, self.px_r, batch.get("x_nz"),
                                  batch.get("x_log_factorial"))  # [m]
        kl = kl_normal_standard(mean, var)  # [m]
        weight = self.ct_weight[y]
        loss = (weight * (recon + kl_weight * kl)).mean()
        return loss, {"reconstruction": recon, "kl_local": kl, "loss": weight * (recon + kl_weight * kl)}


class CondSCVI:
    """Single-cell reference model over an AnnData of raw counts.

    Parameters
    ----------
    adata
        Reference cells x genes; raw counts in ``X`` (or ``layer``), labels in ``obs[labels_key]``.
    labels_key
        Column of ``adata.obs`` with the cell types; category order fixes the type order.
    n_latent, n_hidden, n_layers, dropout_rate
        Architecture (scvi-tools 1.3 defaults: 5, 128, 2, 0.05).
    weight_obs
        Re-weight the loss by inverse cell-type frequency (spec 2.4).
    seed
        Seeds torch and numpy for initialisation, minibatch order and VampPrior k-means.
    init
        ``"data"`` (default, our deviation: output layer starts at the average expression
        profile, see :meth:`CondSCVIModule.init_from_data`) or ``"reference"`` (scvi-tools init).
    device
        ``"auto"`` (CUDA > MPS > CPU), ``"cpu"``, ``"cuda"``, ...
    """

    def __init__(self, adata: AnnData, labels_key: str = "cell_type", layer: str | None = None,
                 n_latent: int = 5, n_hidden: int = 128, n_layers: int = 2,
                 dropout_rate: float = 0.05, weight_obs: bool = False, seed: int = 0,
                 device: str | torch.device = "auto", init: str = "data"):
        if labels_key not in adata.obs:
            raise InputError(f"label column {labels_key!r} not found in the reference obs "
                             f"(columns: {', '.join(map(str, adata.obs.columns[:10])) or 'none'})",
                             "choose the column that holds the cell types")
        labels = adata.obs[labels_key]
        if not isinstance(labels.dtype, pd.CategoricalDtype):
            labels = labels.astype("category")
        labels = labels.cat.remove_unused_categories()
        self.adata = adata
        self.labels_key = labels_key
        self.layer = layer
        self.cell_types: list[str] = [str(c) for c in labels.cat.categories]
        self.genes: list[str] = [str(g) for g in adata.var_names]
        self.labels = labels.cat.codes.to_numpy().astype(np.int64)
        if init not in ("reference", "data"):
            raise InputError(f"unknown init {init!r}", "use 'reference' or 'data'")
        self.hparams = dict(n_latent=n_latent, n_hidden=n_hidden, n_layers=n_layers,
                            dropout_rate=dropout_rate, weight_obs=weight_obs, init=init)
        self.seed = seed
        self.device = resolve_device(device)
        seed_everything(seed)
        self.module = CondSCVIModule(len(self.genes), len(self.cell_types), n_latent, n_hidden,
                                     n_layers, dropout_rate).to(self.device)
        if init == "data":
            self.module.init_from_composition(
                torch.from_numpy(mean_composition_csr(counts_matrix(adata, layer))))
        if weight_obs:
            counts = np.bincount(self.labels, minlength=len(self.cell_types)) / len(self.labels)
            prop = np.clip(counts, 0.05, None)
            prop = prop / prop.sum()
            self.module.ct_weight.copy_(torch.as_tensor(1.0 / prop, dtype=torch.float32))
        self.history: list[dict] = []
        self.train_params: dict = {}
        self.is_trained = False

    # ------------------------------------------------------------------ training
    def train(self, max_epochs: int = 300, lr: float = 1e-3, batch_size: int = 128,
              n_epochs_kl_warmup: int | None = 400, callback: ProgressCallback | None = None,
              should_stop=None, n_steps_kl_warmup: int | None = None,
              progress_interval_s: float = 1.0) -> "CondSCVI":
        """Fit the model (Adam, eps 0.01, weight decay 1e-6; KL warm-up over 400 epochs).

        The counts stay sparse on the device; minibatches are densified when used.
        ``n_steps_kl_warmup`` ramps the KL weight per step instead of per epoch.
        """
        x = SparseCounts(counts_matrix(self.adata, self.layer), self.device)
        y = torch.as_tensor(self.labels, device=self.device)
        return fit_model(self, {"x": x, "y": y}, "condscvi", max_epochs, lr, batch_size,
                         n_epochs_kl_warmup, callback, should_stop, n_steps_kl_warmup,
                         progress_interval_s)

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def get_latent_representation(self, adata: AnnData | None = None,
                                  indices: np.ndarray | None = None, return_var: bool = False,
                                  batch_size: int = 4096):
        """Posterior means ``[n, n_latent]`` (and variances if ``return_var``) of reference cells."""
        self.module.eval()
        adata = self.adata if adata is None else adata
        labels = self.labels if adata is self.adata else self._codes_for(adata)
        matrix = counts_matrix(adata, self.layer)
        idx = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        means, variances = [], []
        for chunk in iter_chunks(len(idx), batch_size):
            rows = idx[chunk]
            x = to_device_tensor(matrix[rows], self.device)
            y = torch.as_tensor(labels[rows], device=self.device)
            mean, var, _ = self.module.encoder(torch.log1p(x), y)
            means.append(mean.cpu().numpy())
            variances.append(var.cpu().numpy())
        d = self.hparams["n_latent"]
        mean = np.concatenate(means) if means else np.zeros((0, d), np.float32)
        var = np.concatenate(variances) if variances else np.zeros((0, d), np.float32)
        return (mean, var) if return_var else mean

    def _codes_for(self, adata: AnnData) -> np.ndarray:
        values = adata.obs[self.labels_key].astype(str)
        unknown = sorted(set(values) - set(self.cell_types))
        if unknown:
            raise InputError(f"cell types {unknown[:5]} are not in the trained model",
                             "use the reference the model was trained on")
        lookup = {c: i for i, c in enumerate(self.cell_types)}
        return values.map(lookup).to_numpy().astype(np.int64)

    def get_vamp_prior(self, p: int | None = 15):
        """Per-type empirical mixture prior from k-means of posterior means (spec 2.6).

        Returns ``(mean [C, p, d], var [C, p, d], weights [C, p])``; unused slots have weight 0.
        """
        from sklearn.cluster import KMeans

        if not self.is_trained:
            warnings.warn("the reference model is not trained; the prior is meaningless",
                          DestVIWarning, stacklevel=2)
        mean_all, var_all = self.get_latent_representation(return_var=True)
        n_types, d = len(self.cell_types), self.hparams["n_latent"]
        mean_v = np.zeros((n_types, p, d), np.float32)
        var_v = np.ones((n_types, p, d), np.float32)
        weight_v = np.zeros((n_types, p), np.float32)
        over = self.adata.obs.get("overclustering_vamp")
        for c in range(n_types):
            cells = np.flatnonzero(self.labels == c)
            if over is not None:
                clusters = pd.factorize(over.to_numpy()[cells])[0]
            elif 0 < p < len(cells):
                km = KMeans(n_clusters=p, n_init=30, random_state=self.seed)
                clusters = km.fit_predict(mean_all[cells])
            else:
                clusters = np.arange(len(cells))
            n_clusters = int(clusters.max()) + 1 if len(clusters) else 0
            if n_clusters > p:
                raise InputError(f"cell type {self.cell_types[c]!r} has {n_clusters} clusters, "
                                 f"more than vamp_prior_p={p}", "increase vamp_prior_p")
            for j in range(n_clusters):
                members = cells[clusters == j]
                m = mean_all[members]
                mean_v[c, j] = m.mean(0)
                var_v[c, j] = var_all[members].mean(0) + m.var(0)
                weight_v[c, j] = len(members) / len(cells)
        return mean_v, var_v, weight_v
