"""Typed access to per-session state and its mirror in the URL query parameters.

Everything a user sees lives in ``st.session_state`` (one per browser session, never shared).
The part worth sharing (cell type, threshold kind and values, DE groups, regions, presentation
mode, demo dataset) is written to ``st.query_params`` on every run, and read back once when a
session starts, so a colleague opening the link gets the same view.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st

_PREFIX = "studio."


def _get(name: str, default: Any = None) -> Any:
    return st.session_state.get(_PREFIX + name, default)


def _set(name: str, value: Any) -> None:
    st.session_state[_PREFIX + name] = value


# ------------------------------------------------------------------ loaded objects
@dataclass(frozen=True)
class LoadedData:
    """Prepared reference + spatial data (shared read-only objects; never mutate them)."""

    key: str  # content hash of the prepared pair + labels key
    source: str  # human description ("built-in demo (seed 0)", file names)
    sc: Any  # AnnData
    st: Any  # AnnData
    labels_key: str
    report: dict
    messages: tuple[str, ...] = ()
    gene_sets: dict | None = None  # offline gene sets shipped with the data (demo)
    is_demo: bool = False
    digest: str | None = None  # destvi_core.cache.data_digest, when known in advance
    section: str | None = None  # name of the section (several sections share ``sc``)


@dataclass(frozen=True)
class LoadedProject:
    """One reference and one or more spatial sections prepared on the same genes.

    Pages read the current section through :func:`data` and :func:`models`, which return that
    section's :class:`LoadedData` and :class:`LoadedModels` as if it were the only one.
    """

    key: str
    source: str
    sections: dict  # name -> LoadedData (shared reference ``sc``), in order
    conditions: dict  # name -> condition label (from obs['condition'] when constant)
    report: dict  # the reference / gene-set report (sections' spots in report["n_spots"])
    messages: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return list(self.sections)

    @property
    def first(self) -> LoadedData:
        return next(iter(self.sections.values()))

    @classmethod
    def single(cls, data: LoadedData) -> "LoadedProject":
        name = data.section or "section"
        return cls(key=data.key, source=data.source, sections={name: data}, conditions={},
                   report=data.report, messages=data.messages)


class LoadedModels:
    """Trained models for one LoadedData (immutable, may be shared between sessions).

    Built either from models in memory, or lazily from a disk-cache entry: then ``loader`` is
    called (once, thread-safe) the first time ``sc_model``/``st_model`` is read, and the
    proportions saved with the entry (``saved_proportions``) let the maps draw before that —
    without importing torch. A failed load raises every time it is retried (the caller shows it).
    """

    def __init__(self, key: str, sc_model: Any, st_model: Any, data_key: str,
                 params: dict | None = None, origin: str = "trained", *,
                 loader: Callable[[], tuple[Any, Any]] | None = None,
                 saved_proportions: Any = None, spatial: Any = None,
                 saved_histories: dict[str, list] | None = None):
        if loader is None and (sc_model is None or st_model is None):
            raise ValueError("LoadedModels needs both models or a loader")
        self.key, self.data_key = key, data_key
        self.params = dict(params or {})
        self.origin = origin
        self.saved_proportions = saved_proportions
        self._spatial = spatial  # the spatial AnnData (when the models are deferred)
        self._saved_histories = saved_histories  # {"condscvi": [...], "destvi": [...]}
        self._pair = None if loader is not None else (sc_model, st_model)
        self._loader = loader
        self._lock = threading.Lock()
        source = saved_proportions.columns if saved_proportions is not None else (
            st_model.cell_types if self._pair is not None else None)
        self._types = None if source is None else [str(c) for c in source]

    @property
    def loaded(self) -> bool:
        return self._pair is not None

    def load(self) -> tuple[Any, Any]:
        """``(sc_model, st_model)``, loading them now if they were deferred."""
        if self._pair is None:
            with self._lock:
                if self._pair is None:
                    self._pair = self._loader()
        return self._pair

    def load_in_background(self) -> None:
        """Start loading deferred models in a daemon thread (errors resurface on next access)."""
        if self._pair is None and not self._lock.locked():
            threading.Thread(target=self._quiet_load, name="destvi-model-load", daemon=True).start()

    def _quiet_load(self) -> None:
        try:
            self.load()
        except Exception:  # noqa: BLE001 - the next foreground access raises it for the user
            pass

    def proportions(self) -> Any:
        """Spot x type proportions: the saved ones when available (same values for every
        session, no model needed), else computed by the DestVI model."""
        if self.saved_proportions is not None:
            return self.saved_proportions
        return self.st_model.get_proportions()

    def training_histories(self) -> dict[str, list]:
        """Per-epoch training records of both models (``{"condscvi": [...], "destvi": [...]}``),
        from the saved metadata while the models are deferred."""
        if self._pair is None and self._saved_histories is not None:
            return self._saved_histories
        sc_model, st_model = self.load()
        return {"condscvi": list(getattr(sc_model, "history", None) or []),
                "destvi": list(getattr(st_model, "history", None) or [])}

    def spot_coordinates(self) -> Any:
        """``[n_spots, 2]`` spatial coordinates of the spots."""
        import numpy as np

        adata = self._spatial if self._spatial is not None else self.st_model.adata
        return np.asarray(adata.obsm["spatial"], dtype=float)[:, :2]

    @property
    def sc_model(self) -> Any:
        return self.load()[0]

    @property
    def st_model(self) -> Any:
        return self.load()[1]

    @property
    def cell_types(self) -> list[str]:
        if self._types is None:
            self._types = [str(c) for c in self.st_model.cell_types]
        return list(self._types)

    # ---------------------------------------------------------------- seed ensembles
    ensemble_seeds: tuple[int, ...] = ()
    _ensemble: Any = None  # [members, spots, types] proportions, the model's own first

    def with_ensemble(self, members: list, seeds: list[int]) -> "LoadedModels":
        """The same models plus the proportions of other seeds of the spatial model (a seed
        ensemble): a new object (its own key), sharing the loaded models with this one."""
        import numpy as np

        types = self.cell_types
        own = self.proportions()
        stack = np.stack([own[types].to_numpy(np.float64)]
                         + [m.loc[own.index, types].to_numpy(np.float64) for m in members])
        out = LoadedModels(self.ensemble_key(self.key, seeds), None, None, self.data_key, self.params, self.origin,
                           loader=self.load, saved_proportions=own, spatial=self._spatial
                           if self._spatial is not None else self.st_model.adata,
                           saved_histories=self._saved_histories)
        if self._pair is not None:
            out._pair = self._pair
        out.ensemble_seeds = tuple(sorted(seeds))
        out._ensemble = stack
        return out

    @staticmethod
    def ensemble_key(key: str, seeds: list[int]) -> str:
        """Key of the models ``key`` with the ensemble of ``seeds``."""
        import hashlib

        return hashlib.sha256(f"{key}|ensemble|{sorted(seeds)}".encode()).hexdigest()

    def proportion_sd(self) -> Any:
        """Per spot and type, the standard deviation of the proportions across the seeds of
        the ensemble (DataFrame spots x types), or None without an ensemble."""
        if self._ensemble is None:
            return None
        import pandas as pd

        own = self.proportions()
        return pd.DataFrame(self._ensemble.std(0, ddof=1), index=own.index,
                            columns=self.cell_types)

    def __repr__(self) -> str:
        return (f"LoadedModels(key={self.key[:10]!r}, origin={self.origin!r}, "
                f"loaded={self.loaded})")


def project() -> LoadedProject | None:
    """All sections loaded in this session (None before any data)."""
    return _get("project")


def set_project(value: LoadedProject | None, section: str | None = None) -> None:
    """Load a project; the current section becomes ``section``, else the same name as before
    when it exists, else the first one."""
    _set("project", value)
    _set("models_by_data", {} if value is None or (project_key() != value.key) else
         dict(_get("models_by_data", {})))
    _set("project_key", None if value is None else value.key)
    if value is None:
        _set("data", None)
        set_models(None)
        return
    names = value.names
    wanted = section if section in names else _get("section") if _get("section") in names \
        else names[0]
    set_section(wanted)


def project_key() -> str | None:
    return _get("project_key")


def section() -> str | None:
    """Name of the current section (the one every page shows)."""
    return _get("section")


def set_section(name: str) -> None:
    p = project()
    if p is None or name not in p.sections:
        return
    previous = _get("data")
    _set("section", name)
    _set("data", p.sections[name])
    current = _get("models_by_data", {}).get(p.sections[name].key)
    if previous is not None and previous.key != p.sections[name].key:
        _set("groups", {})  # spot groups belong to one section (a link's groups are kept)
    _set("models", current)


def data() -> LoadedData | None:
    """The current section's data."""
    return _get("data")


