"""Accuracy against known truth (spec 5.3) and the plain NNLS floor every run must beat."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.optimize as so
import scipy.sparse as sp
from anndata import AnnData
from scipy.stats import spearmanr


def proportion_metrics(truth: pd.DataFrame, estimate: pd.DataFrame) -> dict[str, float]:
    """RMSE over all entries and mean per-type Spearman, as the paper's ``metrics_vector``.

    Types without variation in the truth are skipped; a constant estimate counts as
    correlation 0 (the paper's NaN -> 0).
    """
    columns = [c for c in truth.columns if c in estimate.columns]
    t, e = truth[columns].to_numpy(), estimate.loc[truth.index, columns].to_numpy()
    rhos = [spearmanr(t[:, j], e[:, j])[0] if np.ptp(e[:, j]) > 0 else 0.0
            for j in range(len(columns)) if np.ptp(t[:, j]) > 0]
    return {"rmse": float(np.sqrt(((t - e) ** 2).mean())),
            "spearman": float(np.mean(rhos)) if rhos else 0.0}


def _normalised_rows(matrix) -> np.ndarray:
    x = matrix.toarray() if sp.issparse(matrix) else np.array(matrix, dtype=np.float64)
    x = x.astype(np.float64)
    return x / np.maximum(x.sum(axis=1, keepdims=True), 1e-12)


def nnls_proportions(sc: AnnData, st: AnnData, labels_key: str = "cell_type") -> pd.DataFrame:
    """Plain NNLS of normalised spot profiles on normalised reference mean profiles per type."""
    x = _normalised_rows(sc.X)
    labels = sc.obs[labels_key].astype("category")
    types = [str(t) for t in labels.cat.categories]
    profiles = np.stack([x[(labels == t).to_numpy()].mean(0) for t in labels.cat.categories], 1)
    y = _normalised_rows(st.X)
    est = np.stack([so.nnls(profiles, row)[0] for row in y])
    est /= np.maximum(est.sum(axis=1, keepdims=True), 1e-12)
    return pd.DataFrame(est, index=st.obs_names, columns=types)
