"""Every cached loader of the app (the only place that calls the engine for heavy work).

* Data and models: ``st.cache_resource`` (shared, read-only objects keyed by content).
* Analysis tables: ``st.cache_data`` keyed by the model's content key (``_``-prefixed
  arguments are not hashed), so moving a slider never recomputes or reloads anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from destvi_core.errors import DestVIWarning, InputError

from .state import LoadedData, LoadedModels

def fast() -> bool:
    """Tiny training runs (tests, quick looks): set ``DESTVI_STUDIO_FAST=1``."""
    return os.environ.get("DESTVI_STUDIO_FAST", "") not in ("", "0")


def _sha(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else repr(part).encode())
    return h.hexdigest()


def with_warnings(fn: Callable, *args, **kwargs) -> tuple[Any, list[str]]:
    """Call ``fn`` and return ``(result, [DestVIWarning messages])``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DestVIWarning)
        result = fn(*args, **kwargs)
    msgs = [str(w.message) for w in caught if issubclass(w.category, DestVIWarning)]
    return result, list(dict.fromkeys(msgs))


# ------------------------------------------------------------------ data
def _report_dict(report: Any) -> dict:
    if dataclasses.is_dataclass(report):
        return dataclasses.asdict(report)
    return dict(report or {})


def _prepare(sc, stdata, labels_key: str, layer_sc: str | None, layer_st: str | None):
    from destvi_core import data as core_data

    prepared, msgs = with_warnings(core_data.prepare_inputs, sc, stdata, labels_key=labels_key,
                                   layer_sc=layer_sc, layer_st=layer_st)
    report = _report_dict(prepared.report)
    msgs = [str(m) for m in (report.get("warnings") or report.get("messages") or [])] + msgs
    return prepared, report, list(dict.fromkeys(msgs))


@st.cache_resource(show_spinner="Building the demo dataset…", max_entries=4)
def demo_data(seed: int = 0) -> LoadedData:
    """The built-in lymph-node-like demo, prepared like any user data (cached on disk too)."""
    from destvi_core.cache import prepared_demo, prepared_demo_digest

    sc, stdata, report, msgs, gene_sets = prepared_demo(seed)
    return LoadedData(key=_sha("demo", seed, sc.n_vars), source=f"built-in demo (seed {seed})",
                      sc=sc, st=stdata, labels_key="cell_type", report=report,
                      messages=tuple(msgs), gene_sets=dict(gene_sets), is_demo=True,
                      digest=prepared_demo_digest(seed), section="demo")


@st.cache_resource(show_spinner="Reading file…", max_entries=8)
def read_upload(content_key: str, name: str, _payload: bytes) -> Any:
    """Read an uploaded ``.h5ad`` (keyed by the SHA-256 of its bytes)."""
    from destvi_core.data import read_h5ad_safe

    if not name.lower().endswith(".h5ad"):
        raise InputError(f"'{name}' is not an .h5ad file",
                         "upload an AnnData .h5ad file, or give the path of a Visium folder")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.h5ad"
        path.write_bytes(_payload)
        adata = read_h5ad_safe(path)
        return adata.to_memory() if getattr(adata, "isbacked", False) else adata


def upload_key(payload: bytes) -> str:
    return _sha(payload)


@st.cache_resource(show_spinner="Reading data…", max_entries=8)
def read_path(path: str, stamp: str) -> Any:
    """Read an ``.h5ad`` file or a Visium folder from the server's disk (keyed by path + mtime)."""
    from destvi_core import data as core_data

    p = Path(path).expanduser()
    if p.is_dir():
        return core_data.read_visium_folder(p)
    return core_data.read_h5ad_safe(p)


def path_stamp(path: str) -> str:
    """``mtime:size`` of a file or folder; InputError when it does not exist."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"'{path}' does not exist on the server",
                         "check the path (it is read on the machine running the app)")
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())[:200]
    return _sha([(str(q), q.stat().st_mtime_ns, q.stat().st_size) for q in files])


@st.cache_resource(show_spinner="Checking and preparing the data…", max_entries=8)
def prepare(sc_key: str, st_key: str, labels_key: str, layer_sc: str | None, layer_st: str | None,
            source: str, _sc, _st) -> LoadedData:
    """Validate and align a reference/spatial pair (InputError tells what to fix)."""
    prepared, report, msgs = _prepare(_sc, _st, labels_key, layer_sc, layer_st)
    return LoadedData(key=_sha(sc_key, st_key, labels_key, layer_sc, layer_st), source=source,
                      sc=prepared.sc, st=prepared.st, labels_key=labels_key, report=report,
                      messages=tuple(msgs))


# ------------------------------------------------------------------ models
def training_params(**overrides: Any):
    """``TrainingParams`` with the app's defaults (tiny epochs when ``DESTVI_STUDIO_FAST``)."""
    from destvi_core.pipeline import TrainingParams

    names = {f.name for f in dataclasses.fields(TrainingParams)}
    defaults: dict[str, Any] = {}
    if fast():
        defaults.update(sc_epochs=2, st_epochs=2, vamp_prior_p=3)
    defaults.update(overrides)
    return TrainingParams(**{k: v for k, v in defaults.items() if k in names})


