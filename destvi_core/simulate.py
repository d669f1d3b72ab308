"""Simulated single-cell reference + Visium-like spatial data with known truth.

The generator follows the DestVI paper (spec section 5.1): smooth spatial random fields drive the
cell-type proportions (softmax with a temperature) and a continuous cell state ``gamma`` per cell
type; expression is log-linear in ``gamma``; counts are Gamma-Poisson (negative binomial).

Layout of the returned data (:class:`SimulatedData`)
----------------------------------------------------
``sc`` (reference, cells x genes)
    ``X`` raw integer counts (float32 CSR); ``obs['cell_type']`` categorical; ``obs['region']``
    region of the cell's (hidden) location; ``obsm['true_gamma']`` ``[n_cells, n_latent]`` state
    of each cell (for its own type).
``st`` (spots x genes)
    ``X`` raw integer counts (float32 CSR); ``obsm['spatial']`` float64 ``[S, 2]`` pixel-like
    coordinates on a hexagonal grid (spot spacing 100); ``obs['array_row']``, ``obs['array_col']``;
    ``obs['region']`` categorical; ``obsm['true_proportions']`` DataFrame ``[S, C]`` (index = spot
    names, columns = cell types, rows sum to 1: realised cell frequencies);
    ``obsm['true_gamma_<type>']`` ``[S, n_latent]`` state of that type at each spot (one key per
    cell type, exact type name); ``uns['simulation']`` generator parameters (see
    :func:`true_scale_for_ct`).
``gene_sets``
    ``PLANTED_<TYPE>_STATE<k>_UP`` / ``_DOWN`` (genes loading strongly on gamma dimension ``k`` of
    that type), ``PLANTED_<TYPE>_REGION_<REGION>_UP`` (genes up in that type inside a region), and
    ``DECOY_<nn>`` random sets of similar size. ``<TYPE>`` is the type name upper-cased with
    non-alphanumerics replaced by ``_`` (see :func:`set_label`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

SPOT_SPACING = 100.0
"""Centre-to-centre distance of neighbouring spots (pixel-like units, Visium-like)."""

_CHUNK = 2048


@dataclass
class SimulatedData:
    """Simulated reference, spatial data and planted gene sets.

    Attributes
    ----------
    sc
        Single-cell reference AnnData (counts in ``X``, labels in ``obs['cell_type']``).
    st
        Spatial AnnData with truth in ``obsm`` (see module docstring).
    gene_sets
        Gene set name -> list of genes (planted programs and decoys).
    descriptions
        Optional gene set name -> human-readable description (written in the GMT file).
    """

    sc: ad.AnnData
    st: ad.AnnData
    gene_sets: dict[str, list[str]]
    descriptions: dict[str, str] = field(default_factory=dict)

    @property
    def cell_types(self) -> list[str]:
        """Cell-type names in category order."""
        return list(self.sc.obs["cell_type"].cat.categories)

    def true_gamma(self) -> np.ndarray:
        """Spot-level states stacked as ``[S, n_latent, C]`` (category order)."""
        return np.stack([self.st.obsm[true_gamma_key(ct)] for ct in self.cell_types], axis=-1)


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


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def set_label(name: str) -> str:
    """Upper-case gene-set token for a cell type or region (``"CD8 T cells"`` -> ``CD8_T_CELLS``)."""
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").upper()


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


# --------------------------------------------------------------------------------------------
# generator parameters
# --------------------------------------------------------------------------------------------

@dataclass
class _Design:
    """Expression parameters of the generic simulator (log-scale, softmax link)."""

    base: np.ndarray            # [C, G] type mean log-profile
    components: np.ndarray      # [C, d, G] gamma loadings
    region_effect: np.ndarray   # [C, R, G] additive log effect per region
    theta: np.ndarray           # [G]
    gene_sets: dict[str, list[str]]
    descriptions: dict[str, str]


def _take(pool: list[int], n: int, rng: np.random.Generator, n_genes: int) -> np.ndarray:
    """Take ``n`` genes from a shuffled pool, falling back to random genes when it runs dry."""
    if len(pool) >= n:
        out = [pool.pop() for _ in range(n)]
    else:
        out = list(rng.choice(n_genes, size=n, replace=False))
    return np.asarray(out, dtype=int)


def _design(type_names: list[str], n_genes: int, n_latent: int, region_names: list[str],
            region_programs: list[tuple[int, int]], program_size: int, n_markers: int,
            n_decoys: int, rng: np.random.Generator, gene_names: list[str]) -> _Design:
    """Draw baseline, marker, program, region and dispersion parameters."""
    n_types, n_regions = len(type_names), len(region_names)
    baseline = rng.normal(-0.5, 1.2, size=n_genes)
    base = baseline[None, :] + rng.normal(0.0, 0.2, size=(n_types, n_genes))
    components = np.zeros((n_types, n_latent, n_genes))
    noise_mask = rng.random(components.shape) < 0.05
    components[noise_mask] = rng.normal(0.0, 0.15, size=noise_mask.sum())
    region_effect = np.zeros((n_types, n_regions, n_genes))
    pool = list(rng.permutation(n_genes))
    gene_sets: dict[str, list[str]] = {}
    descriptions: dict[str, str] = {}
    names = np.asarray(gene_names)
    for c in range(n_types):
        markers = _take(pool, n_markers, rng, n_genes)
        base[c, markers] += rng.uniform(1.0, 2.0, size=n_markers)
    for c, ct in enumerate(type_names):
        for k in range(n_latent):
            for sign, suffix in ((1.0, "UP"), (-1.0, "DOWN")):
                genes = _take(pool, program_size, rng, n_genes)
                components[c, k, genes] = sign * rng.uniform(0.6, 1.0, size=program_size)
                key = f"PLANTED_{set_label(ct)}_STATE{k}_{suffix}"
                gene_sets[key] = list(names[genes])
                descriptions[key] = (f"planted: {ct} genes {'up' if sign > 0 else 'down'}"
                                     f" along state dimension {k}")
    for c, r in region_programs:
        genes = _take(pool, program_size, rng, n_genes)
        region_effect[c, r, genes] = rng.uniform(1.0, 1.5, size=program_size)
        key = f"PLANTED_{set_label(type_names[c])}_REGION_{set_label(region_names[r])}_UP"
        gene_sets[key] = list(names[genes])
        descriptions[key] = f"planted: {type_names[c]} genes up in region {region_names[r]}"
    for i in range(n_decoys):
        size = int(rng.integers(max(5, program_size - 10), program_size + 11))
        key = f"DECOY_{i + 1:02d}"
        gene_sets[key] = list(names[rng.choice(n_genes, size=size, replace=False)])
        descriptions[key] = "decoy: random genes (should not be enriched)"
    theta = np.exp(rng.uniform(np.log(5.0), np.log(50.0), size=n_genes))
    return _Design(base, components, region_effect, theta, gene_sets, descriptions)


def _profiles(design: _Design, c: int, gamma: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Normalised expression profile ``[n, G]`` of type ``c`` at states ``gamma`` ``[n, d]``."""
    logits = design.base[c][None, :] + gamma @ design.components[c]
    logits = logits + design.region_effect[c][region]
    return softmax(logits, axis=1)


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


