"""Validation and cleaning of count data (raw UMI counts, labels, coordinates).

Every user-facing failure raises :class:`~destvi_core.errors.InputError` with a message that says
what was found and how to fix it; recoverable problems (dropped cells, renamed genes, ...) are
reported with ``warnings.warn(msg, DestVIWarning)``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .errors import DestVIWarning, InputError

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
    step = 1 << 24  # checked in pieces: no full-size temporaries on 100,000-spot slides
    pieces = [values[s:s + step] for s in range(0, values.size, step)]
    n_bad = sum(int((~np.isfinite(v)).sum()) for v in pieces)
    if n_bad:
        raise InputError(f"{what} {source} contains {n_bad} NaN or infinite values", fix)
    if np.issubdtype(values.dtype, np.integer):
        low = min(v.min() for v in pieces)
        if low < 0:
            raise InputError(f"{what} {source} holds negative values (min {low})", fix)
        return
    low, high = float(min(v.min() for v in pieces)), float(max(v.max() for v in pieces))
    if low < 0:
        raise InputError(f"{what} {source} holds negative values (min {low:.3g}) — looks "
                         "scaled or centred (e.g. sc.pp.scale)", fix)
    for v in pieces:
        frac = np.abs(v - np.round(v)) > INTEGER_TOLERANCE
        if frac.any():
            example = float(v[np.argmax(frac)])
            if high < LOG_NORMALISED_MAX:
                kind = "looks log-normalised"
            else:
                kind = "looks normalised (CPM/TPM or size-factor scaled)"
            raise InputError(f"{what} {source} holds non-integer values (e.g. {example:.4g}, "
                             f"max {high:.4g}) — {kind}", fix)


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