def preset_params(name: str, **overrides: Any):
    """A named preset (``quick`` / ``tutorial``) with ``overrides`` (e.g. epochs from the form);
    tiny epochs when ``DESTVI_STUDIO_FAST``."""
    from destvi_core.pipeline import preset

    if fast():
        return training_params(**overrides)
    return preset(name, **overrides)


@st.cache_data(show_spinner=False, max_entries=32)
def _training_plan(data_key: str, params_json: str, threads: int | None, _data: LoadedData) -> str:
    from destvi_core.pipeline import TrainingParams
    from destvi_core.planning import plan_training

    params = TrainingParams.from_dict(json.loads(params_json))
    n_types = int(_data.sc.obs[_data.labels_key].nunique())
    sizes = (_data.sc.n_obs, _data.st.n_obs, _data.st.n_vars, n_types)
    if threads is None:  # remote cluster: its speed is unknown here
        return plan_training(*sizes, params, probe=False).describe() + " (time: see Jobs)"
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # as on a local worker
    try:
        plan = plan_training(*sizes, params, params.device, sc_counts=_data.sc.X,
                             st_counts=_data.st.X)
    finally:
        torch.set_num_threads(before)
    return plan.describe().replace(" here on ", " on a local worker, ")


def training_plan(data: LoadedData, params: Any, worker_threads: int | None) -> str:
    """One line: both models' steps and epochs and, on the local cluster, the time they take
    (a probe of a few optimisation steps with a worker's torch threads, cached per data and
    parameters), e.g. ``"DestVI 20,000 steps (2,500 epochs of 8) + CondSCVI ..., about 9 min"``."""
    return _training_plan(data.key, json.dumps(params.to_dict(), sort_keys=True, default=str),
                          worker_threads, data)


def params_dict(params: Any) -> dict:
    """Parameters that change the trained weights (the device does not)."""
    if hasattr(params, "cache_dict"):
        return params.cache_dict()
    return dataclasses.asdict(params) if dataclasses.is_dataclass(params) else dict(params)


def model_key(data: LoadedData, params: Any) -> str:
    return _sha(data.key, json.dumps(params_dict(params), sort_keys=True, default=str))


@st.cache_resource
def _registry() -> tuple[dict[str, LoadedModels], threading.Lock]:
    """Process-wide store of trained models, keyed by content (models are never mutated)."""
    return {}, threading.Lock()


def model_cache():
    """The engine's on-disk, content-addressed model cache (None when unavailable)."""
    try:
        from destvi_core.cache import ModelCache
    except ImportError:
        return None
    return ModelCache()


@st.cache_resource(show_spinner=False, max_entries=8)
def data_digest(data_key: str, _data: LoadedData) -> str:
    """Content digest of a dataset (hashed once, whatever the number of parameter sets)."""
    from destvi_core.cache import data_digest as digest

    return _data.digest or digest(_data.sc, _data.st, _data.labels_key)


def find_models(data: LoadedData, params: Any, disk: bool = True) -> LoadedModels | None:
    """Models for this data + parameters if already trained (memory, then the disk cache).

    A disk hit whose entry carries saved proportions comes back at once with the models
    deferred (loaded on first use, or by ``load_in_background``): maps draw without torch.
    """
    key = model_key(data, params)
    store, lock = _registry()
    with lock:
        if key in store:
            return store[key]
    cache = model_cache() if disk else None
    if cache is None:
        return None
    from destvi_core.cache import cache_key

    ckey = cache_key(data.sc, data.st, data.labels_key, params_dict(params),
                     digest=data_digest(data.key, data))
    if ckey not in cache:
        return None
    from destvi_core.errors import DestVIError
    from destvi_core.model_files import read_metadata

    device = getattr(params, "device", "auto")
    try:
        meta = read_metadata(cache.path(ckey))  # read once: proportions' types and histories
    except DestVIError:
        meta = None
    saved = None if meta is None else cache.proportions(ckey, data.st.obs_names, meta)
    if saved is None:  # an entry without saved proportions: load now (and report damage now)
        hit = cache.get(ckey, data.sc, data.st, device=device)
        if hit is None:
            return None
        return register(LoadedModels(key, hit[0], hit[1], data.key, params_dict(params), "cache"))

    def load() -> tuple[Any, Any]:
        hit = cache.get(ckey, data.sc, data.st, device=device)
        if hit is None:
            with lock:
                store.pop(key, None)
            from destvi_core.errors import CorruptedModelError

            raise CorruptedModelError(
                "the cached model could not be loaded (it was damaged and has been removed). "
                "Fix: train again on the Data & model page")
        return hit

    return register(LoadedModels(key, None, None, data.key, params_dict(params), "cache",
                                 loader=load, saved_proportions=saved, spatial=data.st,
                                 saved_histories=_saved_histories(meta)))