# --------------------------------------------------------------------------------------------
# public generators
# --------------------------------------------------------------------------------------------

def simulate_destvi(n_spots: int = 1000, n_cells: int = 4000, n_types: int = 6,
                    n_genes: int = 2000, n_latent: int = 3, cells_per_spot: int = 10,
                    temperature: float = 1.0, seed: int = 0, type_names: list[str] | None = None,
                    *, proportion_scale: float = 2.0, proportion_lengthscale: float = 0.15,
                    gamma_lengthscale: float = 0.25, n_regions: int = 3,
                    region_names: list[str] | None = None,
                    region_bias: np.ndarray | None = None,
                    region_programs: list[tuple[int, int]] | None = None,
                    program_size: int = 25, n_markers: int = 60, n_decoys: int = 20,
                    sc_library_size: float = 3000.0, st_library_size: float = 5000.0,
                    reference_uniform_mix: float = 0.3,
                    gene_names: list[str] | None = None) -> SimulatedData:
    """Simulate a reference and a Visium-like slide with planted programs and known truth.

    Parameters
    ----------
    n_spots, n_cells
        Number of spots and of reference cells.
    n_types, n_genes, n_latent
        Number of cell types, genes and continuous state dimensions (``gamma``) per type.
    cells_per_spot
        Cells per spot; types ~ Categorical(proportion field); ``true_proportions`` are the
        realised frequencies.
    temperature
        Softmax temperature of the proportion logits (lower = purer spots).
    seed
        Seed of the ``numpy`` generator (same seed -> identical data).
    type_names
        Cell-type names (default ``"Type 0"`` ...); overrides ``n_types``.
    proportion_scale
        Standard deviation of the proportion logit fields.
    proportion_lengthscale, gamma_lengthscale
        RBF length-scales as fractions of the tissue width.
    n_regions, region_names
        Concentric tissue regions (outer ring first) stored in ``obs['region']``.
    region_bias
        Optional ``[C, R]`` additive logit bias (type enrichment per region).
    region_programs
        ``(type index, region index)`` pairs with planted region-specific up-regulation
        (default: first two types, in the first and last region).
    program_size
        Genes per planted program (UP and DOWN sets each).
    n_markers
        Marker genes per type (log-fold 1-2), which make deconvolution identifiable.
    n_decoys
        Random gene sets added to ``gene_sets``.
    sc_library_size, st_library_size
        Median UMIs per cell / per spot (log-normal, sd 0.35 on the log scale).
    reference_uniform_mix
        Reference cell types are drawn from ``(1 - mix) * proportions + mix * uniform`` at random
        tissue locations, so every type has cells.
    gene_names
        Optional gene names (default ``Gene0001`` ...).

    Returns
    -------
    SimulatedData
    """
    rng = np.random.default_rng(seed)
    type_names = list(type_names) if type_names is not None else [f"Type {i}" for i in
                                                                   range(n_types)]
    n_types = len(type_names)
    region_names = list(region_names) if region_names is not None else [
        f"region_{r}" for r in range(n_regions)]
    n_regions = len(region_names)
    if region_programs is None:
        region_programs = [(0, 0), (1 % n_types, n_regions - 1)][:min(2, n_types)]
    gene_names = list(gene_names) if gene_names is not None else [f"Gene{i + 1:04d}" for i in
                                                                   range(n_genes)]
    n_genes = len(gene_names)
    design = _design(type_names, n_genes, n_latent, region_names, region_programs,
                     program_size, n_markers, n_decoys, rng, gene_names)

    coords, array_rc = hex_grid(n_spots)
    width = float(np.ptp(coords, axis=0).max())
    prop_field = SmoothField(n_types, proportion_lengthscale * width, rng, coords,
                             scale=proportion_scale)
    gamma_field = SmoothField(n_latent * n_types, gamma_lengthscale * width, rng, coords)
    regions = _radial_regions(coords, n_regions)
    centre, rmax = coords.mean(axis=0), np.linalg.norm(coords - coords.mean(axis=0),
                                                       axis=1).max()

    def probs_at(xy: np.ndarray, reg: np.ndarray) -> np.ndarray:
        logits = prop_field(xy)
        if region_bias is not None:
            logits = logits + np.asarray(region_bias, dtype=float).T[reg]
        return softmax(logits / temperature, axis=1)

    def gamma_at(xy: np.ndarray) -> np.ndarray:
        return gamma_field(xy).reshape(len(xy), n_types, n_latent)  # [n, C, d]

    # spots
    spot_probs = probs_at(coords, regions)
    counts_ct = np.stack([rng.multinomial(cells_per_spot, p) for p in spot_probs])
    freq = counts_ct / cells_per_spot
    spot_gamma = gamma_at(coords)
    spot_profile = np.zeros((n_spots, n_genes))
    for c in range(n_types):
        present = freq[:, c] > 0
        if present.any():
            spot_profile[present] += freq[present, c, None] * _profiles(
                design, c, spot_gamma[present, c], regions[present])
    spot_lib = _lognormal_sizes(n_spots, st_library_size, rng)
    st_counts = gamma_poisson(spot_profile * spot_lib[:, None], design.theta, rng)

    # reference cells at random tissue locations
    cell_xy = coords[rng.integers(0, n_spots, size=n_cells)] + rng.uniform(
        -SPOT_SPACING / 2, SPOT_SPACING / 2, size=(n_cells, 2))
    cell_reg = _radial_regions(np.vstack([cell_xy, centre + [rmax, 0]]), n_regions)[:-1]
    cell_probs = (1 - reference_uniform_mix) * probs_at(cell_xy, cell_reg) + (
        reference_uniform_mix / n_types)
    cell_type = (cell_probs.cumsum(axis=1) > rng.random((n_cells, 1))).argmax(axis=1)
    cell_gamma = np.zeros((n_cells, n_latent))
    cell_profile = np.zeros((n_cells, n_genes))
    for c in range(n_types):
        idx = np.flatnonzero(cell_type == c)
        if idx.size:
            cell_gamma[idx] = gamma_field(cell_xy[idx], np.arange(c * n_latent,
                                                                  (c + 1) * n_latent))
            cell_profile[idx] = _profiles(design, c, cell_gamma[idx], cell_reg[idx])
    cell_lib = _lognormal_sizes(n_cells, sc_library_size, rng)
    sc_counts = gamma_poisson(cell_profile * cell_lib[:, None], design.theta, rng)

    sc = _make_sc(sc_counts, gene_names, type_names, cell_type, region_names, cell_reg,
                  cell_gamma)
    st = _make_st(st_counts, gene_names, type_names, coords, array_rc, freq, spot_gamma,
                  region_names, regions)
    st.uns["simulation"] = {
        "generator": "simulate_destvi", "seed": int(seed), "link": "softmax",
        "cell_types": np.asarray(type_names, dtype=object),
        "regions": np.asarray(region_names, dtype=object),
        "mean_": design.base.astype(np.float32),
        "components_": design.components.astype(np.float32),
        "region_effect": design.region_effect.astype(np.float32),
        "theta": design.theta.astype(np.float32),
    }
    return SimulatedData(sc, st, design.gene_sets, design.descriptions)


