"""Accuracy on small data sets against the NNLS floor, for several training variants.

Small data sets are where epoch-based defaults give few optimisation steps. This script trains
each variant on each data set (known truth) and prints RMSE and mean per-type Spearman (spec 5.3
``metrics_vector``) next to a plain NNLS fit of the reference mean profiles.

Data sets (``--data``, comma list):

* ``seqfish``: seqFISH+ cortex pseudo-spots (``destvi_core.pseudospots``; 55 um pooling of real
  cells, 13 coarse types, rarest with ~15 reference cells). Needs ``../shared/data``.
* ``seqfish_fine``: the same with the 17 fine labels.
* ``ob``: seqFISH+ olfactory bulb pseudo-spots (coarse types).
* ``small``: ``simulate_destvi`` with 300 spots, 6 types (seed 3).
* ``tiny``: ``simulate_destvi`` with 120 spots, 8 types, 40 cells for the rarest type (seed 5).
* ``paper``: the paper's simulation (spec 5.1) from the shared parameters, 400 spots.

Variants (``--variants``, ``;``-separated): ``default`` or ``name=value,name=value`` overrides
of :class:`destvi_core.pipeline.TrainingParams` (e.g. ``amortization=latent``,
``st_min_steps=10000``). Every (data, variant, seed) runs in its own process with one torch
thread, ``--jobs`` at a time.

Run::

    python bench/bench_small_data.py --data seqfish,small,tiny,paper \
        --variants "default;amortization=latent" --seeds 0,1 --jobs 2

Prints a markdown table; also appended to ``bench/results/bench_small_data_<timestamp>.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
SHARED = Path(os.environ.get("DESTVI_SHARED_DATA") or ROOT.parent / "shared" / "data")


def load_data(name: str):
    """``(sc, st, truth)`` prepared for training."""
    import pandas as pd

    from destvi_core.data import prepare_inputs
    from destvi_core.errors import DestVIWarning

    if name in ("seqfish", "seqfish_fine", "ob"):
        from destvi_core.data import read_h5ad_safe
        from destvi_core.pseudospots import pseudospot_benchmark

        file = "seqfish_ob.h5ad" if name == "ob" else "seqfish_cortex_svz.h5ad"
        cells = read_h5ad_safe(SHARED / "seqfish_eng2019" / file).copy()
        if name != "seqfish_fine" and "cell_type_coarse" in cells.obs:
            cells.obs["cell_type"] = cells.obs["cell_type_coarse"]
        return pseudospot_benchmark(cells)
    from destvi_core.simulate import paper_simulation, simulate_destvi

    if name == "small":
        sim = simulate_destvi(n_spots=300, n_cells=1200, n_types=6, n_genes=500, seed=3)
    elif name == "tiny":
        sim = simulate_destvi(n_spots=120, n_cells=800, n_types=8, n_genes=500, seed=5)
    elif name == "paper":
        sim = paper_simulation(SHARED / "destvi_sim_params", n_spots=400, cells_per_spot=30,
                               sc_cells_per_spot=5, library_size=3000, seed=0)
    else:
        raise SystemExit(f"unknown data set {name!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DestVIWarning)
        prep = prepare_inputs(sim.sc, sim.st, labels_key="cell_type")
    truth = pd.DataFrame(sim.st.obsm["true_proportions"]).loc[prep.st.obs_names]
    return prep.sc, prep.st, truth


def parse_variant(text: str) -> dict:
    if text.strip() in ("", "default"):
        return {}
    out = {}
    for item in text.split(","):
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value.strip()
    return out


def thresholded(props, coords):
    """Proportions after the automatic secondary thresholds, rows renormalised (a spot whose
    types all fall below their thresholds keeps its raw row)."""
    from destvi_core.analysis.thresholds import apply_thresholds, automatic_thresholds

    cut = automatic_thresholds(props, coords, kind="secondary").secondary
    kept = apply_thresholds(props, cut)
    total = kept.sum(axis=1)
    out = kept.div(total.where(total > 0, 1.0), axis=0)
    out[total <= 0] = props[total <= 0]
    return out


def run_one(data: str, variant: str, seed: int) -> dict:
    """Worker (in a subprocess): train one variant, return metrics."""
    import torch

    torch.set_num_threads(1)
    from destvi_core.evaluation import nnls_proportions, proportion_metrics
    from destvi_core.pipeline import TrainingParams, spatial_schedule, train_models

    sc, st, truth = load_data(data)
    params = TrainingParams(**{"seed": seed, "device": "cpu", **parse_variant(variant)})
    start = time.perf_counter()
    _, st_model = train_models(sc, st, "cell_type", params)
    elapsed = time.perf_counter() - start
    props = st_model.get_proportions()
    ours = proportion_metrics(truth, props)
    floor = proportion_metrics(truth, nnls_proportions(sc, st))
    sparse = proportion_metrics(truth, thresholded(props, st.obsm["spatial"]))
    epochs, _ = spatial_schedule(st.n_obs, params)
    steps = epochs * max(1, -(-st.n_obs // params.st_batch_size))
    return {"data": data, "variant": variant or "default", "seed": seed, "spots": st.n_obs,
            "cells": sc.n_obs, "types": truth.shape[1], "st_steps": steps,
            "rmse": ours["rmse"], "spearman": ours["spearman"],
            "nnls_rmse": floor["rmse"], "nnls_spearman": floor["spearman"],
            "thr_rmse": sparse["rmse"], "thr_spearman": sparse["spearman"], "seconds": elapsed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="seqfish,small,tiny,paper")
    ap.add_argument("--variants", default="default")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--_worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._worker:
        data, variant, seed = args._worker
        print(json.dumps(run_one(data, variant, int(seed))))
        return 0

    jobs = [(d, v, int(s)) for d in args.data.split(",") for v in args.variants.split(";")
            for s in args.seeds.split(",")]

    def launch(job):
        out = subprocess.run([sys.executable, __file__, "--_worker", job[0], job[1], str(job[2])],
                             capture_output=True, text=True)
        if out.returncode != 0:
            return {"data": job[0], "variant": job[1], "seed": job[2],
                    "error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
        return json.loads(out.stdout.strip().splitlines()[-1])

    RESULTS.mkdir(parents=True, exist_ok=True)
    md = RESULTS / f"bench_small_data_{dt.datetime.now():%Y%m%d_%H%M%S}.md"
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    header = (f"# bench_small_data {dt.datetime.now():%Y-%m-%d %H:%M} (nproc {os.cpu_count()}, "
              f"{args.jobs} jobs x 1 torch thread)\n\nload before: `{load}`\n\n"
              "| data | variant | seed | spots | types | DestVI steps | RMSE | Spearman | "
              "NNLS RMSE | NNLS Spearman | beats floor (RMSE / Spearman) | thresholded RMSE / "
              "Spearman | s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(header, flush=True)
    with md.open("a") as f:
        f.write(header + "\n")
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        for r in pool.map(launch, jobs):
            if "error" in r:
                line = f"| {r['data']} | {r['variant']} | {r['seed']} | error: {r['error']} |"
            else:
                beats = (f"{'yes' if r['rmse'] < r['nnls_rmse'] else 'NO'} / "
                         f"{'yes' if r['spearman'] >= r['nnls_spearman'] else 'NO'}")
                line = (f"| {r['data']} | {r['variant']} | {r['seed']} | {r['spots']} | "
                        f"{r['types']} | {r['st_steps']} | {r['rmse']:.4f} | {r['spearman']:.3f} | "
                        f"{r['nnls_rmse']:.4f} | {r['nnls_spearman']:.3f} | {beats} | "
                        f"{r['thr_rmse']:.4f} / {r['thr_spearman']:.3f} | {r['seconds']:.0f} |")
            print(line, flush=True)
            with md.open("a") as f:
                f.write(line + "\n")
    print(f"\nsaved {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
