"""Loading, validating and preparing single-cell reference and spatial data.

Every user-facing failure raises :class:`~destvi_core.errors.InputError` with a message that says
what was found and how to fix it; recoverable problems (dropped cells, renamed genes, ...) are
reported with ``warnings.warn(msg, DestVIWarning)``.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .errors import DestVIWarning, InputError


def hash_matrix(matrix) -> str:
    """Deterministic SHA-256 digest of a dense or sparse matrix's values and shape.

    Sparse inputs are converted to a canonical CSR form (sorted indices, explicit zeros removed),
    so the same values give the same digest whatever the storage (dense, CSR, CSC, COO) or dtype.

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
    digest = hashlib.sha256()
    if sp.issparse(matrix):
        csr = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
        csr.sum_duplicates()
        csr.eliminate_zeros()
        csr.sort_indices()
        digest.update(b"csr")
        digest.update(np.asarray(csr.shape, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(csr.indptr, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(csr.indices, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(csr.data, dtype=np.float64).tobytes())
    else:
        dense = np.asarray(matrix, dtype=np.float64)
        if dense.ndim == 1:
            dense = dense[None, :]
        # hash dense through the same canonical CSR path so dense == sparse for equal values
        return hash_matrix(sp.csr_matrix(dense))
    return digest.hexdigest()


# ============================================================================================
# constants
# ============================================================================================

MIN_CELLS_PER_TYPE = 10
"""Cell types with fewer reference cells are dropped (with a DestVIWarning): too few cells to
learn a type's state distribution (CondSCVI) or its VampPrior clusters."""

MIN_CELL_TYPES = 2
"""Deconvolution needs at least two cell types."""

MIN_SHARED_GENES = 50
"""Fewer genes shared by reference and spatial data is an error (proportions are not
identifiable from a handful of genes)."""

LOG_NORMALISED_MAX = 30.0
"""Non-integer data whose maximum is below this is reported as 'looks log-normalised'
(log1p of counts normalised to 1e4-1e6 stays below ~15)."""

INTEGER_TOLERANCE = 1e-3
"""Values further than this from an integer count as non-integer."""

_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")


# ============================================================================================
# reading
# ============================================================================================

def read_h5ad_safe(path: str | Path) -> AnnData:
    """Read an ``.h5ad`` file, turning every failure into a clear :class:`InputError`.

    Parameters
    ----------
    path
        Path of the ``.h5ad`` file.

    Raises
    ------
    InputError
        Missing file, a folder, a file that is not HDF5/AnnData, or a truncated/corrupted file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"file {path} does not exist", "check the path (it is relative to "
                         f"the current folder {Path.cwd()})")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an .h5ad file",
                         "give the .h5ad file, or use a Space Ranger output folder as spatial "
                         "data (read_spatial / read_visium_folder)")
    if not h5py.is_hdf5(path):
        raise InputError(f"{path.name} is not an AnnData .h5ad file (not HDF5)",
                         "save your data with adata.write_h5ad('file.h5ad') and load that file")
    try:
        adata = ad.read_h5ad(path)
    except Exception as err:  # truncated file, missing groups, ...
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path.name} could not be read as AnnData (truncated or corrupted "
                         f"file: {first[:200]})", "re-export or re-download the file") from err
    return adata


def read_visium_folder(path: str | Path, count_file: str = "filtered_feature_bc_matrix.h5"
                       ) -> AnnData:
    """Read a Space Ranger output folder with :func:`scanpy.read_visium`.

    The histology image and scale factors are kept in ``uns['spatial']``; coordinates (full
    resolution pixels) are in ``obsm['spatial']`` as float64; gene names are made unique.

    Parameters
    ----------
    path
        Folder holding ``filtered_feature_bc_matrix.h5`` and ``spatial/``.
    count_file
        Name of the count matrix file inside the folder.

    Raises
    ------
    InputError
        Missing folder, count file, or ``spatial/`` files.
    """
    import scanpy as sc

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"Visium folder {path} does not exist", "give the Space Ranger 'outs' "
                         "folder (with filtered_feature_bc_matrix.h5 and spatial/)")
    if not (path / count_file).is_file():
        found = sorted(p.name for p in path.iterdir())[:10]
        raise InputError(f"{path} has no {count_file} (found: {', '.join(found) or 'nothing'})",
                         "give the Space Ranger 'outs' folder, which contains "
                         "filtered_feature_bc_matrix.h5 and spatial/")
    positions = [p for p in ("tissue_positions.csv", "tissue_positions_list.csv")
                 if (path / "spatial" / p).is_file()]
    if not positions or not (path / "spatial" / "scalefactors_json.json").is_file():
        raise InputError(f"{path / 'spatial'} lacks tissue_positions.csv or "
                         "scalefactors_json.json", "copy the whole Space Ranger 'outs/spatial' "
                         "folder next to the count matrix")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata = sc.read_visium(path, count_file=count_file)
    except Exception as err:
        raise InputError(f"could not read the Visium folder {path} ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200] if str(err) else ''})",
                         "check that the folder is an unmodified Space Ranger output") from err
    adata.var_names_make_unique()
    adata.obsm["spatial"] = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    return adata


def read_spatial(path: str | Path) -> AnnData:
    """Read spatial data from a Space Ranger folder or an ``.h5ad`` file.

    Parameters
    ----------
    path
        Folder (read with :func:`read_visium_folder`) or ``.h5ad`` file.
    """
    path = Path(path)
    return read_visium_folder(path) if path.is_dir() else read_h5ad_safe(path)


# ============================================================================================
# counts
# ============================================================================================

def _counts_source(adata: AnnData, layer: str | None) -> str:
    if layer is not None:
        return f"layers[{layer!r}]"
    return "layers['counts']" if "counts" in adata.layers else "X"


def get_counts(adata: AnnData, layer: str | None = None):
    """Raw count matrix: ``layers[layer]`` if given, else ``layers['counts']`` if present, else X.

    Parameters
    ----------
    adata
        AnnData object.
    layer
        Explicit layer name.

    Raises
    ------
    InputError
        The named layer does not exist (the message lists the available layers), or X is empty.
    """
    if layer is not None:
        if layer not in adata.layers:
            available = ", ".join(map(repr, adata.layers.keys())) or "none"
            raise InputError(f"layer {layer!r} not found (available layers: {available})",
                             "pick one of the available layers, or leave the layer empty to "
                             "use layers['counts'] if present, else X")
        return adata.layers[layer]
    if "counts" in adata.layers:
        return adata.layers["counts"]
    if adata.X is None:
        raise InputError("the data has no X matrix and no layers['counts']",
                         "store raw UMI counts in X or in layers['counts']")
    return adata.X


def _values(matrix) -> np.ndarray:
    """Stored values of a matrix (non-zeros for sparse) as a flat array."""
    if sp.issparse(matrix):
        return np.asarray(matrix.data)
    return np.asarray(matrix).ravel()


def validate_counts(adata: AnnData, layer: str | None = None, what: str = "reference") -> None:
    """Check that the counts are raw UMI counts (finite, non-negative integers).

    Parameters
    ----------
    adata
        AnnData object.
    layer
        Layer to check (see :func:`get_counts`).
    what
        Name of the data in messages (``"reference"``, ``"spatial"``).

    Raises
    ------
    InputError
        Empty data, NaN/inf, negative values (scaled data), normalised or log-normalised data.
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"the {what} data is empty ({adata.n_obs} observations x "
                         f"{adata.n_vars} genes)", "load a non-empty dataset")
    source = _counts_source(adata, layer)
    values = _values(get_counts(adata, layer))
    if not np.issubdtype(values.dtype, np.number):
        raise InputError(f"{what} {source} is not numeric (dtype {values.dtype})",
                         "store raw UMI counts as numbers")
    fix = (f"pass raw UMI counts: put them in {what} layers['counts'] (e.g. "
           "adata.layers['counts'] = adata.raw.X) or select the layer holding them")
    if values.size == 0:
        return
    if not np.all(np.isfinite(values)):
        n_bad = int((~np.isfinite(values)).sum())
        raise InputError(f"{what} {source} contains {n_bad} NaN or infinite values", fix)
    if np.issubdtype(values.dtype, np.integer):
        low = values.min()
        if low < 0:
            raise InputError(f"{what} {source} holds negative values (min {low})", fix)
        return
    low, high = float(values.min()), float(values.max())
    if low < 0:
        raise InputError(f"{what} {source} holds negative values (min {low:.3g}) — looks "
                         "scaled or centred (e.g. sc.pp.scale)", fix)
    frac = np.abs(values - np.round(values)) > INTEGER_TOLERANCE
    if frac.any():
        example = float(values[np.argmax(frac)])
        if high < LOG_NORMALISED_MAX:
            kind = "looks log-normalised"
        else:
            kind = "looks normalised (CPM/TPM or size-factor scaled)"
        raise InputError(f"{what} {source} holds non-integer values (e.g. {example:.4g}, max "
                         f"{high:.4g}) — {kind}", fix)


def counts_csr(adata: AnnData, layer: str | None = None) -> sp.csr_matrix:
    """Counts (see :func:`get_counts`) as a float32 CSR matrix with sorted indices."""
    matrix = get_counts(adata, layer)
    csr = sp.csr_matrix(matrix, dtype=np.float32)
    if csr is matrix:
        csr = csr.copy()
    csr.eliminate_zeros()
    csr.sort_indices()
    return csr


def _total_counts(matrix) -> np.ndarray:
    return np.asarray(matrix.sum(axis=1)).ravel()


# ============================================================================================
# cleaning helpers
# ============================================================================================

def _warn(message: str) -> None:
    warnings.warn(message, DestVIWarning, stacklevel=3)


def _rebuild(adata: AnnData, counts: sp.csr_matrix) -> AnnData:
    """New AnnData with ``counts`` in X, no layers, same obs/var/obsm/uns (copied)."""
    out = AnnData(X=counts, obs=adata.obs.copy(), var=adata.var.copy(),
                  uns=dict(adata.uns))
    for key, value in adata.obsm.items():
        out.obsm[key] = value.copy() if hasattr(value, "copy") else value
    return out


def _unique_names(adata: AnnData, what: str) -> None:
    """Make duplicated var/obs names unique in place (with a warning)."""
    if not adata.var_names.is_unique:
        dups = adata.var_names[adata.var_names.duplicated()].unique()
        adata.var_names_make_unique()
        _warn(f"{what}: {len(dups)} duplicated gene names (e.g. {', '.join(map(str, dups[:3]))}) "
              "were made unique by appending '-1', '-2', ...")
    if not adata.obs_names.is_unique:
        n_dup = int(adata.obs_names.duplicated().sum())
        adata.obs_names_make_unique()
        _warn(f"{what}: {n_dup} duplicated cell/spot names were made unique")


def _drop_empty(adata: AnnData, what: str, unit: str) -> AnnData:
    """Drop observations with zero total counts (warning with the number dropped)."""
    empty = _total_counts(adata.X) <= 0
    if empty.all():
        raise InputError(f"every {unit} of the {what} data has zero counts",
                         "check that the right count matrix/layer is used and that genes "
                         "were not over-filtered")
    if empty.any():
        _warn(f"{what}: dropped {int(empty.sum())} {unit}s with zero counts")
        adata = adata[~empty].copy()
    return adata


def _check_min_types(adata: AnnData, labels_key: str, min_cells_per_type: int) -> AnnData:
    """Drop types below ``min_cells_per_type`` cells; error if fewer than 2 types remain."""
    labels = adata.obs[labels_key].cat.remove_unused_categories()
    adata.obs[labels_key] = labels
    counts = labels.value_counts()
    small = counts[counts < min_cells_per_type]
    if len(small):
        listing = ", ".join(f"{k} ({v})" for k, v in small.items())
        _warn(f"dropped cell types with fewer than {min_cells_per_type} reference cells: "
              f"{listing}")
        adata = adata[~labels.isin(small.index).to_numpy()].copy()
        adata.obs[labels_key] = adata.obs[labels_key].cat.remove_unused_categories()
    n_types = len(adata.obs[labels_key].cat.categories)
    if n_types < MIN_CELL_TYPES:
        kept = ", ".join(map(str, adata.obs[labels_key].cat.categories)) or "none"
        raise InputError(f"the reference has {n_types} usable cell type(s) in "
                         f"obs[{labels_key!r}] (kept: {kept}; each needs at least "
                         f"{min_cells_per_type} cells); deconvolution needs at least "
                         f"{MIN_CELL_TYPES}", "choose a label column with several cell types, "
                         "or a finer annotation")
    return adata


def _label_column_hint(adata: AnnData) -> str:
    candidates = [c for c in adata.obs.columns
                  if (adata.obs[c].dtype == object or isinstance(adata.obs[c].dtype,
                                                                 pd.CategoricalDtype))
                  and 2 <= adata.obs[c].nunique() <= max(2, adata.n_obs // 2)]
    return f" (likely label columns: {', '.join(candidates[:5])})" if candidates else ""


# ============================================================================================
# validation
# ============================================================================================

def validate_reference(adata: AnnData, labels_key: str = "cell_type", layer: str | None = None,
                       min_cells_per_type: int = MIN_CELLS_PER_TYPE) -> AnnData:
    """Validate and clean the single-cell reference.

    Returns a copy with counts in X (float32 CSR, no layers), categorical labels without
    NaN or unused categories, unique names, no zero-count cells and no cell type with fewer
    than ``min_cells_per_type`` cells. Dropped cells/types are reported as DestVIWarning.

    Parameters
    ----------
    adata
        Reference AnnData.
    labels_key
        Column of ``obs`` with the cell-type labels.
    layer
        Layer with raw counts (default ``layers['counts']`` if present, else X).
    min_cells_per_type
        Minimum number of cells per type (default :data:`MIN_CELLS_PER_TYPE`).

    Raises
    ------
    InputError
        Missing label column, invalid counts, fewer than two usable cell types.
    """
    if labels_key not in adata.obs.columns:
        available = ", ".join(map(str, adata.obs.columns)) or "none"
        raise InputError(f"the reference has no obs column {labels_key!r} with cell-type "
                         f"labels (available columns: {available})",
                         "choose the column that holds the cell types" +
                         _label_column_hint(adata))
    validate_counts(adata, layer, what="reference")
    out = _rebuild(adata, counts_csr(adata, layer))
    _unique_names(out, "reference")
    labels = out.obs[labels_key]
    missing = labels.isna().to_numpy()
    if missing.all():
        raise InputError(f"every label in obs[{labels_key!r}] is missing (NaN)",
                         "choose the column that holds the cell types")
    if missing.any():
        _warn(f"reference: dropped {int(missing.sum())} cells without a label in "
              f"obs[{labels_key!r}]")
        out = out[~missing].copy()
    labels = out.obs[labels_key]
    if not isinstance(labels.dtype, pd.CategoricalDtype):
        out.obs[labels_key] = pd.Categorical(labels.astype(str))
    out = _drop_empty(out, "reference", "cell")
    return _check_min_types(out, labels_key, min_cells_per_type)


def validate_spatial(adata: AnnData, spatial_key: str = "spatial",
                     layer: str | None = None) -> AnnData:
    """Validate and clean the spatial data.

    Returns a copy with counts in X (float32 CSR, no layers), coordinates as float64 ``[S, 2]``
    in ``obsm['spatial']`` (first two columns of ``obsm[spatial_key]``), unique names, no spot
    with NaN coordinates or zero counts (dropped with a DestVIWarning); ``uns['spatial']``
    (histology image, scale factors) is kept.

    Parameters
    ----------
    adata
        Spatial AnnData.
    spatial_key
        Key of ``obsm`` with the coordinates.
    layer
        Layer with raw counts.

    Raises
    ------
    InputError
        Missing coordinates key, wrong shape, non-numeric or all-NaN coordinates, invalid counts.
    """
    if spatial_key not in adata.obsm:
        available = ", ".join(map(repr, adata.obsm.keys())) or "none"
        raise InputError(f"the spatial data has no coordinates in obsm[{spatial_key!r}] "
                         f"(available obsm keys: {available})", "choose the obsm key with the "
                         "x/y spot coordinates (Visium data read with scanpy uses 'spatial')")
    coords = adata.obsm[spatial_key]
    coords = coords.to_numpy() if isinstance(coords, pd.DataFrame) else np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] < 2 or coords.shape[0] != adata.n_obs:
        raise InputError(f"obsm[{spatial_key!r}] has shape {coords.shape}; expected "
                         f"({adata.n_obs}, 2): one x/y pair per spot",
                         "store the spot coordinates as an n_spots x 2 array")
    try:
        coords = coords[:, :2].astype(np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"obsm[{spatial_key!r}] is not numeric (dtype {coords.dtype})",
                         "store the spot coordinates as numbers") from err
    validate_counts(adata, layer, what="spatial")
    out = _rebuild(adata, counts_csr(adata, layer))
    out.obsm["spatial"] = coords
    _unique_names(out, "spatial")
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.all():
        raise InputError(f"every spot has NaN/infinite coordinates in obsm[{spatial_key!r}]",
                         "choose the obsm key with the spot coordinates")
    if bad.any():
        _warn(f"spatial: dropped {int(bad.sum())} spots with NaN/infinite coordinates")
        out = out[~bad].copy()
    return _drop_empty(out, "spatial", "spot")


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

