"""Training from the app: every training is a job on the server's Dask cluster.

* :func:`job_manager` — one :class:`destvi_core.jobs.JobManager` per server process
  (``st.cache_resource``): it holds the Dask client and every job of the server, so jobs
  outlive pages, browser sessions and reloads. The local cluster starts on the first
  submission, never on the way to a first map.
* A session says which models it is waiting for ("wants") per section; :func:`sync_models`
  (run by app.py before every page) puts the best finished one in place — the demo's first-look
  model first, then the refined one when its job is done — and attaches a seed ensemble's other
  seeds when they exist.
"""

from __future__ import annotations

import threading
from typing import Any

import streamlit as st

from . import loaders, state
from .state import LoadedData, LoadedProject

FIRST_LOOK = {"sc_epochs": 5, "st_epochs": 40}
"""The demo's first model, small enough to be drawn within a minute of *Use the demo* on 2
CPU cores (bench/bench_jobs.py, README "Jobs"); the quick preset replaces it when done."""

MAX_ENSEMBLE = 20


# ------------------------------------------------------------------ the server's job manager
@st.cache_resource
def _slot() -> dict:
    """Server-wide choice of where jobs run (the app's "Scheduler address" field)."""
    return {"address": None, "lock": threading.Lock(), "managers": {}}


def scheduler_choice() -> str | None:
    """The scheduler set in the app, else ``$DESTVI_STUDIO_SCHEDULER``, else None (local)."""
    from destvi_core.cluster import scheduler_address

    return scheduler_address(_slot()["address"])


def job_manager():
    """The job manager of this server (created on first use; starts nothing by itself)."""
    from destvi_core.jobs import JobManager

    cache = loaders.model_cache()
    slot = _slot()
    key = (scheduler_choice(), str(cache.root) if cache is not None else "")
    with slot["lock"]:
        manager = slot["managers"].get(key)
        if manager is None:
            manager = slot["managers"][key] = JobManager(key[0], cache=cache)
        return manager


def all_jobs() -> list:
    """Every job of this server, over every manager it used (newest first)."""
    slot = _slot()
    with slot["lock"]:
        managers = list(slot["managers"].values())
    jobs = [job for manager in managers for job in manager.jobs()]
    return sorted(jobs, key=lambda j: j.submitted, reverse=True)


def set_scheduler(address: str | None) -> None:
    """Run the next jobs on ``address`` (None: the local cluster); connects now, so a wrong
    address fails here with a clear message."""
    from destvi_core.cluster import scheduler_address

    address = scheduler_address(address) if address else None
    slot = _slot()
    if address:
        from destvi_core.jobs import JobManager

        manager = JobManager(address, cache=loaders.model_cache())
        manager.client  # noqa: B018 - connect now (InputError when unreachable)
        with slot["lock"]:
            cache = loaders.model_cache()
            slot["managers"][(address, str(cache.root) if cache is not None else "")] = manager
    slot["address"] = address


def shutdown() -> None:
    """Close every manager of this process (tests; the app closes them at exit)."""
    slot = _slot()
    with slot["lock"]:
        managers = list(slot["managers"].values())
        slot["managers"].clear()
    for manager in managers:
        manager.close()


# ------------------------------------------------------------------ parameters
def first_look_params():
    if loaders.fast():  # tests: the tiny schedule already
        return loaders.training_params()
    return loaders.preset_params("quick", **FIRST_LOOK)


def refined_params():
    return loaders.preset_params("quick")


# ------------------------------------------------------------------ submitting
def submit(project: LoadedProject, params: Any, names: list[str] | None = None,
           n_seeds: int = 1, priority: int = 0, label: str = "") -> list:
    """Train ``params`` on the sections ``names`` (default all): one reference job and a
    spatial job per section and seed. Returns the spatial jobs (done at once when cached)."""
    names = names or project.names
    sections = {n: project.sections[n].st for n in names}
    data_keys = {n: project.sections[n].key for n in names}
    first = project.sections[names[0]]
    jobs = job_manager().submit_sections(first.sc, sections, first.labels_key, params,
                                         n_seeds=n_seeds, data_keys=data_keys, priority=priority)
    if label:
        for job in jobs + [j.reference for j in jobs if j.reference is not None]:
            if not job.label.startswith(label):
                job.label = f"{label} · {job.label}"
    for name in names:
        want(project.sections[name], [params], n_seeds)
    return jobs


def warm_up_for_demo() -> None:
    """On a fresh cache the demo will train: start the cluster (its workers import torch)
    while the demo data are being built."""
    from destvi_core.cache import prepared_demo_digest

    cache = loaders.model_cache()
    if cache is not None and prepared_demo_digest(0, cache.root) is None:
        job_manager().start_in_background()


