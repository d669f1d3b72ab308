"""Gene-set enrichment of gene lists (destvi_utils uses Enrichr; here offline first).

Offline: ``gseapy.enrich`` (hypergeometric test against local GMT files or dicts, no network).
Online: ``gseapy.enrichr`` against an Enrichr library, only when the server answers quickly.
Network failures never reach the caller: :func:`enrich_auto` falls back to offline results and
says so in ``message``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = ["EnrichmentResult", "enrich", "enrich_auto", "enrichr_reachable", "ENRICHMENT_COLUMNS"]

GeneSets = Union[str, Path, dict, list]
ENRICHMENT_COLUMNS = ["term", "library", "overlap", "p_value", "adjusted_p_value", "odds_ratio",
                      "combined_score", "genes"]
ENRICHR_HOST = "maayanlab.cloud"

_RENAME = {"Term": "term", "Gene_set": "library", "Overlap": "overlap", "P-value": "p_value",
           "Adjusted P-value": "adjusted_p_value", "Odds Ratio": "odds_ratio",
           "Combined Score": "combined_score", "Genes": "genes"}


@dataclass
class EnrichmentResult:
    """Enrichment table and where it came from.

    Attributes
    ----------
    table
        Columns ``term, library, overlap ("k/n"), p_value, adjusted_p_value (BH within each
        library), odds_ratio, combined_score, genes (";"-joined overlap)``, sorted by adjusted
        then raw p-value; empty (same columns) when nothing overlaps.
    source
        E.g. ``"offline: mouse_hallmark.gmt"`` or ``"Enrichr: BioPlanet_2019"``.
    message
        User-facing note (e.g. why the offline fallback was used); empty when none.
    """

    table: pd.DataFrame
    source: str
    message: str = ""

    def top(self, n: int = 10, alpha: float = 0.01) -> pd.DataFrame:
        """First ``n`` terms with a ``star`` column (adjusted p < ``alpha``, as destvi_utils' "*")."""
        t = self.table.head(n).copy()
        t["star"] = t["adjusted_p_value"] < alpha
        return t


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float if c in ("p_value", "adjusted_p_value", "odds_ratio",
                                                           "combined_score") else object)
                         for c in ENRICHMENT_COLUMNS})


def _clean_genes(genes: Iterable[str]) -> list[str]:
    if isinstance(genes, str):
        genes = [genes]
    out, seen = [], set()
    for g in genes:
        g = str(g).strip()
        if g and g not in seen:
            seen.add(g)
            out.append(g)
    if not out:
        raise InputError("the gene list is empty", "select at least one gene (e.g. a larger top-n)")
    return out


def _as_libraries(gene_sets: GeneSets) -> list[tuple[str, object]]:
    """Normalise the gene-set argument to ``[(library name, path-string or dict)]``."""
    items = gene_sets if isinstance(gene_sets, list) else [gene_sets]
    libs: list[tuple[str, object]] = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            if not item:
                raise InputError("a gene-set dictionary is empty", "pass {set name: [genes]}")
            libs.append((f"custom_{i + 1}" if len(items) > 1 else "custom",
                         {str(k): [str(g) for g in v] for k, v in item.items()}))
        elif isinstance(item, (str, Path)):
            p = Path(item)
            if not p.is_file():
                raise InputError(f"gene-set file {p} does not exist",
                                 "upload a GMT file (name, description, genes... per line)")
            libs.append((p.name, str(p)))
        else:
            raise InputError(f"unsupported gene-set type {type(item).__name__}",
                             "pass a GMT path, a dict {name: genes} or a list of those")
    if not libs:
        raise InputError("no gene-set library given", "pass a GMT path or a dict of gene sets")
    return libs


def _library_genes(lib: object) -> set[str]:
    """All genes of a library (dict or GMT path)."""
    if isinstance(lib, dict):
        return {g for v in lib.values() for g in v}
    genes: set[str] = set()
    with open(str(lib), encoding="utf-8", errors="replace") as fh:
        for line in fh:
            genes.update(p.strip() for p in line.rstrip("\n").split("\t")[2:] if p.strip())
    return genes


def _format(res: pd.DataFrame | None, library: str) -> pd.DataFrame:
    if res is None or len(res) == 0:
        return _empty()
    t = res.rename(columns=_RENAME)
    t["library"] = library
    for c in ENRICHMENT_COLUMNS:
        if c not in t.columns:
            t[c] = np.nan
    return t[ENRICHMENT_COLUMNS]


def _sort(table: pd.DataFrame) -> pd.DataFrame:
    if len(table) == 0:
        return _empty()
    return table.sort_values(["adjusted_p_value", "p_value", "term"], kind="stable").reset_index(drop=True)