def _make_sc(counts: sp.csr_matrix, genes: list[str], types: list[str], labels: np.ndarray,
             region_names: list[str], regions: np.ndarray, gamma: np.ndarray) -> ad.AnnData:
    obs = pd.DataFrame(index=[f"cell_{i:05d}" for i in range(counts.shape[0])])
    obs["cell_type"] = pd.Categorical.from_codes(labels, categories=types)
    obs["region"] = pd.Categorical.from_codes(regions, categories=region_names)
    sc = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=genes))
    sc.obsm["true_gamma"] = gamma.astype(np.float32)
    return sc


def _make_st(counts: sp.csr_matrix, genes: list[str], types: list[str], coords: np.ndarray,
             array_rc: np.ndarray | None, freq: np.ndarray, gamma: np.ndarray,
             region_names: list[str] | None, regions: np.ndarray | None) -> ad.AnnData:
    """Build the spatial AnnData; ``gamma`` is ``[S, C, d]``."""
    index = [f"spot_{i:04d}" for i in range(counts.shape[0])]
    obs = pd.DataFrame(index=index)
    if array_rc is not None:
        obs["array_row"] = array_rc[:, 0]
        obs["array_col"] = array_rc[:, 1]
    if region_names is not None:
        obs["region"] = pd.Categorical.from_codes(regions, categories=region_names)
    st = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=genes))
    st.obsm["spatial"] = np.asarray(coords, dtype=np.float64)
    st.obsm["true_proportions"] = pd.DataFrame(freq, index=index, columns=types)
    for c, ct in enumerate(types):
        st.obsm[true_gamma_key(ct)] = gamma[:, c, :].astype(np.float32)
    return st