def set_data(value: LoadedData | None) -> None:
    """Load a single-section pair (a project of one section)."""
    if value is None:
        set_project(None)
        return
    if data() is not None and data().key != value.key:
        set_models(None)
        _set("url_regions", None)  # a link's regions belong to its data (studio_ui.region_state)
        _set("regions_url", None)
    set_project(LoadedProject.single(value))


def models() -> LoadedModels | None:
    """The current section's models."""
    m = _get("models")
    d = data()
    if m is not None and d is not None and m.data_key != d.key:
        return None
    return m


def models_for(data_key: str) -> LoadedModels | None:
    """The models of any section of the project (by its data key)."""
    d = data()
    if d is not None and d.key == data_key and models() is not None:
        return models()
    return _get("models_by_data", {}).get(data_key)


def set_models(value: LoadedModels | None, data_key: str | None = None) -> None:
    """Set the models of the current section (or of section ``data_key``)."""
    d = data()
    target = value.data_key if value is not None else (data_key or (d.key if d else None))
    store = dict(_get("models_by_data", {}))
    if target is not None:
        if value is None:
            store.pop(target, None)
        else:
            store[target] = value
    _set("models_by_data", store)
    if d is None or target != d.key:
        return
    old = _get("models")
    # a new model forgets the old one's groups, and its thresholds when trained with other
    # parameters; the first model of a session keeps what a shared link brought (regions
    # travel with the data, not the model)
    if value is None or (old is not None and old.key != value.key):
        if value is None or old.params != value.params:
            _set("thresholds", {})
        _set("groups", {})
    _set("models", value)


