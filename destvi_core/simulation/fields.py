"""Geometry, smooth random fields and negative-binomial counts used by the simulators."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .base import SPOT_SPACING

_CHUNK = 2048

# --------------------------------------------------------------------------------------------
# geometry and smooth fields
# --------------------------------------------------------------------------------------------

def hex_grid(n_spots: int, spacing: float = SPOT_SPACING) -> tuple[np.ndarray, np.ndarray]:
    """Visium-like hexagonal grid of ``n_spots`` spots forming a round piece of tissue.

    Parameters
    ----------
    n_spots
        Number of spots to return.
    spacing
        Centre-to-centre distance of neighbouring spots.

    Returns
    -------
    coords
        ``[n_spots, 2]`` float64 ``(x, y)`` coordinates.
    array_rc
        ``[n_spots, 2]`` int ``(array_row, array_col)`` indices (Visium convention: odd rows are
        shifted by half a spot, columns step by 2).
    """
    side = int(np.ceil(np.sqrt(n_spots * 1.6))) + 2
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    x = (cols + 0.5 * (rows % 2)) * spacing
    y = rows * spacing * np.sqrt(3.0) / 2.0
    coords = np.column_stack([x, y])
    dist = np.linalg.norm(coords - coords.mean(axis=0), axis=1)
    keep = np.sort(np.argsort(dist, kind="stable")[:n_spots])
    array_rc = np.column_stack([rows[keep], 2 * cols[keep] + rows[keep] % 2])
    coords = coords[keep]
    return coords - coords.min(axis=0) + spacing, array_rc


class SmoothField:
    """Stationary Gaussian random field with an RBF kernel via random Fourier features.

    ``f(x) = sqrt(2/M) * sum_m a_m cos(w_m . x + b_m)`` with ``w ~ N(0, I / lengthscale^2)`` is a
    cheap approximation of a GP draw with kernel ``exp(-d^2 / (2 lengthscale^2))``; it can be
    evaluated at any location (spots and single cells share one field). Fields are standardised
    on ``reference`` locations (mean 0, sd ``scale``).

    Parameters
    ----------
    n_fields
        Number of independent fields.
    lengthscale
        RBF length-scale in coordinate units.
    rng
        NumPy random generator.
    reference
        ``[n, 2]`` locations used to standardise the fields.
    scale
        Standard deviation of the fields on ``reference``.
    n_features
        Number of random features ``M``.
    """

    def __init__(self, n_fields: int, lengthscale: float, rng: np.random.Generator,
                 reference: np.ndarray, scale: float = 1.0, n_features: int = 256):
        self.omega = rng.normal(0.0, 1.0 / lengthscale, size=(n_fields, n_features, 2))
        self.phase = rng.uniform(0.0, 2 * np.pi, size=(n_fields, n_features))
        self.weight = rng.normal(size=(n_fields, n_features))
        raw = self._raw(reference)
        self.shift = raw.mean(axis=0)
        self.factor = scale / np.maximum(raw.std(axis=0), 1e-12)

    def _raw(self, coords: np.ndarray, fields: np.ndarray | None = None) -> np.ndarray:
        fields = np.arange(self.omega.shape[0]) if fields is None else np.asarray(fields)
        omega, phase, weight = self.omega[fields], self.phase[fields], self.weight[fields]
        n_fields, n_features = phase.shape
        proj = coords @ omega.reshape(-1, 2).T + phase.reshape(1, -1)  # [n, F*M]
        np.cos(proj, out=proj)
        out = (proj.reshape(len(coords), n_fields, n_features) * weight[None]).sum(-1)
        return np.sqrt(2.0 / n_features) * out

    def __call__(self, coords: np.ndarray, fields: np.ndarray | None = None) -> np.ndarray:
        """Evaluate fields (all, or the listed indices) at ``coords`` ``[n, 2]`` -> ``[n, F]``."""
        fields = np.arange(self.omega.shape[0]) if fields is None else np.asarray(fields)
        return (self._raw(coords, fields) - self.shift[fields]) * self.factor[fields]


def gp_draws(coords: np.ndarray, n_draws: int, lengthscale_sq: float, variance: float,
             rng: np.random.Generator) -> np.ndarray:
    """Exact GP draws with kernel ``variance * exp(-d^2 / lengthscale_sq)`` (paper convention).

    Parameters
    ----------
    coords
        ``[n, 2]`` locations.
    n_draws
        Number of independent draws.
    lengthscale_sq
        Denominator of the kernel exponent (the paper uses ``lambda * bw^2``).
    variance
        Kernel amplitude.
    rng
        NumPy random generator.

    Returns
    -------
    np.ndarray
        ``[n, n_draws]``.
    """
    sq = ((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)
    kernel = variance * np.exp(-sq / lengthscale_sq)
    vals, vecs = np.linalg.eigh(kernel)
    root = vecs * np.sqrt(np.clip(vals, 0.0, None))
    return root @ rng.normal(size=(len(coords), n_draws))


# --------------------------------------------------------------------------------------------
# counts
# --------------------------------------------------------------------------------------------

def gamma_poisson(mean: np.ndarray, theta: np.ndarray, rng: np.random.Generator) -> sp.csr_matrix:
    """Negative-binomial counts: ``Poisson(Gamma(theta, rate=theta / mean))`` as float32 CSR.

    Parameters
    ----------
    mean
        ``[n, G]`` expected counts (processed in row chunks to bound memory).
    theta
        ``[G]`` inverse dispersion.
    rng
        NumPy random generator.
    """
    blocks = []
    for start in range(0, mean.shape[0], _CHUNK):
        mu = mean[start:start + _CHUNK]
        rate = rng.standard_gamma(np.broadcast_to(theta, mu.shape)) * (mu / theta[None, :])
        blocks.append(_dense_to_csr(rng.poisson(rate)))
    return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, mean.shape[1]),
                                                                        dtype=np.float32)


def _dense_to_csr(counts: np.ndarray) -> sp.csr_matrix:
    """Fast dense integer array -> float32 CSR (row-major ``np.nonzero`` is already sorted)."""
    rows, cols = np.nonzero(counts)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=counts.shape[0]))])
    data = counts[rows, cols].astype(np.float32)
    return sp.csr_matrix((data, cols.astype(np.int32), indptr.astype(np.int32)),
                         shape=counts.shape)


def _radial_regions(coords: np.ndarray, n_regions: int) -> np.ndarray:
    """Equal-area concentric bands: region 0 is the outer ring, last region the centre."""
    if n_regions <= 1:
        return np.zeros(len(coords), dtype=int)
    centre = coords.mean(axis=0)
    radius = np.linalg.norm(coords - centre, axis=1)
    rmax = radius.max() + 1e-9
    frac = (radius / rmax) ** 2  # equal-area bands
    band = np.floor((1.0 - frac) * n_regions).astype(int)
    return np.clip(band, 0, n_regions - 1)


def _lognormal_sizes(n: int, median: float, rng: np.random.Generator,
                     sigma: float = 0.35) -> np.ndarray:
    return median * np.exp(rng.normal(0.0, sigma, size=n))