def true_gamma_key(cell_type: str) -> str:
    """obsm key of a type's true state ('/' is not allowed in HDF5 keys)."""
    return f"true_gamma_{cell_type}".replace("/", "_")


def true_scale_for_ct(st: ad.AnnData, cell_type: str,
                      indices: np.ndarray | None = None) -> pd.DataFrame:
    """Ground-truth normalised expression of ``cell_type`` at each spot (rows sum to 1).

    Uses ``st.uns['simulation']`` and ``st.obsm['true_gamma_<type>']``; comparable to
    ``DestVI.get_scale_for_ct`` (the paper's expression ground truth, spec 5.3).

    Parameters
    ----------
    st
        Spatial AnnData returned by a simulator of this module.
    cell_type
        Cell-type name.
    indices
        Optional integer spot positions.
    """
    sim = st.uns["simulation"]
    types = [str(t) for t in sim["cell_types"]]
    c = types.index(cell_type)
    idx = np.arange(st.n_obs) if indices is None else np.asarray(indices)
    gamma = np.asarray(st.obsm[true_gamma_key(cell_type)])[idx]
    logits = np.asarray(sim["mean_"])[c][None, :] + gamma @ np.asarray(sim["components_"])[c]
    if sim["link"] == "softmax":
        if "region" in st.obs:
            codes = st.obs["region"].cat.codes.to_numpy()[idx]
            logits = logits + np.asarray(sim["region_effect"])[c][codes]
        scale = softmax(logits, axis=1)
    else:
        scale = np.expm1(np.clip(logits, 0.0, None))
        scale = scale / np.maximum(scale.sum(axis=1, keepdims=True), 1e-12)
    return pd.DataFrame(scale, index=st.obs_names[idx], columns=st.var_names)


