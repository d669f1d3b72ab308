"""The built-in lymph-node-like demo and the tutorial-sized benchmark simulation."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .base import SimulatedData, set_label
from .generic import simulate_destvi
from .gmt import write_gmt

DEMO_TYPES = ["B cells", "CD4 T cells", "CD8 T cells", "Monocytes", "Dendritic cells",
              "Plasma cells", "NK cells", "Stromal cells"]
"""Cell types of the built-in lymph-node-like demo."""

DEMO_REGIONS = ["cortex", "paracortex", "medulla"]
"""Demo regions, outer ring to centre."""

_DEMO_MARKERS = {
    "B cells": ["Cd19", "Ms4a1", "Cd79a", "Cd79b", "Pax5"],
    "CD4 T cells": ["Cd4", "Il7r", "Cd3e", "Cd40lg", "Tcf7"],
    "CD8 T cells": ["Cd8a", "Cd8b1", "Cd3g", "Ccl5", "Cd3d"],
    "Monocytes": ["Lyz2", "Cd14", "Fcgr3", "Csf1r", "Ly6c2"],
    "Dendritic cells": ["Itgax", "Flt3", "H2-Ab1", "Cd74", "Xcr1"],
    "Plasma cells": ["Jchain", "Sdc1", "Mzb1", "Prdm1", "Igkc"],
    "NK cells": ["Ncr1", "Klrb1c", "Klrd1", "Nkg7", "Gzma"],
    "Stromal cells": ["Pdgfra", "Ccl19", "Ccl21a", "Lum", "Dcn"],
}

# (type, state dim) -> (story name, real-looking genes of the UP program)
_DEMO_PROGRAMS = {
    ("Monocytes", 0): ("IFN_RESPONSE", ["Isg15", "Ifit1", "Ifit3", "Irf7", "Mx1", "Rsad2",
                                        "Oasl1", "Stat1", "Bst2", "Usp18", "Ifi44", "Cxcl10"]),
    ("B cells", 0): ("GERMINAL_CENTER", ["Aicda", "Bcl6", "Mki67", "Top2a", "S1pr2", "Gcsam",
                                         "Rgs13", "Mef2b", "Myb", "Cxcr4"]),
    ("CD8 T cells", 0): ("CYTOTOXICITY", ["Gzmb", "Prf1", "Ifng", "Gzmk", "Fasl", "Ctsw",
                                          "Klrg1", "Cx3cr1", "Tbx21", "Zeb2"]),
    ("CD4 T cells", 0): ("T_ACTIVATION", ["Cd69", "Nr4a1", "Il2", "Egr1", "Fos", "Junb",
                                          "Tnf", "Icos", "Cd40lg2", "Il2ra"]),
    ("Dendritic cells", 0): ("DC_MIGRATION", ["Ccr7", "Fscn1", "Ccl22", "Il4i1", "Cd40",
                                              "Cd80", "Cd86", "Socs2", "Relb", "Nudt17"]),
    ("Stromal cells", 0): ("ECM_REMODELING", ["Col1a1", "Col1a2", "Col3a1", "Fn1", "Sparc",
                                              "Postn", "Mmp2", "Timp1", "Lox", "Tnc"]),
    ("Plasma cells", 0): ("UNFOLDED_PROTEIN_RESPONSE", ["Xbp1", "Hspa5", "Sec61b", "Ssr4",
                                                        "Derl3", "Edem1", "Pdia4", "Herpud1",
                                                        "Manf", "Dnajb9"]),
    ("NK cells", 0): ("NK_ACTIVATION", ["Klrk1", "Ncr3", "Il2rb", "Cd226", "Tyrobp", "Fcer1g",
                                        "Xcl1", "Ccl3", "Ccl4", "Irf8"]),
}


_DEMO_PREFIX = {"B cells": "Bcell", "CD4 T cells": "Tcd4", "CD8 T cells": "Tcd8",
                "Monocytes": "Mono", "Dendritic cells": "Dc", "Plasma cells": "Plasma",
                "NK cells": "Nk", "Stromal cells": "Strom"}


def _rename_demo_genes(sim: SimulatedData) -> SimulatedData:
    """Give the demo's markers and planted programs readable gene names."""
    rename: dict[str, str] = {}
    base = np.asarray(sim.st.uns["simulation"]["mean_"])
    genes = np.asarray(sim.sc.var_names)
    for c, ct in enumerate(DEMO_TYPES):
        others = np.delete(base, c, axis=0).max(axis=0)
        top = genes[np.argsort(-(base[c] - others), kind="stable")]
        free = [g for g in top if g not in rename][:len(_DEMO_MARKERS[ct])]
        rename.update(dict(zip(free, _DEMO_MARKERS[ct])))
    descriptions = dict(sim.descriptions)
    for key in list(sim.gene_sets):
        match = re.match(r"PLANTED_(.+)_STATE(\d+)_(UP|DOWN)$", key)
        if not match:
            continue
        ct = next(t for t in DEMO_TYPES if set_label(t) == match.group(1))
        k, direction = int(match.group(2)), match.group(3)
        story, real = _DEMO_PROGRAMS.get((ct, k), (None, []))
        prefix = f"{_DEMO_PREFIX[ct]}_state{k}_{direction.lower()}"
        new_names = list(real) if direction == "UP" else []
        for i, gene in enumerate(sim.gene_sets[key]):
            rename.setdefault(gene, new_names[i] if i < len(new_names) else f"{prefix}{i + 1:02d}")
        if story:
            descriptions[key] = f"{story} ({descriptions[key]})"
    for adata in (sim.sc, sim.st):
        adata.var_names = [rename.get(g, g) for g in adata.var_names]
    gene_sets = {k: [rename.get(g, g) for g in v] for k, v in sim.gene_sets.items()}
    return SimulatedData(sim.sc, sim.st, gene_sets, descriptions)


