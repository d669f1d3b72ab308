"""The DestVI paper's simulation (spec 5.1) from its shared parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import SPOT_SPACING, SimulatedData, _make_sc, _make_st, set_label, softmax
from .fields import gamma_poisson, gp_draws

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
