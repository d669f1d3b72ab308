"""Preparing single-cell reference and spatial data for the models.

Reading files lives in :mod:`destvi_core.readers`, validation and cleaning in
:mod:`destvi_core.validation`; their public names are importable from here too. This module
matches genes, selects highly variable genes, runs :func:`prepare_inputs` and hashes matrices.

Every user-facing failure raises :class:`~destvi_core.errors.InputError` with a message that says
what was found and how to fix it; recoverable problems (dropped cells, renamed genes, ...) are
reported with ``warnings.warn(msg, DestVIWarning)``.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .errors import DestVIWarning, InputError
from .readers import (LEAN_READ_BYTES, read_10x_h5, read_counts_file,  # noqa: F401
                      read_h5ad_counts, read_h5ad_safe, read_spatial, read_visium_folder,
                      read_visium_hd, visium_hd_bins)
from .validation import (INTEGER_TOLERANCE, LOG_NORMALISED_MAX, MIN_CELL_TYPES,  # noqa: F401
                         MIN_CELLS_PER_TYPE, MIN_SHARED_GENES, _check_min_types, _drop_empty,
                         _total_counts, _warn, counts_csr, get_counts, validate_counts,
                         validate_reference, validate_spatial)

_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")


_HASH_CHUNK = 1 << 22  # values per streamed piece (32 MB as float64)
_DIGESTS: dict[int, tuple] = {}  # id(matrix) -> (weakref, fingerprint, digest)


def _canonical_rows(matrix, start: int, stop: int) -> sp.csr_matrix:
    """Rows ``start:stop`` in canonical float64 CSR form (sorted, no duplicates, no zeros)."""
    block = matrix[start:stop]
    csr = sp.csr_matrix(block if sp.issparse(block) else np.asarray(block, dtype=np.float64),
                        dtype=np.float64, copy=True)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    csr.sort_indices()
    return csr


def _is_canonical(csr: sp.csr_matrix) -> bool:
    if not csr.has_canonical_format:
        return False
    data = csr.data
    return not any(bool((data[s:s + _HASH_CHUNK] == 0).any())
                   for s in range(0, data.size, _HASH_CHUNK))


def _fingerprint(matrix) -> tuple:
    """Cheap identity of a matrix's content: shape, storage, buffers and the sum of its values."""
    if sp.issparse(matrix) and matrix.format == "csr":
        arrays = (matrix.data, matrix.indices, matrix.indptr)
        total = float(np.sum(matrix.data, dtype=np.float64))
    else:
        arrays = (np.asarray(matrix),)
        total = float(np.sum(arrays[0], dtype=np.float64))
    return (type(matrix), matrix.shape, getattr(matrix, "nnz", None), total,
            tuple((a.ctypes.data, a.dtype.str, a.size) for a in arrays))