def demo_dataset(seed: int = 0) -> SimulatedData:
    """Lymph-node-like demo: 8 immune/stromal types, 4000 cells, 1000 spots, 2000 genes.

    Regions are concentric (``cortex`` outside, ``paracortex``, ``medulla`` in the centre) and
    bias the composition (B cells in the cortex, T cells in the paracortex, plasma cells and
    monocytes in the medulla). Markers and the planted ``STATE0_UP`` programs have readable gene
    names (e.g. monocyte ``IFN_RESPONSE``: Isg15, Ifit1, Irf7, ...; see ``descriptions``). Runs in
    about a second.

    Parameters
    ----------
    seed
        Random seed.
    """
    bias = np.zeros((len(DEMO_TYPES), len(DEMO_REGIONS)))
    bias[DEMO_TYPES.index("B cells"), 0] = 2.0
    bias[DEMO_TYPES.index("CD4 T cells"), 1] = 1.5
    bias[DEMO_TYPES.index("CD8 T cells"), 1] = 1.5
    bias[DEMO_TYPES.index("Plasma cells"), 2] = 2.0
    bias[DEMO_TYPES.index("Monocytes"), 2] = 1.0
    programs = [(DEMO_TYPES.index("B cells"), 0), (DEMO_TYPES.index("Monocytes"), 2)]
    sim = simulate_destvi(n_spots=1000, n_cells=4000, n_genes=2000, n_latent=2,
                          cells_per_spot=10, seed=seed, type_names=DEMO_TYPES,
                          region_names=DEMO_REGIONS, region_bias=bias,
                          region_programs=programs)
    sim.st.uns["simulation"]["generator"] = "demo_dataset"
    return _rename_demo_genes(sim)


def tutorial_size_simulation(seed: int = 0) -> SimulatedData:
    """Benchmark-size data like the DestVI tutorial: 15,000 cells, 12 types, 1,100 spots.

    Parameters
    ----------
    seed
        Random seed.
    """
    return simulate_destvi(n_spots=1100, n_cells=15000, n_types=12, n_genes=2000, n_latent=3,
                           cells_per_spot=10, seed=seed, program_size=20, n_markers=50)


def write_demo(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the demo as ``sc.h5ad``, ``st.h5ad`` and ``genesets.gmt`` in ``out_dir``.

    Parameters
    ----------
    out_dir
        Output folder (created if needed).
    seed
        Random seed.

    Returns
    -------
    dict
        ``{"sc": path, "st": path, "gene_sets": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sim = demo_dataset(seed=seed)
    paths = {"sc": out / "sc.h5ad", "st": out / "st.h5ad", "gene_sets": out / "genesets.gmt"}
    sim.sc.write_h5ad(paths["sc"])
    sim.st.write_h5ad(paths["st"])
    write_gmt(sim.gene_sets, paths["gene_sets"], sim.descriptions)
    return paths
