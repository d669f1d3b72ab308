"""Cached loaders of the region views (composition, co-occurrence, fit quality, region files).

Like :mod:`studio_ui.loaders`: the only place these views call the engine, cached by content
(model key + a hash of the spot masks), so moving a widget never recomputes what it does not
change. Fit quality needs the model's weights (torch): it is computed only when a view asks for
it, once per model, and kept for every session of the server.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from destvi_core.errors import InputError

from . import loaders
from .state import LoadedModels


# ------------------------------------------------------------------ maps
@st.cache_resource(max_entries=32, show_spinner=False)
def _map(name: str, key: tuple, _build: Callable[[], Any]) -> Any:
    return _build()


def cached_map(name: str, key: tuple, build: Callable[[], Any]) -> Any:
    """A spatial map built once per ``key`` (which must name everything the map shows: model
    key, type, width, image, ...) and shared read-only: at 100,000 spots a rerun that does not
    change the map (a lasso, another type on the other map) skips the ~0.2-0.4 s of painting."""
    return _map(name, key, build)


# ------------------------------------------------------------------ region files (long links)
def _region_dir() -> Path:
    from destvi_core.cache import default_root

    return Path(os.environ.get("DESTVI_STUDIO_CACHE") or default_root()) / "regions"


def save_region_text(text: str) -> str:
    """Store regions too long for a URL under their content hash; returns the hash (16 hex)."""
    token = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = _region_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{token}.txt"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)
    except OSError as err:
        raise InputError(f"the regions could not be saved for the link ({err})",
                         "check that the cache folder is writable (DESTVI_STUDIO_CACHE)") from None
    return token


def load_region_text(token: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{16}", token or ""):
        raise InputError("the regions in this link are damaged", "draw the regions again")
    try:
        return (_region_dir() / f"{token}.txt").read_text()
    except OSError:
        raise InputError("the regions of this link are not stored on this server",
                         "open the link on the server it was made on, or draw the regions again") from None


# ------------------------------------------------------------------ composition
def mask_digest(mask: np.ndarray | None) -> str:
    return loaders.mask_key(mask)


@st.cache_data(show_spinner=False, max_entries=64)
def composition(model_key: str, key_a: str, key_b: str, test: str, thresholds: tuple,
                label_a: str, label_b: str | None, _models: LoadedModels, _a: np.ndarray,
                _b: np.ndarray | None) -> Any:
    """RegionComparison of region A and region B (None: the rest of the tissue)."""
    from destvi_core.analysis import region_composition

    return region_composition(loaders.proportions(_models), _a, _b, thresholds=dict(thresholds),
                              test=test, n_permutations=999, label_a=label_a, label_b=label_b)


# ------------------------------------------------------------------ spatial graph, co-occurrence
@st.cache_resource(show_spinner=False, max_entries=8)
def knn_graph(model_key: str, _models: LoadedModels):
    """The spatial kNN graph of the thresholds (shared read-only sparse matrix)."""
    from destvi_core.analysis import spatial_knn_weights

    spots = loaders.spot_table(model_key, _models)
    return spatial_knn_weights(spots[["x", "y"]].to_numpy())


@st.cache_data(show_spinner="Scoring co-occurrence…", max_entries=16)
def cooccurrence(model_key: str, _models: LoadedModels) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(neighbour scores [C, C], within-spot correlation [C, C])``."""
    from destvi_core.analysis import cooccurrence_scores, within_spot_correlation

    props = loaders.proportions(_models)
    return (cooccurrence_scores(props, weights=knn_graph(model_key, _models)),
            within_spot_correlation(props))


# ------------------------------------------------------------------ fit quality
@st.cache_resource
def _fit_store() -> tuple[dict[str, pd.DataFrame], threading.Lock]:
    return {}, threading.Lock()


def fit_quality_ready(models: LoadedModels) -> pd.DataFrame | None:
    """The fit-quality table if it was computed already (never computes, never loads torch)."""
    store, lock = _fit_store()
    with lock:
        return store.get(models.key)


def fit_quality(models: LoadedModels, progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Per-spot fit quality of ``models`` (computed once per model, chunk by chunk)."""
    ready = fit_quality_ready(models)
    if ready is not None:
        return ready
    from destvi_core.analysis import spot_fit_quality

    table = spot_fit_quality(models.st_model, progress=progress)
    store, lock = _fit_store()
    with lock:
        store[models.key] = table
    return table


@st.cache_data(show_spinner=False, max_entries=32)
def fit_summary(model_key: str, n_mads: float, noise_cut: float, _models: LoadedModels,
                _table: pd.DataFrame) -> Any:
    from destvi_core.analysis import summarize_fit_quality

    return summarize_fit_quality(_table, weights=knn_graph(model_key, _models), n_mads=n_mads,
                                 noise_cut=noise_cut)