def start_demo(project: LoadedProject) -> None:
    """*Use the demo*: show a cached model at once, else train a small first-look model (high
    priority) and the quick preset next to it; the quick model replaces the first look."""
    data = project.first
    quick, first = refined_params(), first_look_params()
    want(data, [quick, first], 1)
    if loaders.find_models(data, quick) is not None:
        return
    if loaders.find_models(data, first) is None:
        submit(project, first, priority=10, label="first look")
    submit(project, quick, label="refined")
    want(data, [quick, first], 1)


# ------------------------------------------------------------------ what a session waits for
def want(data: LoadedData, params_list: list, n_seeds: int = 1) -> None:
    """Ask for the best available of ``params_list`` (preferred first) on ``data``."""
    wants = dict(state.flag("wants", {}) or {})
    wants[data.key] = {"params": list(params_list), "n_seeds": int(n_seeds)}
    state.set_flag("wants", wants)


def wanted(data: LoadedData) -> dict | None:
    return (state.flag("wants", {}) or {}).get(data.key)


def section_jobs(data: LoadedData) -> list:
    """This section's jobs (spatial ones and their reference), newest batch first."""
    out = []
    for job in all_jobs():
        if job.data_key == data.key:
            out.append(job)
            if job.reference is not None and job.reference not in out:
                out.append(job.reference)
    return out


def active_jobs(project: LoadedProject | None) -> list:
    if project is None:
        return []
    keys = {d.key for d in project.sections.values()}
    jobs = [j for j in all_jobs() if j.data_key in keys and j.active]
    refs = [j.reference for j in jobs if j.reference is not None and j.reference.active]
    return list({id(j): j for j in refs + jobs}.values())


def sync_models() -> str | None:
    """Put finished models in place for every section this session waits for.

    Returns a message when a model appeared or was replaced by a better one (for a toast).
    Cheap when nothing is pending (a dictionary lookup per section).
    """
    balance_app_threads()
    project = state.project()
    wants = state.flag("wants", {}) or {}
    if project is None or not wants:
        return None
    note = None
    for data in project.sections.values():
        entry = wants.get(data.key)
        if not entry:
            continue
        note = _sync_section(data, entry) or note
    return note


_APP_THREADS: list[int] = []


def balance_app_threads() -> None:
    """While local workers train on every core, the app's own torch work (gamma, DE) uses one
    thread, so a DE run next to a training does not oversubscribe the cores either."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:  # nothing to balance before the app itself imports torch
        return
    if not _APP_THREADS:
        _APP_THREADS.append(torch.get_num_threads())
    local = [m for m in _slot()["managers"].values() if m.started and not m.address]
    busy = any(j.active for m in local for j in m.jobs())
    wanted = 1 if busy else _APP_THREADS[0]
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


def _sync_section(data: LoadedData, entry: dict) -> str | None:
    params_list, n_seeds = entry["params"], entry["n_seeds"]
    current = state.models_for(data.key)
    for rank, params in enumerate(params_list):
        found = loaders.find_models(data, params)
        if found is None:
            continue
        found = attach_ensemble(found, data, params)
        pending = _pending(data, params, n_seeds)
        if rank == 0 and not pending:
            wants = dict(state.flag("wants", {}) or {})
            wants.pop(data.key, None)
            state.set_flag("wants", wants)
        if current is not None and current.key == found.key:
            return None
        if current is not None and rank > 0 and current.params == loaders.params_dict(
                params_list[0]):
            return None
        state.set_models(found, data.key)
        if current is not None and current.params != found.params:
            return "A longer-trained model replaced the first look."
        if current is None:
            return "Model ready."
        return None
    return None


def _pending(data: LoadedData, params, n_seeds: int) -> bool:
    """Whether jobs for these parameters (or their ensemble) are still active."""
    return any(j.active and j.params.get("seed") == params.seed for j in section_jobs(data)
               if j.kind == "spatial")


def attach_ensemble(models, data: LoadedData, params):
    """``models`` with the other seeds of its ensemble found in the cache (probed as
    ``st_seed = seed + 1, seed + 2, ...``, no torch), or ``models`` itself."""
    import dataclasses

    from destvi_core.cache import cache_key

    if getattr(params, "st_seed", None) is not None:
        return models
    cache = loaders.model_cache()
    if cache is None:
        return models
    digest = loaders.data_digest(data.key, data)
    members, seeds = [], []
    for k in range(1, MAX_ENSEMBLE):
        member = dataclasses.replace(params, st_seed=int(params.seed) + k)
        key = cache_key(data.sc, data.st, data.labels_key, member.cache_dict(), digest=digest)
        props = cache.proportions(key, data.st.obs_names) if key in cache else None
        if props is None:
            break
        members.append(props)
        seeds.append(int(params.seed) + k)
    if not members:
        return models
    seeds = [int(params.seed)] + seeds
    store, lock = loaders._registry()
    with lock:
        known = store.get(models.ensemble_key(models.key, seeds))
    return known or loaders.register(models.with_ensemble(members, seeds))