def _saved_histories(meta: dict) -> dict[str, list] | None:
    """Training histories from a cache entry's metadata (None when they are not there)."""
    try:
        return {name: list(meta[name]["history"]) for name in ("condscvi", "destvi")}
    except (KeyError, TypeError):  # the page then loads the models for their histories
        return None


def register(models: LoadedModels) -> LoadedModels:
    store, lock = _registry()
    with lock:
        return store.setdefault(models.key, models)


def load_folder(data: LoadedData, folder: str) -> LoadedModels:
    """Load models saved with ``persistence.save_models`` (checked against the data)."""
    from destvi_core.persistence import load_models

    stamp = path_stamp(folder)
    key = _sha("folder", data.key, str(Path(folder).expanduser().resolve()), stamp)
    store, lock = _registry()
    with lock:
        if key in store:
            return store[key]
    sc_model, st_model = load_models(Path(folder).expanduser(), data.sc, data.st)
    from destvi_core.model_files import read_proportions  # maps without a pass over every spot

    return register(LoadedModels(key, sc_model, st_model, data.key, {"folder": folder}, "folder",
                                 saved_proportions=read_proportions(Path(folder).expanduser(), data.st.obs_names)))


def cache_entries() -> pd.DataFrame:
    cache = model_cache()
    if cache is None or not hasattr(cache, "list"):
        return pd.DataFrame()
    return cache.list()


def device_label(device: str = "auto") -> str:
    from destvi_core.device import describe_device, resolve_device

    return describe_device(resolve_device(device))


# ------------------------------------------------------------------ analysis (cached by content)
@st.cache_data(show_spinner=False, max_entries=16)
def spot_table(model_key_: str, _models: LoadedModels) -> pd.DataFrame:
    """One row per spot: ``spot, x, y``, one column per type, ``dominant``, ``dominant_prop``;
    with a seed ensemble also ``sd:<type>``, the spread of that proportion across seeds."""
    props = _models.proportions()
    xy = _models.spot_coordinates()
    df = pd.DataFrame({"spot": props.index.astype(str), "x": xy[:, 0], "y": xy[:, 1]})
    df = pd.concat([df, props.reset_index(drop=True).astype(float)], axis=1)
    values = props.to_numpy()
    df["dominant"] = np.asarray(props.columns)[values.argmax(1)]
    df["dominant_prop"] = values.max(1)
    sd = _models.proportion_sd()
    if sd is not None:
        sd_cols = pd.DataFrame({f"sd:{c}": sd[c].to_numpy(np.float64) for c in sd.columns})
        df = pd.concat([df, sd_cols], axis=1)
    return df


def cell_types(models: LoadedModels) -> list[str]:
    return models.cell_types


@st.cache_data(show_spinner="Computing automatic thresholds…", max_entries=16)
def auto_thresholds(model_key_: str, _models: LoadedModels) -> Any:
    """Both kinds of automatic threshold and the Z curves (ThresholdResult)."""
    return compute_auto_thresholds(spot_table(model_key_, _models), cell_types(_models))


def merged_thresholds(auto: Any, kind: str, overrides: dict[str, float]) -> dict[str, float]:
    """The automatic cut-off of ``kind`` for every type, replaced by the user's ``overrides``."""
    base = auto.primary if kind == "primary" else auto.secondary
    out = {str(k): float(v) for k, v in base.items()}
    out.update(overrides)
    return out


def compute_auto_thresholds(spots: pd.DataFrame, types: list[str]) -> Any:
    """Automatic thresholds from a spot table (uncached; see ``auto_thresholds``)."""
    from destvi_core.analysis.thresholds import automatic_thresholds

    return automatic_thresholds(spots[types].set_index(spots["spot"]),
                                spots[["x", "y"]].to_numpy(), kind="primary")


