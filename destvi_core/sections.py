"""Several spatial sections with one single-cell reference.

A lab rarely has one slide: it has 4 to 20 sections, often from two or more conditions. DestVI
trains the reference model (CondSCVI) once and one spatial model per section from it, which
only works when every section is modelled on the same genes as the reference. So the sections
are prepared together: the genes kept are those of the reference present in *every* section,
then the reference's highly variable genes among them (the tutorial's HVG step), and each
section is validated and cleaned on its own.

Sections come from several files (``.h5ad`` or Space Ranger folders), a folder of them, or one
``.h5ad`` whose ``obs`` has a section column (:func:`split_sections`). Each section may carry a
condition label (a constant ``obs['condition']``, or given by the user) used to compare
conditions (:mod:`destvi_core.analysis.sections`).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from anndata import AnnData

from .data import MIN_CELLS_PER_TYPE, MIN_SHARED_GENES, prepare_inputs, read_spatial, shared_genes
from .errors import DestVIWarning, InputError

CONDITION_KEY = "condition"
"""Default ``obs`` column holding a section's condition (constant within a section)."""

MAX_SECTIONS = 200


@dataclass
class SectionsReport:
    """What :func:`prepare_sections` did (per section and for the shared reference)."""

    n_cells: int
    n_genes_sc: int
    n_shared: int  # genes of the reference present in every section
    n_used_genes: int
    cell_type_counts: dict[str, int]
    n_spots: dict[str, int]
    n_genes_st: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    labels_key: str = "cell_type"
    hvg: bool = True

    def summary_lines(self) -> list[str]:
        """Human-readable summary, one fact per line (the CLI prints it)."""
        types = ", ".join(f"{k} ({v})" for k, v in self.cell_type_counts.items())
        selection = " after HVG selection" if self.hvg and self.n_used_genes < self.n_shared else ""
        lines = [f"Reference: {self.n_cells} cells x {self.n_genes_sc} genes, "
                 f"{len(self.cell_type_counts)} cell types in obs['{self.labels_key}']",
                 f"Sections: {len(self.n_spots)} ("
                 + ", ".join(f"{name}: {n} spots" for name, n in self.n_spots.items()) + ")",
                 f"Genes in the reference and every section: {self.n_shared}; used: "
                 f"{self.n_used_genes}{selection}",
                 f"Cell types: {types}"]
        return lines + [f"Warning: {w}" for w in self.warnings]


@dataclass
class PreparedSections:
    """One prepared reference and the prepared sections (same ordered genes everywhere)."""

    sc: AnnData
    sections: dict[str, AnnData]
    report: SectionsReport
    conditions: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.sections)


# ============================================================================================
# reading
# ============================================================================================

def section_name(path: str | Path) -> str:
    """A section's name from its file: the file stem (``A.h5ad`` -> ``A``) or folder name."""
    path = Path(path)
    return path.name if path.is_dir() else path.name.removesuffix(".h5ad")


def _is_visium_folder(path: Path) -> bool:
    return path.is_dir() and any((path / sub / "filtered_feature_bc_matrix.h5").is_file()
                                 or (path / sub / "filtered_feature_bc_matrix").is_dir()
                                 for sub in (".", "outs"))


