"""Reading spatial and single-cell files: ``.h5ad``, Space Ranger Visium and Visium HD outputs.

Every failure raises :class:`~destvi_core.errors.InputError` with a one-line message saying what
is wrong and how to fix it.

Large inputs:

* Visium HD (:func:`read_visium_hd`): ``binned_outputs/square_016um`` (~100,000 bins per
  section) or ``square_008um`` (~600,000) with ``filtered_feature_bc_matrix.h5`` and
  ``spatial/tissue_positions.parquet``; the bin size is the user's choice. The count matrix is
  read straight from the 10x HDF5 layout into a float32 CSR matrix (no dense copy).
* ``.h5ad`` files above :data:`LEAN_READ_BYTES` are opened backed by
  :func:`read_h5ad_counts`: only the annotations and the count matrix are loaded (X, or the
  counts layer), row chunk by row chunk as float32 CSR, so a dense or multi-layer file never
  sits whole in memory.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .errors import InputError

LEAN_READ_BYTES = 1 << 30
"""``.h5ad`` files larger than this (1 GiB) are read with :func:`read_h5ad_counts`."""

HD_COUNT_FILE = "filtered_feature_bc_matrix.h5"
HD_POSITIONS = ("tissue_positions.parquet", "tissue_positions.csv")
_CHUNK_ROWS = 16384


def read_h5ad_safe(path: str | Path, backed: str | None = None) -> AnnData:
    """Read an ``.h5ad`` file, turning every failure into a clear :class:`InputError`.

    Parameters
    ----------
    path
        Path of the ``.h5ad`` file.
    backed
        ``"r"`` opens X backed (anndata's backed mode); default: read everything.

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
        adata = ad.read_h5ad(path, backed=backed)
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


def _check_h5ad(path: Path) -> None:
    if not path.exists():
        raise InputError(f"file {path} does not exist", "check the path (it is relative to "
                         f"the current folder {Path.cwd()})")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an .h5ad file",
                         "give the .h5ad file, or a Space Ranger output folder as spatial data")
    if not h5py.is_hdf5(path):
        raise InputError(f"{path.name} is not an AnnData .h5ad file (not HDF5)",
                         "save your data with adata.write_h5ad('file.h5ad') and load that file")


def _csr_from_element(element) -> sp.csr_matrix:
    """A stored matrix (dense dataset or sparse group) as float32 CSR, row chunk by row chunk."""
    try:
        from anndata.io import sparse_dataset
    except ImportError:  # anndata < 0.11
        from anndata.experimental import sparse_dataset

    if isinstance(element, h5py.Dataset):
        n_rows = element.shape[0]
        blocks = [sp.csr_matrix(np.asarray(element[s:s + _CHUNK_ROWS], dtype=np.float32))
                  for s in range(0, n_rows, _CHUNK_ROWS)]
        return (sp.vstack(blocks, format="csr") if blocks
                else sp.csr_matrix(element.shape, dtype=np.float32))
    backed = sparse_dataset(element)
    if backed.format != "csr":
        return sp.csr_matrix(backed.to_memory(), dtype=np.float32)
    n_rows = backed.shape[0]
    blocks = [sp.csr_matrix(backed[s:s + _CHUNK_ROWS], dtype=np.float32)
              for s in range(0, n_rows, _CHUNK_ROWS)]
    return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix(backed.shape,
                                                                       dtype=np.float32)


def read_h5ad_counts(path: str | Path, layer: str | None = None) -> AnnData:
    """Open an ``.h5ad`` backed and load only its annotations and count matrix.

    The counts are those :func:`destvi_core.validation.get_counts` would use (``layers[layer]``,
    else ``layers['counts']`` if present, else ``X``), read as float32 CSR in row chunks and put
    back at the same place; other layers, ``obsp``/``varm`` and a non-count ``X`` are not loaded.

    Raises
    ------
    InputError
        Missing, non-HDF5 or unreadable file, or a missing layer.
    """
    try:
        from anndata.io import read_elem
    except ImportError:  # anndata < 0.11
        from anndata.experimental import read_elem

    path = Path(path)
    _check_h5ad(path)
    try:
        with h5py.File(path, "r") as f:
            layers = f["layers"] if "layers" in f else {}
            if layer is not None and layer not in layers:
                available = ", ".join(map(repr, layers.keys())) or "none"
                raise InputError(f"layer {layer!r} not found in {path.name} (available layers: "
                                 f"{available})", "pick one of the available layers, or leave the "
                                 "layer empty to use layers['counts'] if present, else X")
            name = layer if layer is not None else ("counts" if "counts" in layers else None)
            if name is None and "X" not in f:
                raise InputError(f"{path.name} has no X matrix and no layers['counts']",
                                 "store raw UMI counts in X or in layers['counts']")
            counts = _csr_from_element(layers[name] if name is not None else f["X"])
            obs, var = read_elem(f["obs"]), read_elem(f["var"])
            obsm = {k: read_elem(f["obsm"][k]) for k in f["obsm"]} if "obsm" in f else {}
            uns = read_elem(f["uns"]) if "uns" in f else {}
    except InputError:
        raise
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path.name} could not be read as AnnData (truncated or corrupted "
                         f"file: {first[:200]})", "re-export or re-download the file") from err
    adata = AnnData(X=None if name is not None else counts, obs=obs, var=var, uns=uns)
    for key, value in obsm.items():
        adata.obsm[key] = value
    if name is not None:
        adata.layers[name] = counts
    return adata