def enrich(
    genes: Iterable[str],
    gene_sets: GeneSets,
    background: Iterable[str] | int | None = None,
    source: str = "offline",
) -> EnrichmentResult:
    """Over-representation test of a gene list against local gene-set libraries.

    Parameters
    ----------
    genes
        Query genes (duplicates and blanks dropped).
    gene_sets
        GMT path, ``{set name: [genes]}`` dict, or a list of those (one library each).
    background
        Universe: a gene list (recommended: all genes of the model) or a number of genes;
        None uses gseapy's default (all genes in the library).
    source
        Only ``"offline"`` (kept for symmetry with :func:`enrich_auto`).

    Returns
    -------
    EnrichmentResult

    Notes
    -----
    Uses ``gseapy.enrich(..., outdir=None, no_plot=True)`` (hypergeometric test, BH within each
    library). Sets without any overlap are omitted by gseapy.
    """
    if source != "offline":
        raise InputError(f"unknown enrichment source {source!r}",
                         "use 'offline' here, or enrich_auto() for Enrichr with offline fallback")
    import gseapy

    query = _clean_genes(genes)
    libs = _as_libraries(gene_sets)
    bg = list(map(str, background)) if background is not None and not isinstance(background, int) else background
    tables = []
    for name, lib in libs:
        if not set(query) & _library_genes(lib):  # gseapy would log an error and return nothing
            tables.append(_empty())
            continue
        try:
            r = gseapy.enrich(gene_list=query, gene_sets=lib, background=bg, outdir=None,
                              no_plot=True, verbose=False)
            res = r.results
        except ValueError as e:  # gseapy raises when nothing overlaps / no set passes filters
            if "overlap" in str(e).lower() or "no gene" in str(e).lower() or "empty" in str(e).lower():
                res = None
            else:
                raise InputError(f"gene-set library {name} could not be used ({e})",
                                 "check the GMT format: name<TAB>description<TAB>gene<TAB>...") from e
        except Exception as e:  # malformed files etc.
            raise InputError(f"gene-set library {name} could not be used ({e})",
                             "check the GMT format: name<TAB>description<TAB>gene<TAB>...") from e
        tables.append(_format(res, name))
    table = pd.concat([t for t in tables if len(t)], ignore_index=True) if any(len(t) for t in tables) else _empty()
    return EnrichmentResult(_sort(table), "offline: " + ", ".join(n for n, _ in libs))


def enrichr_reachable(timeout: float = 3.0, host: str = ENRICHR_HOST) -> bool:
    """Quick check that the Enrichr server accepts a TCP connection on port 443.

    Parameters
    ----------
    timeout
        Seconds (DNS resolution plus connect); never blocks much longer.
    host
        Server name.

    Returns
    -------
    bool
        False on any error (no network, DNS failure, timeout).
    """
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except Exception:
        return False


def _enrichr_online(genes: list[str], library: str, organism: str) -> EnrichmentResult:
    import gseapy

    r = gseapy.enrichr(gene_list=genes, gene_sets=library, organism=organism, outdir=None,
                       no_plot=True, verbose=False)
    return EnrichmentResult(_sort(_format(r.results, library)), f"Enrichr: {library}")


def enrich_auto(
    genes: Iterable[str],
    library: str = "BioPlanet_2019",
    offline_gene_sets: GeneSets | None = None,
    organism: str = "human",
    background: Iterable[str] | int | None = None,
    timeout: float = 3.0,
) -> EnrichmentResult:
    """Enrichr when reachable, otherwise offline gene sets, with a message explaining which.

    Parameters
    ----------
    genes
        Query genes.
    library
        Enrichr library (destvi_utils uses ``"BioPlanet_2019"``).
    offline_gene_sets
        Fallback libraries (see :func:`enrich`).
    organism
        Enrichr organism (``"human"``, ``"mouse"``, ...).
    background
        Background for the offline test.
    timeout
        Reachability check timeout in seconds.

    Returns
    -------
    EnrichmentResult
        Network errors are never raised; without offline sets an empty table is returned with
        a message.
    """
    query = _clean_genes(genes)
    reason = ""
    if enrichr_reachable(timeout=timeout):
        try:
            return _enrichr_online(query, library, organism)
        except Exception as e:  # noqa: BLE001 - any network/server error -> fallback
            reason = f"Enrichr request failed ({type(e).__name__})"
    else:
        reason = "Enrichr is not reachable (no network)"
    if offline_gene_sets is None or (isinstance(offline_gene_sets, list) and not offline_gene_sets):
        return EnrichmentResult(_empty(), "none",
                                f"{reason}; no offline gene sets available - upload a GMT file")
    res = enrich(query, offline_gene_sets, background=background)
    names = res.source.removeprefix("offline: ")
    res.message = f"{reason}; showing offline results from {names}"
    return res
