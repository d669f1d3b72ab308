"""Moving AnnData counts onto the training device, in chunks."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData

from .errors import InputError


def counts_matrix(adata: AnnData, layer: str | None = None):
    """The count matrix a model trains on: ``adata.layers[layer]`` or ``adata.X``."""
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise InputError(f"layer {layer!r} not found (available: {list(adata.layers) or 'none'})",
                         "pick one of the available layers or leave the layer empty to use X")
    return adata.layers[layer]


def dense_rows(matrix, rows: np.ndarray | slice | None = None) -> np.ndarray:
    """Rows of a dense or sparse matrix as a float32 numpy array."""
    block = matrix if rows is None else matrix[rows]
    if sp.issparse(block):
        block = block.toarray()
    return np.asarray(block, dtype=np.float32)


def to_device_tensor(matrix, device: torch.device, chunk_rows: int = 8192) -> torch.Tensor:
    """Densify a (possibly sparse) matrix chunk by chunk straight into a device tensor."""
    n_rows, n_cols = matrix.shape
    out = torch.empty((n_rows, n_cols), dtype=torch.float32, device=device)
    for start in range(0, n_rows, chunk_rows):
        stop = min(start + chunk_rows, n_rows)
        out[start:stop] = torch.from_numpy(dense_rows(matrix, slice(start, stop))).to(device)
    return out


def iter_chunks(n: int, chunk: int):
    """Yield slices covering ``range(n)`` in pieces of ``chunk``."""
    for start in range(0, n, chunk):
        yield slice(start, min(start + chunk, n))
