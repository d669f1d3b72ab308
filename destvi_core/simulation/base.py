"""Shared pieces of the simulators: the result container, AnnData builders and the truth.

See :mod:`destvi_core.simulate` for the layout of the simulated data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

SPOT_SPACING = 100.0
"""Centre-to-centre distance of neighbouring spots (pixel-like units, Visium-like)."""


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


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def set_label(name: str) -> str:
    """Upper-case gene-set token for a cell type or region (``"CD8 T cells"`` -> ``CD8_T_CELLS``)."""
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").upper()


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
