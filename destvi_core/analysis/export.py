"""Export of analysis results as a self-describing bundle (h5ad + CSV + JSON, zippable).

Layout of ``out_dir``::

    results.h5ad          spatial annotations (obs, var, obsm, uns; the counts only with
                          include_counts) + obsm['proportions'], obsm['gamma_<type>'],
                          obs 'contains_<type>', 'spca_<type>_1/_2/_color', uns['destvi']
    proportions.csv       spots x cell types
    thresholds.csv        cell type, threshold (if given)
    regions.csv           spot, one True/False column per region (if any); in the h5ad: obs
                          'regions' (names joined by '|') and 'region_<name>' (bool)
    de_<name>.csv         one per DE result
    enrichment_<name>.csv one per enrichment table
    parameters.json       parameters, metadata, package versions
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = ["export_bundle", "bundle_zip", "json_safe", "safe_name", "package_versions"]


def safe_name(name: Any) -> str:
    """File- and HDF5-safe version of a name (letters, digits, ``-``, ``_``, ``.``)."""
    s = re.sub(r"[^0-9A-Za-z_.-]+", "_", str(name)).strip("_.")
    return s or "unnamed"


def json_safe(obj: Any) -> Any:
    """Convert numpy / pandas / Path objects to plain JSON types (NaN and inf -> None)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (pd.Series, pd.Index)):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (datetime, pd.Timestamp)):
        return obj.isoformat()
    return str(obj)


