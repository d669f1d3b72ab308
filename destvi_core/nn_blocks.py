"""Neural building blocks shared by the two models (spec section 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FCLayers(nn.Module):
    """Stack of Linear -> LayerNorm (no affine) -> ReLU -> Dropout layers.

    A one-hot categorical covariate (the cell type) is concatenated to the input of every
    layer when ``n_cat > 1`` (spec 1.1, ``inject_covariates=True``).
    """

    def __init__(self, n_in: int, n_out: int, n_cat: int = 0, n_layers: int = 2,
                 n_hidden: int = 128, dropout_rate: float = 0.05):
        super().__init__()
        self.n_cat = n_cat if n_cat > 1 else 0
        dims = [n_in] + [n_hidden] * (n_layers - 1) + [n_out]
        self.linears = nn.ModuleList(
            nn.Linear(d_in + self.n_cat, d_out) for d_in, d_out in zip(dims[:-1], dims[1:])
        )
        self.norms = nn.ModuleList(nn.LayerNorm(d, elementwise_affine=False) for d in dims[1:])
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, cat: torch.Tensor | None = None) -> torch.Tensor:
        onehot = None
        if self.n_cat:
            onehot = F.one_hot(cat.reshape(-1).long(), self.n_cat).to(x.dtype)  # [n, C]
        for linear, norm in zip(self.linears, self.norms):
            if onehot is not None:
                x = torch.cat([x, onehot], dim=-1)
            x = self.dropout(F.relu(norm(linear(x))))
        return x


class GaussianEncoder(nn.Module):
    """FCLayers followed by mean and variance heads; variance = exp(head) + 1e-4 (spec 1.2)."""

    def __init__(self, n_in: int, n_out: int, n_cat: int = 0, n_layers: int = 2,
                 n_hidden: int = 128, dropout_rate: float = 0.05, var_eps: float = 1e-4):
        super().__init__()
        self.body = FCLayers(n_in, n_hidden, n_cat, n_layers, n_hidden, dropout_rate)
        self.mean = nn.Linear(n_hidden, n_out)
        self.log_var = nn.Linear(n_hidden, n_out)
        self.var_eps = var_eps

    def forward(self, x: torch.Tensor, cat: torch.Tensor | None = None):
        h = self.body(x, cat)
        mean = self.mean(h)
        var = torch.exp(self.log_var(h)) + self.var_eps
        z = mean + var.sqrt() * torch.randn_like(mean)
        return mean, var, z


def nb_log_prob_logits(x: torch.Tensor, total_count: torch.Tensor, logits: torch.Tensor,
                       eps: float = 1e-8) -> torch.Tensor:
    """Negative binomial log-likelihood in total-count / logit form (spec 1.3).

    ``mean = total_count * exp(logits)``; equals
    ``torch.distributions.NegativeBinomial(total_count, logits=logits).log_prob(x)``
    written through the mean/inverse-dispersion formula with theta = total_count.
    """
    theta = total_count
    mu = total_count * torch.exp(logits)
    log_theta_mu = torch.log(theta + mu + eps)
    return (theta * (torch.log(theta + eps) - log_theta_mu)
            + x * (torch.log(mu + eps) - log_theta_mu)
            + torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1))


def kl_normal_standard(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Closed-form KL(N(mean, var) || N(0, 1)) summed over the last dimension."""
    return 0.5 * (var + mean.pow(2) - 1.0 - torch.log(var)).sum(-1)


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """``softplus^{-1}(y) = log(expm1(y))``, stable for small and large ``y``."""
    return torch.where(y > 20, y, torch.log(torch.expm1(y.clamp_min(1e-12))))


def mean_composition(x: torch.Tensor) -> torch.Tensor:
    """Average of the rows of ``x`` normalised to sum 1 (zero rows contribute nothing)."""
    return (x / x.sum(1, keepdim=True).clamp_min(1)).mean(0)
