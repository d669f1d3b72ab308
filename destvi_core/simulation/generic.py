"""The generic simulator: smooth proportion and state fields, planted programs, known truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import SimulatedData, _make_sc, _make_st, set_label, softmax
from .fields import (SPOT_SPACING, SmoothField, _lognormal_sizes, _radial_regions, gamma_poisson,
                     hex_grid)

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