def hash_matrix(matrix) -> str:
    """Deterministic SHA-256 digest of a dense or sparse matrix's values and shape.

    Sparse inputs are converted to a canonical CSR form (sorted indices, explicit zeros removed),
    so the same values give the same digest whatever the storage (dense, CSR, CSC, COO) or dtype.
    The digest is streamed in pieces (a 100,000 x 2,000 slide is hashed without copying it), and
    remembered for the same unchanged matrix object, so hashing the same prepared data again
    (cache key, model metadata) is free.

    Parameters
    ----------
    matrix
        ``numpy`` array (1-D or 2-D), ``scipy.sparse`` matrix/array, or anything ``np.asarray``
        accepts (e.g. a backed/h5py dataset read into memory).

    Returns
    -------
    str
        Hex digest (64 characters).
    """
    import weakref

    if not sp.issparse(matrix):
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim == 1:
            matrix = matrix[None, :]
    elif matrix.format != "csr":
        matrix = sp.csr_matrix(matrix)
    try:
        fingerprint = _fingerprint(matrix)
        memo = _DIGESTS.get(id(matrix))
        if memo is not None and memo[0]() is matrix and memo[1] == fingerprint:
            return memo[2]
    except (TypeError, ValueError):  # pragma: no cover - exotic array types
        fingerprint = None
    digest = hashlib.sha256()
    digest.update(b"csr")
    digest.update(np.asarray(matrix.shape, dtype=np.int64).tobytes())
    n_rows = matrix.shape[0]
    if sp.issparse(matrix) and _is_canonical(matrix):
        digest.update(np.ascontiguousarray(matrix.indptr, dtype=np.int64).tobytes())
        for array, dtype in ((matrix.indices, np.int64), (matrix.data, np.float64)):
            for s in range(0, array.size, _HASH_CHUNK):
                digest.update(np.ascontiguousarray(array[s:s + _HASH_CHUNK], dtype=dtype).tobytes())
    else:  # canonicalise row chunks; three passes keep the digest of the whole canonical CSR
        n_cols = max(1, matrix.shape[1])
        rows = max(1, _HASH_CHUNK // n_cols)
        chunks = [(s, min(s + rows, n_rows)) for s in range(0, n_rows, rows)]
        offset = 0
        digest.update(np.zeros(1, dtype=np.int64).tobytes())
        for s, e in chunks:
            indptr = _canonical_rows(matrix, s, e).indptr.astype(np.int64)
            digest.update((indptr[1:] + offset).tobytes())
            offset += int(indptr[-1])
        for part in ("indices", "data"):
            for s, e in chunks:
                csr = _canonical_rows(matrix, s, e)
                array = csr.indices.astype(np.int64) if part == "indices" else csr.data
                digest.update(np.ascontiguousarray(array).tobytes())
    out = digest.hexdigest()
    if fingerprint is not None:
        try:
            _DIGESTS[id(matrix)] = (weakref.ref(matrix), fingerprint, out)
        except TypeError:  # objects without weak references are not remembered
            pass
        for key in [k for k, v in _DIGESTS.items() if v[0]() is None]:
            del _DIGESTS[key]
    return out


# ============================================================================================
# gene matching
# ============================================================================================

def _fraction(names, predicate) -> float:
    names = list(names)
    return sum(bool(predicate(str(n))) for n in names) / max(len(names), 1)


def _naming_hint(sc_adata: AnnData, st_adata: AnnData) -> str:
    """Explain a gene-name mismatch: Ensembl vs symbols, species case, or a var column match."""
    sc_genes, st_genes = list(map(str, sc_adata.var_names)), list(map(str, st_adata.var_names))
    exact = len(set(sc_genes) & set(st_genes))
    hints = []
    sc_ens, st_ens = _fraction(sc_genes, _ENSEMBL.match), _fraction(st_genes, _ENSEMBL.match)
    upper = len({g.upper() for g in sc_genes} & {g.upper() for g in st_genes})
    if (sc_ens > 0.5) != (st_ens > 0.5):
        side = "reference" if sc_ens > 0.5 else "spatial data"
        hints.append(f"The {side} uses Ensembl IDs and the other uses gene symbols"
                     " (Ensembl IDs vs symbols)")
    elif upper > max(2 * exact, exact + MIN_SHARED_GENES // 2):
        sc_upper = _fraction(sc_genes, lambda g: g == g.upper())
        st_upper = _fraction(st_genes, lambda g: g == g.upper())
        human, mouse = (("reference", "spatial data") if sc_upper > st_upper
                        else ("spatial data", "reference"))
        hints.append(f"{upper} genes match when case is ignored: the {human} looks like human "
                     f"symbols (upper-case, e.g. CD3E) and the {mouse} like mouse symbols "
                     "(capitalised, e.g. Cd3e) — different species?")
    for adata, other, side in ((sc_adata, st_genes, "reference"),
                               (st_adata, sc_genes, "spatial data")):
        for column in adata.var.columns:
            hit = len(set(adata.var[column].astype(str)) & set(other))
            if hit > max(exact, MIN_SHARED_GENES // 2):
                hints.append(f"The {side}'s var[{column!r}] matches {hit} genes of the other "
                             f"dataset: use it as gene names (adata.var_names = "
                             f"adata.var[{column!r}])")
                break
    return "".join(" " + h + "." for h in hints)


def shared_genes(sc_adata: AnnData, st_adata: AnnData,
                 min_shared_genes: int = MIN_SHARED_GENES) -> list[str]:
    """Genes present in both datasets, in the reference's order.

    Parameters
    ----------
    sc_adata, st_adata
        Reference and spatial data.
    min_shared_genes
        Minimum number of shared genes (default :data:`MIN_SHARED_GENES`).

    Raises
    ------
    InputError
        Fewer than ``min_shared_genes`` shared genes; the message shows the count, example
        names from each side and, when detectable, why (Ensembl IDs vs symbols, human vs mouse
        case, a var column that matches).
    """
    st_set = set(map(str, st_adata.var_names))
    genes = [str(g) for g in sc_adata.var_names if str(g) in st_set]
    if len(genes) < min_shared_genes:
        ex_sc = ", ".join(map(str, sc_adata.var_names[:3]))
        ex_st = ", ".join(map(str, st_adata.var_names[:3]))
        raise InputError(
            f"the reference and spatial data share only {len(genes)} gene names (need at least "
            f"{min_shared_genes}; reference has e.g. {ex_sc}; spatial has e.g. {ex_st})"
            + _naming_hint(sc_adata, st_adata).rstrip("."),
            "use the same gene identifiers (and species) in both datasets")
    return genes


def select_hvgs(adata: AnnData, n_top_genes: int = 2000) -> list[str]:
    """Highly variable genes of the reference (seurat_v3 on raw counts in X), in var order.

    Returns all genes when there are at most ``n_top_genes``; falls back to the
    variance/mean ranking of normalised data (with a warning) if seurat_v3 fails.

    Parameters
    ----------
    adata
        Reference with raw counts in X.
    n_top_genes
        Number of genes to keep.
    """
    import scanpy as sc

    if adata.n_vars <= n_top_genes:
        return list(map(str, adata.var_names))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=n_top_genes,
                                                inplace=False)
        mask = table["highly_variable"].to_numpy()
    except Exception as err:  # loess failures on tiny/degenerate data
        _warn(f"seurat_v3 gene selection failed ({type(err).__name__}); used the most "
              "variable genes of normalised data instead")
        x = adata.X.multiply(1e4 / np.maximum(_total_counts(adata.X), 1)[:, None]).tocsr()
        x.data = np.log1p(x.data)
        mean = np.asarray(x.mean(axis=0)).ravel()
        var = np.asarray(x.multiply(x).mean(axis=0)).ravel() - mean ** 2
        mask = np.zeros(adata.n_vars, dtype=bool)
        mask[np.argsort(-var, kind="stable")[:n_top_genes]] = True
    return [str(g) for g, keep in zip(adata.var_names, mask) if keep]


# ============================================================================================
# preparation
# ============================================================================================

@dataclass
class PrepReport:
    """What :func:`prepare_inputs` did.

    Attributes
    ----------
    n_cells, n_spots
        Reference cells and spots kept.
    n_genes_sc, n_genes_st
        Genes in the input reference / spatial data.
    n_shared
        Genes present in both.
    n_used_genes
        Genes used for modelling (shared, then HVG-selected).
    cell_type_counts
        Cells per type (category order).
    warnings
        Messages of the DestVIWarnings raised while preparing.
    labels_key
        Label column.
    hvg
        Whether HVG selection was applied.
    """

    n_cells: int
    n_spots: int
    n_genes_sc: int
    n_genes_st: int
    n_shared: int
    n_used_genes: int
    cell_type_counts: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    labels_key: str = "cell_type"
    hvg: bool = True

    def summary_lines(self) -> list[str]:
        """Human-readable summary, one fact per line (for the app and the CLI)."""
        types = ", ".join(f"{k} ({v})" for k, v in self.cell_type_counts.items())
        selection = " after HVG selection" if self.hvg and self.n_used_genes < self.n_shared \
            else ""
        lines = [
            f"Reference: {self.n_cells} cells x {self.n_genes_sc} genes, "
            f"{len(self.cell_type_counts)} cell types in obs['{self.labels_key}']",
            f"Spatial: {self.n_spots} spots x {self.n_genes_st} genes",
            f"Shared genes: {self.n_shared}; used: {self.n_used_genes}{selection}",
            f"Cell types: {types}",
        ]
        lines += [f"Warning: {w}" for w in self.warnings]
        return lines


@dataclass
class PreparedData:
    """Reference and spatial data ready for the models, with a :class:`PrepReport`."""

    sc: AnnData
    st: AnnData
    report: PrepReport


def _subset_genes(adata: AnnData, genes: list[str]) -> AnnData:
    if len(genes) == adata.n_vars and list(map(str, adata.var_names)) == list(genes) \
            and sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32:
        return adata  # already these genes in this order (no copy of a large matrix)
    out = adata[:, genes].copy()
    out.X = sp.csr_matrix(out.X, dtype=np.float32)
    return out


def prepare_inputs(sc: AnnData, st: AnnData, labels_key: str = "cell_type",
                   layer_sc: str | None = None, layer_st: str | None = None,
                   spatial_key: str = "spatial", n_top_genes: int = 2000, hvg: bool = True,
                   min_shared_genes: int = MIN_SHARED_GENES,
                   min_cells_per_type: int = MIN_CELLS_PER_TYPE) -> PreparedData:
    """Validate both datasets and apply the DestVI tutorial preprocessing.

    Steps: validate (:func:`validate_reference`, :func:`validate_spatial`); keep shared genes
    (reference order); select ``n_top_genes`` HVGs on the reference (seurat_v3 on counts; all
    genes if fewer); drop cells/spots left with zero counts (and types that fall below
    ``min_cells_per_type``). Both outputs have the same ordered genes, raw counts in X as
    float32 CSR, categorical labels in ``sc.obs[labels_key]`` (unused categories removed),
    ``st.obsm['spatial']`` float64 ``[S, 2]`` and the spatial ``uns['spatial']`` (histology).

    Parameters
    ----------
    sc, st
        Reference and spatial AnnData (not modified).
    labels_key
        Reference label column.
    layer_sc, layer_st
        Layers with raw counts (default ``layers['counts']`` if present, else X).
    spatial_key
        ``obsm`` key of the spot coordinates.
    n_top_genes
        Number of HVGs (tutorial: 2000).
    hvg
        Apply HVG selection.
    min_shared_genes
        Error below this many shared genes.
    min_cells_per_type
        Drop cell types with fewer cells.

    Returns
    -------
    PreparedData

    Raises
    ------
    InputError
        See the validators and :func:`shared_genes`.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DestVIWarning)
        ref = validate_reference(sc, labels_key, layer_sc, min_cells_per_type)
        spatial = validate_spatial(st, spatial_key, layer_st)
        genes = shared_genes(ref, spatial, min_shared_genes)
        n_shared = len(genes)
        ref, spatial = _subset_genes(ref, genes), _subset_genes(spatial, genes)
        if hvg:
            genes = select_hvgs(ref, n_top_genes)
            ref, spatial = _subset_genes(ref, genes), _subset_genes(spatial, genes)
        ref = _drop_empty(ref, "reference (after gene selection)", "cell")
        ref = _check_min_types(ref, labels_key, min_cells_per_type)
        spatial = _drop_empty(spatial, "spatial (after gene selection)", "spot")
    messages = []
    for item in caught:
        if issubclass(item.category, DestVIWarning):
            messages.append(str(item.message))
        warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    report = PrepReport(
        n_cells=ref.n_obs, n_spots=spatial.n_obs, n_genes_sc=sc.n_vars, n_genes_st=st.n_vars,
        n_shared=n_shared,
        n_used_genes=ref.n_vars,
        cell_type_counts={str(k): int(v) for k, v in
                          ref.obs[labels_key].value_counts(sort=False).items()},
        warnings=messages, labels_key=labels_key, hvg=hvg)
    return PreparedData(ref, spatial, report)