@st.cache_data(show_spinner=False, max_entries=8)
def histology(data_key: str, _data: LoadedData, max_px: int = 900) -> dict | None:
    """Histology image under the spots: ``{"url", "x0", "x1", "y0", "y1"}`` in spot units."""
    spatial = _data.st.uns.get("spatial") if hasattr(_data.st, "uns") else None
    if not isinstance(spatial, dict) or not spatial:
        return None
    lib = spatial[next(iter(spatial))]
    images, scales = lib.get("images", {}), lib.get("scalefactors", {})
    for res in ("hires", "lowres"):
        if res in images and f"tissue_{res}_scalef" in scales:
            img, scale = np.asarray(images[res]), float(scales[f"tissue_{res}_scalef"])
            break
    else:
        return None
    import base64
    import io

    from PIL import Image

    if img.dtype != np.uint8:
        img = np.clip(img * (255 if img.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
    pil = Image.fromarray(img)
    h, w = img.shape[:2]
    factor = min(1.0, max_px / max(h, w))
    if factor < 1:
        pil = pil.resize((int(w * factor), int(h * factor)))
    buf = io.BytesIO()
    pil.convert("RGB").save(buf, format="JPEG", quality=80)
    url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    return {"url": url, "x0": 0.0, "x1": w / scale, "y0": 0.0, "y1": h / scale}


@st.cache_data(show_spinner="Reading cell states (gamma)…", max_entries=8)
def gamma_array(model_key_: str, _models: LoadedModels) -> np.ndarray:
    """``[S, d, C]`` gamma of every spot (computed once per model)."""
    return np.asarray(_models.st_model.get_gamma(return_numpy=True))


def proportions(models: LoadedModels) -> pd.DataFrame:
    spots = spot_table(models.key, models)
    return spots[cell_types(models)].set_index(spots["spot"])


@st.cache_data(show_spinner="Spatial PCA of the cell state…", max_entries=64)
def gamma_exploration(model_key_: str, cell_type: str, threshold: float, weighting: str,
                      _models: LoadedModels) -> tuple[Any, list[str]]:
    """``(GammaExploration, warnings)`` for one type at one threshold."""
    from destvi_core.analysis import explore_gamma

    spots = spot_table(model_key_, _models)
    return with_warnings(explore_gamma, _models.st_model, _models.sc_model, cell_type,
                         threshold=threshold, coords=spots[["x", "y"]].to_numpy(),
                         proportions=proportions(_models), weighting=weighting,
                         gamma=gamma_array(model_key_, _models))


@st.cache_data(ttl=300, show_spinner="Checking whether Enrichr is reachable…")
def enrichr_online() -> bool:
    from destvi_core.analysis import enrichr_reachable

    return bool(enrichr_reachable(timeout=3.0))


@st.cache_data(show_spinner="Pathway enrichment…", max_entries=64)
def enrichment(genes: tuple[str, ...], library: str, organism: str, offline_key: str,
               _offline: Any, _background: list[str]) -> Any:
    """EnrichmentResult: Enrichr when reachable, else the offline gene sets (source recorded)."""
    from destvi_core.analysis import enrich, enrich_auto

    if enrichr_online():
        return enrich_auto(list(genes), library=library, offline_gene_sets=_offline,
                           organism=organism, background=_background)
    if _offline is None:
        return enrich_auto(list(genes), library=library, offline_gene_sets=None,
                           organism=organism, background=_background, timeout=0.5)
    result = enrich(list(genes), _offline, background=_background)
    if not getattr(result, "message", ""):
        result.message = "Enrichr is not reachable from this machine; offline gene sets were used."
    return result


@st.cache_data(show_spinner=False, max_entries=32)
def de_result(model_key_: str, cell_type: str, group_key: str, threshold: float, n_samples: int,
              _models: LoadedModels, _g1: np.ndarray, _g2: np.ndarray | None) -> Any:
    """DEResult for one type and two spot groups (``group_key`` identifies the masks)."""
    from destvi_core.analysis import de_genes

    return de_genes(_models.st_model, cell_type, _g1, _g2, threshold=threshold,
                    proportions=proportions(_models), n_samples=n_samples)


def mask_key(*masks: np.ndarray | None) -> str:
    return _sha(*[b"none" if m is None else np.packbits(np.asarray(m, bool)).tobytes() for m in masks])


@st.cache_data(show_spinner="Imputing expression…", max_entries=64)
def imputed_expression(model_key_: str, cell_type: str, gene: str, _models: LoadedModels) -> np.ndarray:
    """Per-spot expression of ``gene`` in ``cell_type`` (get_scale_for_ct × mean library size)."""
    scale = _models.st_model.get_scale_for_ct(cell_type, genes=[gene])
    lib = float(getattr(_models.st_model, "mean_library_size", 1.0))
    return scale.iloc[:, 0].to_numpy() * lib