def read_counts_file(path: str | Path, layer: str | None = None) -> AnnData:
    """An ``.h5ad`` read whole, or lean (:func:`read_h5ad_counts`) above :data:`LEAN_READ_BYTES`."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > LEAN_READ_BYTES and h5py.is_hdf5(path):
        return read_h5ad_counts(path, layer)
    return read_h5ad_safe(path)


# ============================================================================================
# Visium HD
# ============================================================================================

def visium_hd_bins(path: str | Path) -> dict[int, Path]:
    """Bin folders of a Space Ranger Visium HD output: ``{bin size in um: folder}``.

    ``path`` may be the ``outs`` folder, its ``binned_outputs`` folder or one
    ``square_<NNN>um`` folder. Returns an empty dict when ``path`` is not a Visium HD output.
    """
    path = Path(path)
    if path.name.startswith("square_") and path.is_dir():
        candidates = [path]
    else:
        base = next((p for p in (path / "binned_outputs", path / "outs" / "binned_outputs", path)
                     if p.is_dir() and any(q.name.startswith("square_") for q in p.iterdir())),
                    None)
        candidates = sorted(base.iterdir()) if base is not None else []
    bins = {}
    for folder in candidates:
        name = folder.name
        if folder.is_dir() and name.startswith("square_") and name.endswith("um"):
            try:
                bins[int(name[len("square_"):-2])] = folder
            except ValueError:
                continue
    return dict(sorted(bins.items()))


def read_10x_h5(path: str | Path) -> AnnData:
    """Count matrix of a 10x ``feature_bc_matrix.h5`` (Cell Ranger / Space Ranger >= 3 layout).

    Only "Gene Expression" features are kept; counts are float32 CSR (barcodes x genes) read
    directly from the stored column-compressed arrays; gene symbols are made unique
    (``var['gene_ids']`` keeps the IDs).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist", "give the Space Ranger output folder that "
                         f"contains {path.name}")
    try:
        with h5py.File(path, "r") as f:
            if "matrix" not in f:
                raise InputError(f"{path.name} is not a 10x feature-barcode matrix (no 'matrix' "
                                 "group)", "use the filtered_feature_bc_matrix.h5 of Space Ranger")
            m = f["matrix"]
            n_genes, n_barcodes = (int(v) for v in m["shape"][()])
            # converted while reading: no int64 / int32 intermediate copies of the arrays
            data = m["data"].astype(np.float32)[()]
            indices = m["indices"].astype(np.int32)[()]
            indptr = m["indptr"].astype(np.int64)[()]
            barcodes = [b.decode() for b in m["barcodes"][()]]
            feats = m["features"]
            names = [b.decode() for b in feats["name"][()]]
            ids = [b.decode() for b in feats["id"][()]]
            kinds = ([b.decode() for b in feats["feature_type"][()]]
                     if "feature_type" in feats else ["Gene Expression"] * n_genes)
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"{path.name} could not be read as a 10x HDF5 matrix "
                         f"({type(err).__name__}: {str(err)[:150]})",
                         "re-export or re-download the Space Ranger output") from err
    if indptr.size != n_barcodes + 1 or max(indptr[-1], 0) > data.size:
        raise InputError(f"{path.name} is inconsistent (shape {n_genes} x {n_barcodes}, "
                         f"{indptr.size} pointers)", "re-download the Space Ranger output")
    if indptr[-1] < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    counts = sp.csr_matrix((data, indices, indptr), shape=(n_barcodes, n_genes))
    keep = np.asarray([k == "Gene Expression" for k in kinds])
    if not keep.all():
        counts = counts[:, np.flatnonzero(keep)].tocsr()
    var = pd.DataFrame({"gene_ids": np.asarray(ids)[keep],
                        "feature_types": np.asarray(kinds)[keep]},
                       index=pd.Index(np.asarray(names)[keep], dtype=str))
    adata = AnnData(X=counts, obs=pd.DataFrame(index=pd.Index(barcodes, dtype=str)), var=var)
    adata.var_names_make_unique()
    return adata


def _read_positions(spatial: Path) -> pd.DataFrame:
    for name in HD_POSITIONS:
        file = spatial / name
        if file.is_file():
            if file.suffix == ".parquet":
                import pyarrow.parquet as pq

                table = pq.read_table(file).to_pandas()
            else:
                table = pd.read_csv(file)
            table["barcode"] = table["barcode"].astype(str)
            return table.set_index("barcode")
    found = sorted(p.name for p in spatial.iterdir())[:10] if spatial.is_dir() else []
    raise InputError(f"{spatial} has no tissue_positions.parquet (found: "
                     f"{', '.join(found) or 'nothing'})",
                     "copy the whole Space Ranger bin folder, including spatial/")