def find_section_files(folder: str | Path) -> list[Path]:
    """The sections in ``folder``: its ``.h5ad`` files and Space Ranger output folders, by name.

    Raises
    ------
    InputError
        The folder does not exist or holds no section.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder", "give the folder that holds one .h5ad file "
                         "or Space Ranger output folder per section")
    found = sorted((p for p in folder.iterdir()
                    if (p.is_file() and p.name.endswith(".h5ad")) or _is_visium_folder(p)),
                   key=lambda p: p.name)
    if not found:
        raise InputError(f"{folder} holds no .h5ad file and no Space Ranger output folder",
                         "put one file (or Space Ranger folder) per section in it")
    return found


def unique_names(paths: list[str | Path]) -> list[str]:
    """Section names of ``paths``; :class:`InputError` when two files give the same name."""
    names = [section_name(p) for p in paths]
    seen: dict[str, str] = {}
    for name, path in zip(names, paths):
        if name in seen:
            raise InputError(f"two spatial files give the same section name {name!r} "
                             f"({seen[name]} and {path})",
                             "rename one of them: the file name (without .h5ad) names the "
                             "section and its model folder")
        seen[name] = str(path)
    return names


def read_sections(paths: list[str | Path], bin_size: int | None = None,
                  layer: str | None = None) -> dict[str, AnnData]:
    """Read one section per path (``.h5ad`` or Space Ranger folder, Visium HD at ``bin_size``),
    named by file stem."""
    if not paths:
        raise InputError("no spatial section was given", "give at least one spatial file")
    if len(paths) > MAX_SECTIONS:
        raise InputError(f"{len(paths)} sections were given (at most {MAX_SECTIONS})",
                         "train them in several groups")
    return {name: read_spatial(path, bin_size, layer)
            for name, path in zip(unique_names(paths), paths)}


def _safe(value: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", str(value)).strip("_.") or "section"


def split_sections(adata: AnnData, key: str) -> dict[str, AnnData]:
    """Split one spatial AnnData into sections by ``obs[key]`` (e.g. ``library_id``).

    Each section keeps its spots, coordinates and, when ``uns['spatial']`` holds one entry
    per library named like the section, only its own histology image. Names are made safe for
    folder names (``/`` -> ``_``).

    Raises
    ------
    InputError
        ``key`` is not an obs column, has missing values, or a single value.
    """
    if key not in adata.obs.columns:
        available = ", ".join(map(str, adata.obs.columns[:15])) or "none"
        raise InputError(f"the spatial data has no obs column {key!r} to split sections by "
                         f"(columns: {available})", "choose the column naming each spot's section")
    values = adata.obs[key]
    if values.isna().any():
        raise InputError(f"{int(values.isna().sum())} spots have no value in obs[{key!r}]",
                         "give every spot its section, or remove the unassigned spots")
    labels = values.astype(str).to_numpy()
    order = list(dict.fromkeys(labels))
    if len(order) > MAX_SECTIONS:
        raise InputError(f"obs[{key!r}] has {len(order)} different values (at most "
                         f"{MAX_SECTIONS} sections)", "choose the column naming the sections")
    names = {value: _safe(value) for value in order}
    if len(set(names.values())) < len(names):
        raise InputError(f"two sections of obs[{key!r}] give the same folder-safe name",
                         "rename the sections so that they differ in letters or digits")
    spatial = adata.uns.get("spatial")
    out = {}
    for value in order:
        part = adata[labels == value].copy()
        if isinstance(spatial, dict) and value in spatial:
            part.uns["spatial"] = {value: spatial[value]}
        out[names[value]] = part
    return out


def section_conditions(sections: dict[str, AnnData], key: str = CONDITION_KEY) -> dict[str, str]:
    """``{section: condition}`` for the sections whose ``obs[key]`` holds a single value."""
    out = {}
    for name, adata in sections.items():
        if key in adata.obs.columns:
            values = adata.obs[key].dropna().astype(str).unique()
            if len(values) == 1:
                out[name] = str(values[0])
    return out


# ============================================================================================
# preparation
# ============================================================================================

def _common_genes(sc: AnnData, sections: dict[str, AnnData], min_shared_genes: int) -> list[str]:
    """Reference genes present in every section (reference order), with a clear error naming
    the section at fault."""
    for name, st in sections.items():
        try:
            shared_genes(sc, st, min_shared_genes)
        except InputError as err:
            raise InputError(f"section {name!r}: {err.problem}", err.fix) from None
    common = set(map(str, sc.var_names))
    for st in sections.values():
        common &= set(map(str, st.var_names))
    genes = [str(g) for g in sc.var_names if str(g) in common]
    if len(genes) < min_shared_genes:
        smallest = min(sections, key=lambda n: sections[n].n_vars)
        raise InputError(f"the reference and all {len(sections)} sections share only "
                         f"{len(genes)} genes (need at least {min_shared_genes}; section "
                         f"{smallest!r} has the fewest genes, {sections[smallest].n_vars})",
                         "use sections measured on the same gene panel, or train that section "
                         "on its own")
    return genes


def prepare_sections(sc: AnnData, sections: dict[str, AnnData], labels_key: str = "cell_type",
                     layer_sc: str | None = None, layer_st: str | None = None,
                     spatial_key: str = "spatial", n_top_genes: int = 2000, hvg: bool = True,
                     conditions: dict[str, str] | None = None, condition_key: str = CONDITION_KEY,
                     min_shared_genes: int = MIN_SHARED_GENES,
                     min_cells_per_type: int = MIN_CELLS_PER_TYPE) -> PreparedSections:
    """Validate the reference and every section and give them one ordered gene set.

    Genes: reference genes present in every section, then ``n_top_genes`` HVGs of the
    reference among them (:func:`~destvi_core.data.prepare_inputs` does the validation and
    cleaning). With one section the result is exactly ``prepare_inputs(sc, st)``.

    Parameters
    ----------
    sc
        Single-cell reference (raw counts).
    sections
        ``{name: spatial AnnData}`` (raw counts, coordinates in ``obsm[spatial_key]``).
    conditions
        ``{section: condition}``; sections not listed take their constant
        ``obs[condition_key]`` when there is one.
    Other parameters
        As :func:`~destvi_core.data.prepare_inputs`.

    Raises
    ------
    InputError
        What :func:`~destvi_core.data.prepare_inputs` raises, prefixed with the section's name,
        or too few genes shared by all sections.
    """
    if not sections:
        raise InputError("no spatial section was given", "give at least one spatial section")
    common = dict(labels_key=labels_key, layer_st=layer_st, spatial_key=spatial_key,
                  min_shared_genes=min_shared_genes, min_cells_per_type=min_cells_per_type)
    names = list(sections)
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DestVIWarning)
        reference = sc
        if len(names) > 1:
            genes = _common_genes(sc, sections, min_shared_genes)
            reference = sc[:, genes] if len(genes) < sc.n_vars else sc
        first = _prepare_one(names[0], reference, sections[names[0]], layer_sc=layer_sc,
                             n_top_genes=n_top_genes, hvg=hvg, **common)
        messages += _messages(caught, names[0] if len(names) > 1 else None)
        prepared = {names[0]: first.st}
        for name in names[1:]:
            del caught[:]
            other = _prepare_one(name, first.sc, sections[name], layer_sc=None, hvg=False,
                                 **common)
            if list(other.sc.var_names) != list(first.sc.var_names):  # pragma: no cover - guard
                raise InputError(f"section {name!r} lost genes while being prepared",
                                 "check that its counts cover the reference's genes")
            messages += _messages(caught, name)
            prepared[name] = other.st
    for message in dict.fromkeys(messages):
        warnings.warn(message, DestVIWarning, stacklevel=2)
    rep = first.report
    n_shared = rep.n_shared if len(names) == 1 else len(genes)
    report = SectionsReport(
        n_cells=rep.n_cells, n_genes_sc=sc.n_vars, n_shared=n_shared,
        n_used_genes=rep.n_used_genes, cell_type_counts=dict(rep.cell_type_counts),
        n_spots={n: int(a.n_obs) for n, a in prepared.items()},
        n_genes_st={n: int(a.n_vars) for n, a in sections.items()},
        warnings=list(dict.fromkeys(messages)), labels_key=labels_key, hvg=hvg)
    found = section_conditions(sections, condition_key)
    found.update({str(k): str(v) for k, v in (conditions or {}).items() if k in prepared and v})
    return PreparedSections(first.sc, prepared, report, found)


def _prepare_one(name: str, sc: AnnData, st: AnnData, **kwargs):
    try:
        return prepare_inputs(sc, st, **kwargs)
    except InputError as err:
        raise InputError(f"section {name!r}: {err.problem}", err.fix) from None


def _messages(caught, section: str | None) -> list[str]:
    prefix = f"section {section!r}: " if section else ""
    return [prefix + str(w.message) for w in caught if issubclass(w.category, DestVIWarning)]


def concatenate_sections(results: dict[str, AnnData], key: str = "section") -> AnnData:
    """One AnnData of several sections' results, with ``obs[key]`` naming each spot's section
    (spot names prefixed by it when they collide). ``obsm`` entries present in every section
    are kept, the histology images of all sections go to ``uns['spatial']`` (one entry per
    library, as scanpy and squidpy expect); other ``uns`` content is left to the caller."""
    import anndata as ad

    names = list(results)
    clash = len({s for a in results.values() for s in a.obs_names}) < sum(
        a.n_obs for a in results.values())
    merged = ad.concat([results[n] for n in names], label=key, keys=names, join="inner",
                       index_unique="-" if clash else None, merge="same", uns_merge=None)
    merged.obs[key] = merged.obs[key].astype(str).astype("category")
    libraries = {}
    for name in names:
        spatial = results[name].uns.get("spatial")
        if isinstance(spatial, dict):
            for library, value in spatial.items():
                libraries[library if library not in libraries else f"{name}_{library}"] = value
    if libraries:
        merged.uns["spatial"] = libraries
    if "spatial" in merged.obsm:
        merged.obsm["spatial"] = np.asarray(merged.obsm["spatial"], dtype=np.float64)
    return merged