def _h5_keys(obj: Any) -> Any:
    """JSON-safe object whose dict keys are also valid HDF5 names (no '/')."""
    if isinstance(obj, dict):
        return {str(k).replace("/", "_") or "_": _h5_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        if any(isinstance(v, (dict, list)) or v is None for v in obj) or len({type(v) for v in obj}) > 1:
            return json.dumps(obj)  # ragged / mixed lists are stored as JSON text
        return obj
    return obj


def package_versions() -> dict[str, str]:
    """Versions of DestVI Studio and its main dependencies."""
    from ..persistence import environment_versions

    return environment_versions()


def _check_index(df: pd.DataFrame, obs_names: pd.Index, what: str) -> pd.DataFrame:
    if len(df) != len(obs_names):
        raise InputError(f"{what} has {len(df)} rows but the spatial data has {len(obs_names)} spots",
                         "export results computed on the same spatial data")
    out = df.copy()
    if not out.index.astype(str).equals(obs_names):
        if set(out.index.astype(str)) == set(obs_names):
            out.index = out.index.astype(str)
            out = out.loc[obs_names]
        else:
            out.index = obs_names  # positional (e.g. RangeIndex)
    out.index = obs_names
    out.columns = [str(c).replace("/", "_") for c in out.columns]  # '/' is not allowed in h5 keys
    return out


def export_bundle(
    out_dir: str | Path,
    st_adata: Any,
    proportions: pd.DataFrame,
    thresholds: dict[str, float] | None = None,
    gamma: dict[str, pd.DataFrame] | None = None,
    spca: dict[str, tuple] | None = None,
    de_results: dict[str, pd.DataFrame] | None = None,
    enrichment: dict[str, pd.DataFrame] | None = None,
    parameters: dict | None = None,
    metadata: dict | None = None,
    include_counts: bool = False,
    regions: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write all results to ``out_dir`` (created; existing files overwritten).

    Parameters
    ----------
    out_dir
        Output directory.
    st_adata
        Spatial AnnData: its obs, var, obsm and uns are kept (copied).
    proportions
        ``[S, C]`` proportions (index spot names or positional). In the h5ad, "/" in cell-type
        names becomes "_" (HDF5 keys); original names are in ``uns['destvi']['cell_types']``
        and in the CSV files.
    thresholds
        ``{cell type: cut-off}`` -> obs ``contains_<type>`` (bool) and ``thresholds.csv``.
    gamma
        ``{cell type: DataFrame [S, d]}`` -> obsm ``gamma_<type>``.
    spca
        ``{cell type: (spot names, projection [n, 2], colours [n])}`` -> obs ``spca_<type>_1``,
        ``spca_<type>_2`` (NaN for unselected spots) and ``spca_<type>_color`` (categorical).
    de_results
        ``{name: DE table}`` -> ``de_<name>.csv`` (index = genes).
    enrichment
        ``{name: enrichment table}`` -> ``enrichment_<name>.csv``.
    parameters
        Run parameters (training, thresholds kind, ...), written to ``parameters.json`` and
        ``uns['destvi']['parameters']``.
    metadata
        Free metadata (data file names, model hash, ...).
    include_counts
        Also store the count matrix (``X``) in ``results.h5ad``. Off by default, so the bundle
        stays proportional to spots x types (100,000 spots x 2,000 genes of counts are ~1 GB).
=======
    regions
        ``{name: bool mask over the spots}`` -> obs ``regions`` (names joined by ``|``, empty
        for none; ``destvi_regions`` if the data already has a ``regions`` column), obs ``region_<name>`` (bool), ``regions.csv`` and their compact text
        (:func:`~destvi_core.analysis.regions.encode_mask`) in ``parameters.json``.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if include_counts:
        adata = st_adata.copy()
    else:
        import anndata as ad

        adata = ad.AnnData(obs=st_adata.obs.copy(), var=st_adata.var.copy(),
                           uns=dict(st_adata.uns),
                           obsm={k: (v.copy() if hasattr(v, "copy") else v)
                                 for k, v in st_adata.obsm.items()})
    adata.obs_names = adata.obs_names.astype(str)
    obs_names = adata.obs_names
    files: list[str] = []

    props = _check_index(proportions, obs_names, "proportions")
    adata.obsm["proportions"] = props
    col_of = {str(c): h5 for c, h5 in zip(proportions.columns, props.columns)}
    csv_props = props.copy()
    csv_props.columns = [str(c) for c in proportions.columns]
    csv_props.to_csv(out / "proportions.csv", index_label="spot")
    files.append("proportions.csv")

    if thresholds:
        unknown = [k for k in thresholds if str(k) not in col_of]
        if unknown:
            raise InputError(f"thresholds for unknown cell type(s) {unknown}",
                             "use the cell types of the proportions")
        for ct, t in thresholds.items():
            adata.obs[f"contains_{safe_name(ct)}"] = props[col_of[str(ct)]].to_numpy() > float(t)
        pd.DataFrame({"cell_type": list(map(str, thresholds)), "threshold": list(map(float, thresholds.values()))}
                     ).to_csv(out / "thresholds.csv", index=False)
        files.append("thresholds.csv")

    for ct, df in (gamma or {}).items():
        adata.obsm[f"gamma_{safe_name(ct)}"] = _check_index(pd.DataFrame(df), obs_names, f"gamma of {ct}")

    for ct, (names, proj, colors) in (spca or {}).items():
        pos = obs_names.get_indexer([str(n) for n in names])
        if (pos < 0).any():
            raise InputError(f"sPCA of {ct} refers to spots not in the spatial data",
                             "export the sPCA computed on the same spatial data")
        proj = np.asarray(proj, dtype=np.float64).reshape(len(pos), -1)
        key = safe_name(ct)
        for j in range(min(proj.shape[1], 2)):
            col = np.full(len(obs_names), np.nan)
            col[pos] = proj[:, j]
            adata.obs[f"spca_{key}_{j + 1}"] = col
        col = np.full(len(obs_names), None, dtype=object)
        col[pos] = list(colors)
        adata.obs[f"spca_{key}_color"] = pd.Categorical(col)

    region_texts = {}
    if regions:
        from .regions import encode_mask, region_labels

        masks = {str(k): np.asarray(v, dtype=bool) for k, v in regions.items()}
        column = "regions" if "regions" not in adata.obs else "destvi_regions"  # never clobber
        adata.obs[column] = pd.Categorical(region_labels(masks, len(obs_names)))
        table = pd.DataFrame(index=obs_names)
        for name, mask in masks.items():
            adata.obs[f"region_{safe_name(name)}"] = mask
            table[name] = mask
            region_texts[name] = encode_mask(mask)
        table.to_csv(out / "regions.csv", index_label="spot")
        files.append("regions.csv")

    for kind, tables in (("de", de_results), ("enrichment", enrichment)):
        for name, df in (tables or {}).items():
            fname = f"{kind}_{safe_name(name)}.csv"
            pd.DataFrame(df).to_csv(out / fname, index=(kind == "de"))
            files.append(fname)

    info = {
        "parameters": json_safe(parameters or {}),
        "metadata": json_safe(metadata or {}),
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "thresholds": json_safe({str(k): float(v) for k, v in (thresholds or {}).items()}),
        "regions": region_texts,
        "files": files + ["results.h5ad", "parameters.json"],
        "counts_included": bool(include_counts),
        "cell_types": list(col_of),
        "obsm_columns": list(col_of.values()),
    }
    (out / "parameters.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    adata.uns["destvi"] = _h5_keys(info)
    tmp = out / "results.h5ad.tmp"
    try:
        adata.write_h5ad(tmp)
    except Exception:  # last resort: uns as one JSON string
        adata.uns["destvi"] = {"json": json.dumps(info)}
        adata.write_h5ad(tmp)
    tmp.replace(out / "results.h5ad")
    return out


def bundle_zip(out_dir: str | Path) -> bytes:
    """Zip every file under ``out_dir`` (paths relative to it) into bytes for a download button."""
    root = Path(out_dir)
    if not root.is_dir():
        raise InputError(f"export folder {root} does not exist", "run the export first")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file() and not p.name.endswith(".tmp"):
                zf.write(p, p.relative_to(root).as_posix())
    return buf.getvalue()