# --------------------------------------------------------------------------------------------
# demo, tutorial-size and paper configurations
# --------------------------------------------------------------------------------------------

DEMO_TYPES = ["B cells", "CD4 T cells", "CD8 T cells", "Monocytes", "Dendritic cells",
              "Plasma cells", "NK cells", "Stromal cells"]
"""Cell types of the built-in lymph-node-like demo."""

DEMO_REGIONS = ["cortex", "paracortex", "medulla"]
"""Demo regions, outer ring to centre."""

_DEMO_MARKERS = {
    "B cells": ["Cd19", "Ms4a1", "Cd79a", "Cd79b", "Pax5"],
    "CD4 T cells": ["Cd4", "Il7r", "Cd3e", "Cd40lg", "Tcf7"],
    "CD8 T cells": ["Cd8a", "Cd8b1", "Cd3g", "Ccl5", "Cd3d"],
    "Monocytes": ["Lyz2", "Cd14", "Fcgr3", "Csf1r", "Ly6c2"],
    "Dendritic cells": ["Itgax", "Flt3", "H2-Ab1", "Cd74", "Xcr1"],
    "Plasma cells": ["Jchain", "Sdc1", "Mzb1", "Prdm1", "Igkc"],
    "NK cells": ["Ncr1", "Klrb1c", "Klrd1", "Nkg7", "Gzma"],
    "Stromal cells": ["Pdgfra", "Ccl19", "Ccl21a", "Lum", "Dcn"],
}

# (type, state dim) -> (story name, real-looking genes of the UP program)
_DEMO_PROGRAMS = {
    ("Monocytes", 0): ("IFN_RESPONSE", ["Isg15", "Ifit1", "Ifit3", "Irf7", "Mx1", "Rsad2",
                                        "Oasl1", "Stat1", "Bst2", "Usp18", "Ifi44", "Cxcl10"]),
    ("B cells", 0): ("GERMINAL_CENTER", ["Aicda", "Bcl6", "Mki67", "Top2a", "S1pr2", "Gcsam",
                                         "Rgs13", "Mef2b", "Myb", "Cxcr4"]),
    ("CD8 T cells", 0): ("CYTOTOXICITY", ["Gzmb", "Prf1", "Ifng", "Gzmk", "Fasl", "Ctsw",
                                          "Klrg1", "Cx3cr1", "Tbx21", "Zeb2"]),
    ("CD4 T cells", 0): ("T_ACTIVATION", ["Cd69", "Nr4a1", "Il2", "Egr1", "Fos", "Junb",
                                          "Tnf", "Icos", "Cd40lg2", "Il2ra"]),
    ("Dendritic cells", 0): ("DC_MIGRATION", ["Ccr7", "Fscn1", "Ccl22", "Il4i1", "Cd40",
                                              "Cd80", "Cd86", "Socs2", "Relb", "Nudt17"]),
    ("Stromal cells", 0): ("ECM_REMODELING", ["Col1a1", "Col1a2", "Col3a1", "Fn1", "Sparc",
                                              "Postn", "Mmp2", "Timp1", "Lox", "Tnc"]),
    ("Plasma cells", 0): ("UNFOLDED_PROTEIN_RESPONSE", ["Xbp1", "Hspa5", "Sec61b", "Ssr4",
                                                        "Derl3", "Edem1", "Pdia4", "Herpud1",
                                                        "Manf", "Dnajb9"]),
    ("NK cells", 0): ("NK_ACTIVATION", ["Klrk1", "Ncr3", "Il2rb", "Cd226", "Tyrobp", "Fcer1g",
                                        "Xcl1", "Ccl3", "Ccl4", "Irf8"]),
}


_DEMO_PREFIX = {"B cells": "Bcell", "CD4 T cells": "Tcd4", "CD8 T cells": "Tcd8",
                "Monocytes": "Mono", "Dendritic cells": "Dc", "Plasma cells": "Plasma",
                "NK cells": "Nk", "Stromal cells": "Strom"}


