"""Write spatial data as a Space Ranger Visium HD output folder (for tests and benchmarks).

The layout is the one :func:`destvi_core.readers.read_visium_hd` reads::

    <out>/binned_outputs/square_016um/filtered_feature_bc_matrix.h5   10x HDF5 matrix
    <out>/binned_outputs/square_016um/spatial/tissue_positions.parquet
    <out>/binned_outputs/square_016um/spatial/scalefactors_json.json

The 10x HDF5 file stores the matrix column-compressed as genes x barcodes, which is exactly the
CSR arrays of the barcodes x genes counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def write_10x_h5(counts: sp.spmatrix, barcodes, genes, path: str | Path,
                 gene_ids=None, genome: str = "GRCm39") -> Path:
    """Write barcodes x genes counts in the 10x ``feature_bc_matrix.h5`` layout."""
    import h5py

    path = Path(path)
    csr = sp.csr_matrix(counts)
    csr.sort_indices()
    genes = [str(g) for g in genes]
    ids = [str(g) for g in (gene_ids if gene_ids is not None else
                            [f"ENSMUSG{i:011d}" for i in range(len(genes))])]

    def strings(values):
        values = [str(v).encode() for v in values]
        width = max((len(v) for v in values), default=1)
        return np.asarray(values, dtype=f"S{max(width, 1)}")

    with h5py.File(path, "w") as f:
        f.attrs["filetype"] = "matrix"
        f.attrs["version"] = 2
        f.attrs["library_ids"] = strings(["synthetic"])
        m = f.create_group("matrix")
        m.create_dataset("barcodes", data=strings(barcodes))
        m.create_dataset("data", data=np.rint(csr.data).astype(np.int32), compression="gzip")
        m.create_dataset("indices", data=csr.indices.astype(np.int64), compression="gzip")
        m.create_dataset("indptr", data=csr.indptr.astype(np.int64))
        m.create_dataset("shape", data=np.asarray([csr.shape[1], csr.shape[0]], dtype=np.int32))
        feats = m.create_group("features")
        feats.create_dataset("_all_tag_keys", data=strings(["genome"]))
        feats.create_dataset("feature_type", data=strings(["Gene Expression"] * len(genes)))
        feats.create_dataset("genome", data=strings([genome] * len(genes)))
        feats.create_dataset("id", data=strings(ids))
        feats.create_dataset("name", data=strings(genes))
    return path


def write_visium_hd(st: ad.AnnData, out_dir: str | Path, bin_size: int = 16,
                    microns_per_pixel: float = 0.27) -> Path:
    """Write ``st`` (counts in X, ``obsm['spatial']`` as x/y pixels) as one Visium HD bin folder.

    Barcodes are ``s_<NNN>um_<row>_<col>-1`` from ``obs['array_row'/'array_col']`` (or from
    the coordinates); returns the ``square_<NNN>um`` folder. Call once per bin size to build a
    multi-resolution output.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(out_dir) / "binned_outputs" / f"square_{int(bin_size):03d}um"
    (folder / "spatial").mkdir(parents=True, exist_ok=True)
    xy = np.asarray(st.obsm["spatial"], dtype=np.float64)
    if "array_row" in st.obs and "array_col" in st.obs:
        rows = st.obs["array_row"].to_numpy(dtype=np.int64)
        cols = st.obs["array_col"].to_numpy(dtype=np.int64)
    else:
        step = np.median(np.diff(np.unique(np.round(xy[:, 0], 6)))) or 1.0
        rows = np.rint((xy[:, 1] - xy[:, 1].min()) / step).astype(np.int64)
        cols = np.rint((xy[:, 0] - xy[:, 0].min()) / step).astype(np.int64)
    barcodes = [f"s_{int(bin_size):03d}um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols)]
    if len(set(barcodes)) != len(barcodes):  # grid indices collide: number the bins instead
        barcodes = [f"s_{int(bin_size):03d}um_{i:05d}_{0:05d}-1" for i in range(st.n_obs)]
    gene_ids = st.var["gene_ids"] if "gene_ids" in st.var else None
    write_10x_h5(st.X, barcodes, st.var_names, folder / "filtered_feature_bc_matrix.h5",
                 gene_ids=gene_ids)
    table = pa.table({"barcode": barcodes, "in_tissue": np.ones(st.n_obs, dtype=np.int32),
                      "array_row": rows.astype(np.int32), "array_col": cols.astype(np.int32),
                      "pxl_row_in_fullres": xy[:, 1], "pxl_col_in_fullres": xy[:, 0]})
    pq.write_table(table, folder / "spatial" / "tissue_positions.parquet")
    scale = {"microns_per_pixel": microns_per_pixel,
             "bin_size_um": float(bin_size),
             "spot_diameter_fullres": float(bin_size) / microns_per_pixel,
             "tissue_hires_scalef": 0.1, "tissue_lowres_scalef": 0.01}
    (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(scale, indent=1))
    return folder


def positions_frame(folder: str | Path) -> pd.DataFrame:
    """The positions table of a bin folder (for tests)."""
    import pyarrow.parquet as pq

    return pq.read_table(Path(folder) / "spatial" / "tissue_positions.parquet").to_pandas()
