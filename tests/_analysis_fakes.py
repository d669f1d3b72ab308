"""Synthetic data and duck-typed fake models for the analysis tests and benchmark.

Shared by tests/test_analysis_*.py and bench/bench_analysis.py (no trained model needed).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse


def hex_coords(n_side: int = 34, n_rows: int = 33) -> np.ndarray:
    """Visium-like hexagonal grid, unit spot spacing."""
    xs, ys = np.meshgrid(np.arange(n_side, dtype=float), np.arange(n_rows, dtype=float))
    return np.c_[(xs + 0.5 * (ys % 2)).ravel(), (ys * np.sqrt(3) / 2).ravel()]


def disc_proportions(coords: np.ndarray, seed: int = 0, radius: float = 7.0, level: float = 0.4,
                     noise: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Proportion field: high in a disc (with a bump), small |noise| elsewhere. Returns (a, in_disc)."""
    rng = np.random.default_rng(seed)
    c = coords.mean(axis=0)
    r = np.hypot(*(coords - c).T)
    disc = r < radius
    a = np.where(disc, level + 0.15 * np.exp(-r**2 / 30) + rng.normal(0, 0.03, len(r)),
                 np.abs(rng.normal(0, noise, len(r))))
    return np.clip(a, 1e-4, 1.0), disc


class FakeDestVI:
    """Duck-typed DestVI: Gamma/NB-style expression with planted region effects.

    Type ``cell_types[0]`` has genes ``planted`` up-regulated ``fold``x in spots with x < median.
    gamma of every type varies linearly along x in latent direction ``direction``.
    """

    def __init__(self, n_spots_side: int = 34, n_rows: int = 33, n_types: int = 3, n_genes: int = 200,
                 n_latent: int = 5, n_planted: int = 15, fold: float = 3.0, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.coords = hex_coords(n_spots_side, n_rows)
        s = len(self.coords)
        self.cell_types = [f"type_{i}" for i in range(n_types)]
        self.genes = [f"g{j}" for j in range(n_genes)]
        names = [f"spot_{i}" for i in range(s)]
        self.left = self.coords[:, 0] < np.median(self.coords[:, 0])
        self.adata = ad.AnnData(sparse.csr_matrix((s, n_genes), dtype=np.float32),
                                obs=pd.DataFrame({"region": np.where(self.left, "left", "right"),
                                                  "is_left": self.left}, index=names),
                                var=pd.DataFrame(index=self.genes))
        self.adata.obsm["spatial"] = self.coords
        logits = rng.normal(0, 0.5, (s, n_types))
        p = np.exp(logits)
        self._prop = p / p.sum(1, keepdims=True)
        self.base = rng.gamma(2.0, 1.0 / 2.0, n_genes) / n_genes  # per unit library
        self.planted = np.arange(n_planted)
        self.fold = fold
        self.px_o = rng.normal(0.5, 0.3, n_genes)  # log inverse dispersion
        self.mean_library_size = 2000.0
        self._noise_cache: dict[int, np.ndarray] = {}
        self.direction = np.zeros(n_latent)
        self.direction[0], self.direction[1] = 0.8, 0.6
        xn = (self.coords[:, 0] - self.coords[:, 0].mean()) / self.coords[:, 0].std()
        self._gamma = (xn[:, None, None] * self.direction[None, :, None]
                       + 0.1 * rng.normal(size=(s, n_latent, n_types)))

    def get_proportions(self, keep_noise: bool = False, indices=None) -> pd.DataFrame:
        df = pd.DataFrame(self._prop, index=self.adata.obs_names, columns=self.cell_types)
        return df if indices is None else df.iloc[indices]

    def get_gamma(self, indices=None, return_numpy: bool = False):
        g = self._gamma if indices is None else self._gamma[indices]
        if return_numpy:
            return g
        return {ct: pd.DataFrame(g[:, :, c], index=self.adata.obs_names[indices if indices is not None else slice(None)])
                for c, ct in enumerate(self.cell_types)}

    def _noise(self, c: int) -> np.ndarray:
        """Fixed per-spot, per-gene log-normal variation of the type's profile (cached)."""
        if c not in self._noise_cache:
            rng = np.random.default_rng(1000 + c)
            self._noise_cache[c] = np.exp(0.15 * rng.normal(size=(self.adata.n_obs, len(self.genes))))
        return self._noise_cache[c]

    def _scale(self, label: str, indices: np.ndarray) -> np.ndarray:
        c = self.cell_types.index(label)
        sc = self.base * (1 + 0.2 * c) * self._noise(c)[indices]
        if c == 0:
            sc[np.ix_(self.left[indices], self.planted)] *= self.fold
        return sc

    def get_scale_for_ct(self, label: str, indices=None, genes=None) -> pd.DataFrame:
        idx = np.arange(self.adata.n_obs) if indices is None else np.asarray(indices)
        return pd.DataFrame(self._scale(label, idx), index=self.adata.obs_names[idx], columns=self.genes)

    def sample_expression_for_ct(self, label, indices, n_samples=10, library_size=None, seed=0):
        rng = np.random.default_rng(seed)
        lib = self.mean_library_size if library_size is None else library_size
        mean = lib * self._scale(label, np.asarray(indices))
        theta = np.exp(self.px_o)
        draws = rng.gamma(shape=mean[None] * 0 + theta, scale=mean[None] / theta,
                          size=(n_samples,) + mean.shape)
        return np.log1p(draws.reshape(-1, mean.shape[1]))


class FakeCondSCVI:
    """Duck-typed CondSCVI with cells whose latent and expression follow a planted axis."""

    def __init__(self, cell_types: list[str], n_genes: int = 200, n_latent: int = 5, n_cells_per_type: int = 150,
                 direction: np.ndarray | None = None, n_axis_genes: int = 10, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.labels_key = "cell_type"
        self.cell_types = list(cell_types)
        self.genes = [f"g{j}" for j in range(n_genes)]
        n = n_cells_per_type * len(cell_types)
        labels = np.repeat(self.cell_types, n_cells_per_type)
        self.t = rng.normal(size=n)  # position along the planted axis
        d = np.zeros(n_latent) if direction is None else np.asarray(direction, dtype=float)
        if direction is None:
            d[0] = 1.0
        self._latent = self.t[:, None] * d[None] + 0.1 * rng.normal(size=(n, n_latent))
        rate = np.full((n, n_genes), 2.0)
        self.axis_up = np.arange(n_genes - n_axis_genes, n_genes)  # increase with t
        self.axis_down = np.arange(n_genes - 2 * n_axis_genes, n_genes - n_axis_genes)
        rate[:, self.axis_up] *= np.exp(0.8 * self.t)[:, None]
        rate[:, self.axis_down] *= np.exp(-0.8 * self.t)[:, None]
        counts = rng.poisson(rate).astype(np.float32)
        counts[:, 0] = 0  # a zero-variance gene
        self.adata = ad.AnnData(sparse.csr_matrix(counts),
                                obs=pd.DataFrame({"cell_type": pd.Categorical(labels)},
                                                 index=[f"cell_{i}" for i in range(n)]),
                                var=pd.DataFrame(index=self.genes))

    def get_latent_representation(self, adata=None, indices=None) -> np.ndarray:
        return self._latent if indices is None else self._latent[np.asarray(indices)]