def _rename_demo_genes(sim: SimulatedData) -> SimulatedData:
    """Give the demo's markers and planted programs readable gene names."""
    rename: dict[str, str] = {}
    base = np.asarray(sim.st.uns["simulation"]["mean_"])
    genes = np.asarray(sim.sc.var_names)
    for c, ct in enumerate(DEMO_TYPES):
        others = np.delete(base, c, axis=0).max(axis=0)
        top = genes[np.argsort(-(base[c] - others), kind="stable")]
        free = [g for g in top if g not in rename][:len(_DEMO_MARKERS[ct])]
        rename.update(dict(zip(free, _DEMO_MARKERS[ct])))
    descriptions = dict(sim.descriptions)
    for key in list(sim.gene_sets):
        match = re.match(r"PLANTED_(.+)_STATE(\d+)_(UP|DOWN)$", key)
        if not match:
            continue
        ct = next(t for t in DEMO_TYPES if set_label(t) == match.group(1))
        k, direction = int(match.group(2)), match.group(3)
        story, real = _DEMO_PROGRAMS.get((ct, k), (None, []))
        prefix = f"{_DEMO_PREFIX[ct]}_state{k}_{direction.lower()}"
        new_names = list(real) if direction == "UP" else []
        for i, gene in enumerate(sim.gene_sets[key]):
            rename.setdefault(gene, new_names[i] if i < len(new_names) else f"{prefix}{i + 1:02d}")
        if story:
            descriptions[key] = f"{story} ({descriptions[key]})"
    for adata in (sim.sc, sim.st):
        adata.var_names = [rename.get(g, g) for g in adata.var_names]
    gene_sets = {k: [rename.get(g, g) for g in v] for k, v in sim.gene_sets.items()}
    return SimulatedData(sim.sc, sim.st, gene_sets, descriptions)


def demo_dataset(seed: int = 0) -> SimulatedData:
    """Lymph-node-like demo: 8 immune/stromal types, 4000 cells, 1000 spots, 2000 genes.

    Regions are concentric (``cortex`` outside, ``paracortex``, ``medulla`` in the centre) and
    bias the composition (B cells in the cortex, T cells in the paracortex, plasma cells and
    monocytes in the medulla). Markers and the planted ``STATE0_UP`` programs have readable gene
    names (e.g. monocyte ``IFN_RESPONSE``: Isg15, Ifit1, Irf7, ...; see ``descriptions``). Runs in
    about a second.

    Parameters
    ----------
    seed
        Random seed.
    """
    bias = np.zeros((len(DEMO_TYPES), len(DEMO_REGIONS)))
    bias[DEMO_TYPES.index("B cells"), 0] = 2.0
    bias[DEMO_TYPES.index("CD4 T cells"), 1] = 1.5
    bias[DEMO_TYPES.index("CD8 T cells"), 1] = 1.5
    bias[DEMO_TYPES.index("Plasma cells"), 2] = 2.0
    bias[DEMO_TYPES.index("Monocytes"), 2] = 1.0
    programs = [(DEMO_TYPES.index("B cells"), 0), (DEMO_TYPES.index("Monocytes"), 2)]
    sim = simulate_destvi(n_spots=1000, n_cells=4000, n_genes=2000, n_latent=2,
                          cells_per_spot=10, seed=seed, type_names=DEMO_TYPES,
                          region_names=DEMO_REGIONS, region_bias=bias,
                          region_programs=programs)
    sim.st.uns["simulation"]["generator"] = "demo_dataset"
    return _rename_demo_genes(sim)


def tutorial_size_simulation(seed: int = 0) -> SimulatedData:
    """Benchmark-size data like the DestVI tutorial: 15,000 cells, 12 types, 1,100 spots.

    Parameters
    ----------
    seed
        Random seed.
    """
    return simulate_destvi(n_spots=1100, n_cells=15000, n_types=12, n_genes=2000, n_latent=3,
                           cells_per_spot=10, seed=seed, program_size=20, n_markers=50)