def _images(spatial: Path) -> dict:
    out = {}
    for key, name in (("hires", "tissue_hires_image.png"), ("lowres", "tissue_lowres_image.png")):
        if (spatial / name).is_file():
            from matplotlib.image import imread

            out[key] = imread(spatial / name)
    return out


def read_visium_hd(path: str | Path, bin_size: int = 16) -> AnnData:
    """Read one bin size of a Space Ranger Visium HD output.

    Parameters
    ----------
    path
        The ``outs`` folder, its ``binned_outputs`` folder, or a ``square_<NNN>um`` folder.
    bin_size
        Bin size in micrometres (2, 8 or 16 in Space Ranger outputs; 16 um gives about 100,000
        bins per section, 8 um about 600,000).

    Returns
    -------
    AnnData
        Float32 CSR counts (bins x genes, "Gene Expression" features, unique gene symbols);
        ``obs['in_tissue'/'array_row'/'array_col']``; ``obsm['spatial']`` full-resolution pixel
        coordinates ``(x = pxl_col_in_fullres, y = pxl_row_in_fullres)`` as float64;
        ``uns['spatial'][<library>]`` scale factors (and images when present);
        ``uns['visium_hd'] = {'bin_size_um', 'folder'}``.

    Raises
    ------
    InputError
        Not a Visium HD output, bin size not available (the message lists those present),
        missing count or position files.
    """
    bins = visium_hd_bins(path)
    if not bins:
        raise InputError(f"{path} is not a Visium HD output (no binned_outputs/square_<N>um "
                         "folders)", "give the Space Ranger 'outs' folder of a Visium HD run")
    if int(bin_size) not in bins:
        raise InputError(f"bin size {bin_size} um is not in {path} (available: "
                         f"{', '.join(f'{b} um' for b in bins)})",
                         f"choose one of {', '.join(map(str, bins))}")
    folder = bins[int(bin_size)]
    adata = read_10x_h5(folder / HD_COUNT_FILE)
    positions = _read_positions(folder / "spatial")
    missing = ~adata.obs_names.isin(positions.index)
    if missing.all():
        raise InputError(f"none of the {adata.n_obs} barcodes of {folder.name} has a position "
                         "in tissue_positions", "use the count matrix and positions of the same "
                         "Space Ranger run")
    if missing.any():
        warnings.warn(f"Visium HD {folder.name}: dropped {int(missing.sum())} bins without a "
                      "position", stacklevel=2)
        adata = adata[~missing].copy()
    pos = positions.loc[adata.obs_names]
    for column in ("in_tissue", "array_row", "array_col"):
        if column in pos:
            adata.obs[column] = pos[column].to_numpy()
    adata.obsm["spatial"] = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(
        dtype=np.float64)
    library = folder.parent.parent.name if folder.parent.name == "binned_outputs" else folder.name
    spatial_meta: dict = {"images": _images(folder / "spatial")}
    scale_file = folder / "spatial" / "scalefactors_json.json"
    if scale_file.is_file():
        spatial_meta["scalefactors"] = json.loads(scale_file.read_text())
    adata.uns["spatial"] = {f"{library}_{folder.name}": spatial_meta}
    adata.uns["visium_hd"] = {"bin_size_um": int(bin_size), "folder": str(folder)}
    return adata


def read_spatial(path: str | Path, bin_size: int | None = None,
                 layer: str | None = None) -> AnnData:
    """Read spatial data: a Visium HD output, a Space Ranger (Visium) folder or an ``.h5ad``.

    Parameters
    ----------
    path
        Visium HD ``outs`` / ``binned_outputs`` / ``square_<N>um`` folder (read with
        :func:`read_visium_hd`), another Space Ranger folder (:func:`read_visium_folder`), or an
        ``.h5ad`` file (read lean above :data:`LEAN_READ_BYTES`, see :func:`read_counts_file`).
    bin_size
        Visium HD bin size in um (default 16); an error for other inputs.
    layer
        Layer holding the counts of a large ``.h5ad`` (what is loaded by the lean reader).
    """
    path = Path(path)
    if path.is_dir():
        if visium_hd_bins(path):
            return read_visium_hd(path, 16 if bin_size is None else bin_size)
        if bin_size is not None:
            raise InputError(f"a bin size was given but {path} is not a Visium HD output",
                             "leave the bin size out for Visium (55 um spots) or .h5ad data")
        return read_visium_folder(path)
    if bin_size is not None:
        raise InputError(f"a bin size was given but {path.name} is a file",
                         "give the Visium HD 'outs' folder to choose a bin size")
    return read_counts_file(path, layer)