def conditions() -> dict[str, str]:
    """``{section: condition}``: the project's, as edited in this session."""
    p = project()
    base = dict(p.conditions) if p is not None else {}
    base.update(_get("conditions", {}).get(project_key(), {}))
    return {k: v for k, v in base.items() if v}


def set_conditions(values: dict[str, str]) -> None:
    edited = dict(_get("conditions", {}))
    edited[project_key()] = {str(k): str(v or "").strip() for k, v in values.items()}
    _set("conditions", edited)


def cell_type(choices: list[str]) -> str:
    """The selected cell type (falls back to the first choice)."""
    ct = _get("cell_type")
    return ct if ct in choices else choices[0]


def set_cell_type(value: str) -> None:
    _set("cell_type", value)


def threshold_kind() -> str:
    return _get("threshold_kind", "secondary")


def set_threshold_kind(kind: str) -> None:
    _set("threshold_kind", kind)


def thresholds() -> dict[str, float]:
    """User thresholds set in this session (types not in the dict use the automatic value)."""
    return dict(_get("thresholds", {}))


def set_threshold(ct: str, value: float) -> None:
    thr = thresholds()
    thr[ct] = float(value)
    _set("thresholds", thr)


def clear_thresholds() -> None:
    _set("thresholds", {})


def groups() -> dict[str, str]:
    """DE group specs ``{"g1": ..., "g2": ...}`` (see :mod:`studio_ui.groups`)."""
    return dict(_get("groups", {}))


def set_group(name: str, spec: str) -> None:
    g = groups()
    g[name] = spec
    _set("groups", g)


def presentation() -> bool:
    return bool(_get("presentation", False))


def set_presentation(value: bool) -> None:
    _set("presentation", bool(value))


def flag(name: str, default: Any = None) -> Any:
    """Miscellaneous per-session values (training status, last results)."""
    return _get("flag." + name, default)


def set_flag(name: str, value: Any) -> None:
    _set("flag." + name, value)


# ------------------------------------------------------------------ URL
def _encode_thresholds(thr: dict[str, float]) -> str:
    return ";".join(f"{k}:{v:.4g}" for k, v in sorted(thr.items()))


def _decode_thresholds(text: str) -> dict[str, float]:
    out = {}
    for item in text.split(";"):
        name, sep, value = item.rpartition(":")
        if sep:
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


def read_url_once() -> None:
    """Copy shareable state from the URL into this session (first run of a session only)."""
    if _get("url_read"):
        return
    _set("url_read", True)
    qp = st.query_params
    if "ct" in qp:
        _set("cell_type", qp["ct"])
    if qp.get("kind") in ("primary", "secondary"):
        _set("threshold_kind", qp["kind"])
    if "thr" in qp:
        _set("thresholds_from_url", _decode_thresholds(qp["thr"]))
    for g in ("g1", "g2"):
        if g in qp:
            set_group(g, qp[g])
    if qp.get("present") == "1":
        _set("presentation", True)
    if "data" in qp:
        _set("url_data", qp["data"])
    if "sec" in qp:
        _set("section", qp["sec"])
    if qp.get("reg"):  # decoded once the data are loaded (studio_ui.region_state)
        _set("url_regions", qp["reg"])
        _set("regions_url", qp["reg"])


def url_thresholds() -> dict[str, float]:
    """Thresholds given in the URL (applied once models are loaded)."""
    return dict(_get("thresholds_from_url", {}))


def consume_url_thresholds() -> dict[str, float]:
    thr = url_thresholds()
    _set("thresholds_from_url", {})
    return thr


def url_data() -> str | None:
    return _get("url_data")


def write_url() -> None:
    """Mirror shareable state into the query parameters (only changed keys are written)."""
    wanted: dict[str, str] = {}
    d = data()
    if d is not None and d.is_demo:
        wanted["data"] = "demo"
    p = project()
    if p is not None and len(p.sections) > 1 and section():
        wanted["sec"] = section()
    if _get("cell_type"):
        wanted["ct"] = _get("cell_type")
    wanted["kind"] = threshold_kind()
    thr = thresholds()
    if thr:
        wanted["thr"] = _encode_thresholds(thr)
    for g, spec in groups().items():
        if spec:
            wanted[g] = spec
    if _get("regions_url"):  # kept up to date by studio_ui.region_state
        wanted["reg"] = _get("regions_url")
    if presentation():
        wanted["present"] = "1"
    qp = st.query_params
    for key in list(qp.keys()):
        if key not in wanted:
            del qp[key]
    for key, value in wanted.items():
        if qp.get(key) != value:
            qp[key] = value