def write_demo(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the demo as ``sc.h5ad``, ``st.h5ad`` and ``genesets.gmt`` in ``out_dir``.

    Parameters
    ----------
    out_dir
        Output folder (created if needed).
    seed
        Random seed.

    Returns
    -------
    dict
        ``{"sc": path, "st": path, "gene_sets": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sim = demo_dataset(seed=seed)
    paths = {"sc": out / "sc.h5ad", "st": out / "st.h5ad", "gene_sets": out / "genesets.gmt"}
    sim.sc.write_h5ad(paths["sc"])
    sim.st.write_h5ad(paths["st"])
    write_gmt(sim.gene_sets, paths["gene_sets"], sim.descriptions)
    return paths


def paper_simulation(params_dir: str | Path, n_spots: int = 1600, cells_per_spot: int = 100,
                     sc_cells_per_spot: int = 20, n_cells: int | None = None, seed: int = 0,
                     temperature: float = 1.0, library_size: float | None = None
                     ) -> SimulatedData:
    """The DestVI paper's simulation (spec 5.1) from ``grtruth_PCA.npz``/``inv-dispersion.npy``.

    Square ``sqrt(n_spots)``-sided grid (the paper's 40 x 40 on ``[-10, 10)`` step 0.5, here
    scaled so the step is 100); proportions from 5 GP draws with kernel
    ``exp(-d^2 / (0.1 bw^2))`` (``bw`` = median distance) and softmax(./temperature); one 4-dim
    ``gamma`` per spot from GP draws with kernel ``15 exp(-d^2 / (0.5 bw^2))`` shared by all types;
    log-means ``mean_[c] + gamma @ components_[c]`` with non-positive values set to 1% of the
    smallest positive one, ``expm1``; counts Gamma(theta, theta/mean)-Poisson with
    ``theta = 100 * inv-dispersion``. Spots average the means of ``cells_per_spot`` cells; the
    reference is the first ``sc_cells_per_spot`` cells of each spot.

    Parameters
    ----------
    params_dir
        Folder holding ``grtruth_PCA.npz`` and ``inv-dispersion.npy``.
    n_spots
        Number of spots (rounded down to a square number).
    cells_per_spot, sc_cells_per_spot
        Cells simulated per spot and how many of them go to the reference.
    n_cells
        Optional: subsample the reference to this many cells.
    seed
        Random seed.
    temperature
        Softmax temperature of the proportions.
    library_size
        ``None`` keeps the paper's scale (means come from data normalised to 1e5 counts: about
        40,000-70,000 expected UMIs per cell on these 2000 genes); a number rescales every mean so
        an average cell/spot has this many expected UMIs (e.g. 3000 for realistic depth).

    Returns
    -------
    SimulatedData
        ``gene_sets`` holds, per type and dimension, the 30 genes with the largest positive
        (``_UP``) and negative (``_DOWN``) loadings (when non-zero), plus 20 decoys.
    """
    params_dir = Path(params_dir)
    pca = np.load(params_dir / "grtruth_PCA.npz")
    mean_, comps = np.asarray(pca["mean_"], float), np.asarray(pca["components_"], float)
    theta = 100.0 * np.asarray(np.load(params_dir / "inv-dispersion.npy"), float)
    n_types, n_latent, n_genes = comps.shape
    rng = np.random.default_rng(seed)
    side = int(np.floor(np.sqrt(n_spots)))
    grid = np.arange(-10, 10, 20.0 / side)
    xx, yy = np.meshgrid(grid, grid, indexing="ij")
    unit = np.column_stack([xx.ravel(), yy.ravel()])
    diffs = np.sqrt(((unit[:, None] - unit[None]) ** 2).sum(-1))
    bw = float(np.median(diffs))
    logits = gp_draws(unit, n_types, 0.1 * bw ** 2, 1.0, rng)
    probs = softmax(logits / temperature, axis=1)
    gamma = gp_draws(unit, n_latent, 0.5 * bw ** 2, 15.0, rng)  # [S, d]
    n_sp = len(unit)
    labels = (probs.cumsum(1)[:, None, :] > rng.random((n_sp, cells_per_spot, 1))).argmax(-1)
    expr = _paper_means(mean_, comps, gamma)  # [C, S, G]; cells of a type in a spot share it
    freq = np.stack([(labels == c).mean(axis=1) for c in range(n_types)], axis=1)  # [S, C]
    if library_size is not None:
        expr *= library_size / float((freq.T * expr.sum(-1)).sum() / n_sp)
    st_counts = gamma_poisson(np.einsum("sc,csg->sg", freq, expr), theta, rng)
    sc_spot = np.repeat(np.arange(n_sp), sc_cells_per_spot)
    sc_labels = labels[:, :sc_cells_per_spot].ravel()
    if n_cells is not None and n_cells < len(sc_labels):
        keep = np.sort(rng.choice(len(sc_labels), size=n_cells, replace=False))
        sc_spot, sc_labels = sc_spot[keep], sc_labels[keep]
    sc_counts = gamma_poisson(expr[sc_labels, sc_spot], theta, rng)
    sc_gamma = gamma[sc_spot]
    types = [f"ct{c}" for c in range(n_types)]
    genes = [f"Gene{g + 1:04d}" for g in range(n_genes)]
    sc = _make_sc(sc_counts, genes, types, sc_labels, ["all"], np.zeros(len(sc_labels), int),
                  sc_gamma)
    st = _make_st(st_counts, genes, types, (unit + 10.0) * (SPOT_SPACING / (20.0 / side)),
                  None, freq, np.repeat(gamma[:, None, :], n_types, axis=1), None, None)
    st.uns["simulation"] = {"generator": "paper_simulation", "seed": int(seed), "link": "expm1",
                            "cell_types": np.asarray(types, dtype=object),
                            "mean_": mean_.astype(np.float32),
                            "components_": comps.astype(np.float32),
                            "theta": theta.astype(np.float32)}
    gene_sets = _loading_sets(comps, types, genes, rng)
    return SimulatedData(sc, st, gene_sets)


def _paper_means(mean_: np.ndarray, comps: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Expected counts ``[C, S, G]`` of each type at each spot, following the paper.

    Non-positive log-means are set to 1% of the smallest positive one (per type), then ``expm1``.
    """
    out = np.empty((mean_.shape[0], gamma.shape[0], mean_.shape[1]), dtype=np.float64)
    for c in range(mean_.shape[0]):
        log_mean = mean_[c][None, :] + gamma @ comps[c]  # [S, G]
        positive = log_mean[log_mean > 0]
        floor = 0.01 * positive.min() if positive.size else 1e-6
        out[c] = np.expm1(np.where(log_mean > 0, log_mean, floor))
    return out


def _loading_sets(comps: np.ndarray, types: list[str], genes: list[str],
                  rng: np.random.Generator, size: int = 30,
                  n_decoys: int = 20) -> dict[str, list[str]]:
    """Top-loading genes per type and dimension as planted sets, plus random decoys."""
    names = np.asarray(genes)
    sets: dict[str, list[str]] = {}
    for c, ct in enumerate(types):
        for k in range(comps.shape[1]):
            load = comps[c, k]
            for suffix, order in (("UP", np.argsort(-load)), ("DOWN", np.argsort(load))):
                top = [g for g in order[:size] if (load[g] > 0 if suffix == "UP" else load[g] < 0)]
                if len(top) >= 5:
                    sets[f"PLANTED_{set_label(ct)}_STATE{k}_{suffix}"] = list(names[top])
    for i in range(n_decoys):
        sets[f"DECOY_{i + 1:02d}"] = list(names[rng.choice(len(genes), size=size, replace=False)])
    return sets


# --------------------------------------------------------------------------------------------
# GMT files
# --------------------------------------------------------------------------------------------

def write_gmt(gene_sets: dict[str, list[str]], path: str | Path,
              descriptions: dict[str, str] | None = None) -> Path:
    """Write gene sets as GMT (``name<TAB>description<TAB>gene<TAB>gene...``).

    Parameters
    ----------
    gene_sets
        Set name -> genes.
    path
        Output file.
    descriptions
        Optional set name -> description (default ``"na"``).
    """
    path = Path(path)
    descriptions = descriptions or {}
    lines = []
    for name, genes in gene_sets.items():
        desc = descriptions.get(name, "na").replace("\t", " ").replace("\n", " ")
        lines.append("\t".join([name, desc, *genes]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_gmt(path: str | Path) -> dict[str, list[str]]:
    """Read a GMT file into ``{set name: [genes]}`` (blank lines and empty genes ignored).

    Parameters
    ----------
    path
        GMT file.

    Raises
    ------
    InputError
        If the file is missing or a line has no gene set name.
    """
    from .errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"gene set file {path} does not exist",
                         "give the path of a .gmt file (name, description, genes; tab-separated)")
    sets: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if not fields[0].strip():
            raise InputError(f"line {number} of {path.name} has no gene set name",
                             "each GMT line must be: name<TAB>description<TAB>gene1<TAB>gene2...")
        sets[fields[0].strip()] = [g.strip() for g in fields[2:] if g.strip()]
    return sets
