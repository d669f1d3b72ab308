"""Benchmark of destvi_core.analysis at tutorial size (1,100 spots, 12 types, 2,000 genes).

Run: ``python3 bench/bench_analysis.py [--threads 2]``. Prints one row per call with the best of
``--repeat`` wall-clock times and the budget (1 s per call, 3 s for DE sampling). Exits 1 if a
budget is exceeded. Uses duck-typed fake models (tests/_analysis_fakes.py): the model-side
sampling in the DE row is numpy Gamma draws, comparable to the real model's torch sampling.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (BLAS / torch)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    import pandas as pd
    from _analysis_fakes import FakeCondSCVI, FakeDestVI

    from destvi_core import analysis as A

    st = FakeDestVI(n_spots_side=34, n_rows=33, n_types=12, n_genes=2000, n_latent=5, n_planted=50)
    sc = FakeCondSCVI(st.cell_types, n_genes=2000, n_cells_per_type=300, direction=st.direction)
    props = st.get_proportions()
    coords = st.coords
    ct = st.cell_types[0]
    gamma = st.get_gamma(return_numpy=True)
    shared = ROOT.parent / "shared" / "data" / "genesets" / "mouse_hallmark.gmt"
    if shared.is_file():  # realistic library: 50 hallmark sets, query = 50 genes of one set + 10 others
        gene_sets = str(shared)
        lines = [ln.split("\t") for ln in shared.read_text().splitlines()]
        query = lines[5][2:52] + lines[9][2:12]
    else:
        gene_sets = {f"SET_{i}": st.genes[i * 40:(i + 1) * 40] for i in range(50)}
        query = st.genes[:50]
    state: dict = {}

    def knn():
        state["w"] = A.spatial_knn_weights(coords)

    def thresholds():
        state["thr"] = A.automatic_thresholds(props, coords, kind="secondary", weights=state["w"])

    def spca_all():  # worst case: every spot selected
        state["spca"] = A.spatial_pca(gamma[:, :, 0], coords, props[ct].to_numpy())

    def explore():
        state["ex"] = A.explore_gamma(st, sc, ct, threshold=0.0, coords=coords, proportions=props, gamma=gamma)

    def genes():
        ex = state["ex"]
        A.axis_genes(A.log_normalize(sc.adata.X[ex.cell_indices]), ex.cell_projection, sc.genes, n_top=50)

    def colors():
        p = state["spca"].spot_projection
        A.colormap_2d(p[:, 0], p[:, 1])

    def enrich():
        A.enrich(query, gene_sets)

    def enrich_auto():
        A.enrich_auto(query, offline_gene_sets=gene_sets, timeout=1.0)

    def de():
        state["de"] = A.de_genes(st, ct, st.left.copy(), proportions=props, n_samples=10, seed=0)

    s1 = st.sample_expression_for_ct(ct, np.flatnonzero(st.left), 10, seed=0)
    s2 = st.sample_expression_for_ct(ct, np.flatnonzero(~st.left), 10, seed=1)

    def ks_only():
        A.ks_2samp_columns(s1, s2)

    def export():
        with tempfile.TemporaryDirectory() as d:
            out = A.export_bundle(
                Path(d) / "b", st.adata, props, thresholds=state["thr"].thresholds,
                gamma={c: pd.DataFrame(gamma[:, :, i], index=st.adata.obs_names) for i, c in enumerate(st.cell_types)},
                spca={ct: (state["ex"].spot_names, state["ex"].pca.spot_projection, state["ex"].spot_colors)},
                de_results={"de": state["de"].table}, parameters={"n_samples": 10}, metadata={})
            A.bundle_zip(out)

    rows = [
        ("spatial_knn_weights (1,122 spots, K=10)", knn, 1.0),
        ("automatic_thresholds (12 types x 100 cut-offs)", thresholds, 1.0),
        ("spatial_pca (1,122 spots selected)", spca_all, 1.0),
        ("explore_gamma (incl. 300 cells, 2,000 genes)", explore, 1.0),
        ("axis_genes (300 cells x 2,000 genes)", genes, 1.0),
        ("colormap_2d (1,122 points)", colors, 1.0),
        ("enrich offline (60 genes, hallmark GMT)", enrich, 1.0),
        ("enrich_auto (no network -> offline)", enrich_auto, 1.0),
        ("de_genes (10 samples x 1,122 spots x 2,000 genes)", de, 3.0),
        ("  of which ks_2samp_columns (11,220 x 2,000)", ks_only, 3.0),
        ("export_bundle + bundle_zip (12 gamma)", export, 1.0),
    ]
    failed = False
    print(f"{'call':52s} {'best s':>8s} {'budget':>7s}  ok")
    for name, fn, budget in rows:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best = min(times)
        ok = best < budget
        failed |= not ok
        print(f"{name:52s} {best:8.3f} {budget:7.1f}  {'yes' if ok else 'NO'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
