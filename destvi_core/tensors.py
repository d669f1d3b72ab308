"""Counts on the training device: sparse (CSR) storage, dense minibatches.

The count matrix stays in CSR form on the device (on a CPU the tensors share the AnnData's
arrays, no copy); each minibatch is gathered and scattered into a dense ``[m, G]`` block only
when it is used. Each batch also carries the flat positions of its non-zeros, so that the
negative-binomial terms that vanish at zero counts are computed only where counts are non-zero
(:func:`destvi_core.nn_blocks.nb_log_prob_rows`), and the per-row constant
``sum_g lgamma(x_g + 1)``, computed once.
"""

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


def _as_csr32(matrix) -> sp.csr_matrix:
    """``matrix`` as a float32 CSR without copying when it already is one."""
    if sp.issparse(matrix):
        csr = matrix if (matrix.format == "csr" and matrix.dtype == np.float32) else \
            sp.csr_matrix(matrix, dtype=np.float32)
    else:  # dense (or a backed dataset read into memory): convert in row chunks
        arr = matrix
        blocks = [sp.csr_matrix(np.asarray(arr[s], dtype=np.float32))
                  for s in iter_chunks(arr.shape[0], 8192)]
        csr = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix(arr.shape,
                                                                           dtype=np.float32)
    return csr


def mean_composition_csr(matrix) -> np.ndarray:
    """Average of the rows normalised to sum 1 (zero rows count as zeros), ``[G]`` float64."""
    csr = _as_csr32(matrix)
    totals = np.asarray(csr.sum(axis=1), dtype=np.float64).ravel()
    weights = 1.0 / np.maximum(totals, 1.0)
    return np.asarray(csr.T @ weights, dtype=np.float64).ravel() / max(csr.shape[0], 1)


class SparseCounts:
    """A count matrix kept as CSR tensors on the device; dense blocks are built per batch.

    Parameters
    ----------
    matrix
        Cells/spots x genes counts (scipy sparse or dense array).
    device
        Device of the tensors. On a CPU, ``data`` and ``indices`` share memory with a float32
        CSR input (no copy).

    Attributes
    ----------
    shape
        ``(n_rows, n_genes)``.
    log_factorial
        ``[n_rows]`` float32 tensor ``sum_g lgamma(x_g + 1)``: the constant term of the negative
        binomial likelihood, computed once.
    library
        ``[n_rows]`` float32 tensor of row totals.
    """

    def __init__(self, matrix, device: torch.device | str = "cpu"):
        device = torch.device(device)
        csr = _as_csr32(matrix)
        self.shape = (int(csr.shape[0]), int(csr.shape[1]))
        self.device = device
        self.nnz = int(csr.nnz)
        self.indptr = torch.from_numpy(csr.indptr.astype(np.int64, copy=False)).to(device)
        indices = csr.indices if csr.indices.dtype == np.int32 else csr.indices.astype(np.int32)
        self.indices = torch.from_numpy(indices).to(device)
        self.data = torch.from_numpy(csr.data).to(device)
        self.log_factorial = torch.from_numpy(_row_log_factorial(csr)).to(device)
        library = np.asarray(csr.sum(axis=1), dtype=np.float32).ravel()
        self.library = torch.from_numpy(library).to(device)

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    def __len__(self) -> int:
        return self.shape[0]

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense block of ``rows`` and the flat positions of its non-zeros.

        Returns
        -------
        x
            ``[m, G]`` float32 on the device.
        nz
            ``[nnz]`` long tensor of positions ``row * G + col`` into ``x`` holding the
            non-zero counts (``x.view(-1)[nz]`` are the values).
        """
        rows = rows.to(self.device, torch.long)
        m, n_genes = rows.numel(), self.shape[1]
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        total = int(lengths.sum())
        x = torch.zeros((m, n_genes), dtype=torch.float32, device=self.device)
        if total == 0:
            return x, torch.zeros(0, dtype=torch.long, device=self.device)
        row_ids = torch.repeat_interleave(torch.arange(m, device=self.device), lengths,
                                          output_size=total)
        first = torch.cumsum(lengths, 0) - lengths  # position of each row's first entry
        pos = (torch.arange(total, device=self.device)
               + torch.repeat_interleave(starts - first, lengths, output_size=total))
        nz = row_ids * n_genes + self.indices[pos].long()
        x.view(-1)[nz] = self.data[pos]
        return x, nz

    def batch(self, rows: torch.Tensor, key: str = "x") -> dict[str, torch.Tensor]:
        """Training batch entries: ``{key: x, key_nz: nz, key_log_factorial: [m]}``."""
        x, nz = self.gather(rows)
        rows = rows.to(self.device, torch.long)
        return {key: x, f"{key}_nz": nz, f"{key}_log_factorial": self.log_factorial[rows]}

    def dense(self, rows: torch.Tensor) -> torch.Tensor:
        """Dense ``[m, G]`` block of ``rows`` (no non-zero positions)."""
        return self.gather(rows)[0]

    def nbytes(self) -> int:
        """Bytes held by the CSR tensors."""
        return sum(t.numel() * t.element_size() for t in (self.indptr, self.indices, self.data))


def _row_log_factorial(csr: sp.csr_matrix, chunk_rows: int = 8192) -> np.ndarray:
    """``sum_g lgamma(x_g + 1)`` per row (float64 sums, float32 result), in row chunks."""
    from scipy.special import gammaln

    out = np.zeros(csr.shape[0], dtype=np.float32)
    indptr = csr.indptr.astype(np.int64, copy=False)
    for sl in iter_chunks(csr.shape[0], chunk_rows):
        lo, hi = indptr[sl.start], indptr[sl.stop]
        csum = np.concatenate([[0.0], np.cumsum(gammaln(csr.data[lo:hi].astype(np.float64) + 1))])
        bounds = indptr[sl.start:sl.stop + 1] - lo
        out[sl] = csum[bounds[1:]] - csum[bounds[:-1]]
    return out
