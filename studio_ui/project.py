"""Cached loaders of projects: one reference and one or more spatial sections.

A project of one section is exactly the pair the app always had (same data keys); several
sections are prepared together on one gene set by :func:`destvi_core.sections.prepare_sections`
so one reference model serves them all.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import streamlit as st

from destvi_core.errors import InputError

from . import loaders
from .state import LoadedData, LoadedProject


def demo_project(seed: int = 0) -> LoadedProject:
    """The built-in demo as a one-section project."""
    return LoadedProject.single(loaders.demo_data(seed))


def spatial_paths(text: str) -> list[str]:
    """Spatial inputs typed on the Data page: one path per line; a folder that is not a
    Space Ranger output stands for every section in it."""
    from destvi_core.sections import _is_visium_folder, find_section_files

    out: list[str] = []
    for line in (text or "").splitlines():
        path = line.strip().strip('"').strip("'")
        if not path:
            continue
        p = Path(path).expanduser()
        if p.is_dir() and not _is_visium_folder(p):
            out += [str(f) for f in find_section_files(p)]
        else:
            out.append(path)
    return out


def split_candidates(adata) -> list[str]:
    """obs columns that could name sections (2 to 200 distinct values, fewer than the spots)."""
    out = []
    for column in adata.obs.columns:
        values = adata.obs[column]
        try:
            n = values.nunique(dropna=True)
        except TypeError:
            continue
        if 2 <= n <= 200 and n < adata.n_obs / 5 and not str(column).startswith("_"):
            out.append(str(column))
    return out


@st.cache_resource(show_spinner="Checking and preparing the data…", max_entries=8)
def prepare_project(sc_key: str, st_keys: tuple[str, ...], names: tuple[str, ...],
                    labels_key: str, layer_sc: str | None, layer_st: str | None,
                    section_key: str | None, source: str, _sc: Any, _sts: tuple) -> LoadedProject:
    """Validate the reference and the sections and prepare them on one gene set.

    ``_sts`` holds one AnnData per entry of ``names`` (or a single one split by the obs
    column ``section_key``). InputError says what to fix, naming the section at fault.
    """
    from destvi_core.sections import prepare_sections, split_sections

    if section_key:
        if len(_sts) != 1:
            raise InputError("splitting by an obs column needs exactly one spatial file",
                             "give one file, or several files without a section column")
        sections = split_sections(_sts[0], section_key)
        keys = {n: loaders._sha(st_keys[0], section_key, n) for n in sections}
    else:
        sections = dict(zip(names, _sts))
        keys = dict(zip(names, st_keys))
    prepared, msgs = loaders.with_warnings(prepare_sections, _sc, sections, labels_key=labels_key,
                                           layer_sc=layer_sc, layer_st=layer_st)
    report = dataclasses.asdict(prepared.report)
    messages = tuple(dict.fromkeys(list(report.get("warnings") or []) + msgs))
    single = len(sections) == 1 and not section_key
    out = {}
    for name, st_data in prepared.sections.items():
        key = (loaders._sha(sc_key, keys[name], labels_key, layer_sc, layer_st) if single
               else loaders._sha(sc_key, keys[name], labels_key, layer_sc, layer_st, name))
        section_report = dict(report, n_spots=int(st_data.n_obs),
                              n_genes_st=report["n_genes_st"].get(name))
        section_msgs = tuple(m for m in messages if not m.startswith("section ")
                             or m.startswith(f"section {name!r}"))
        out[name] = LoadedData(key=key, source=source if single else f"{source} · section {name}",
                               sc=prepared.sc, st=st_data, labels_key=labels_key,
                               report=section_report, messages=section_msgs, section=name)
    project_key = loaders._sha(sc_key, tuple(keys.values()), labels_key, layer_sc, layer_st)
    return LoadedProject(key=project_key if not single else next(iter(out.values())).key,
                         source=source, sections=out, conditions=dict(prepared.conditions),
                         report=report, messages=messages)
