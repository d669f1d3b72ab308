"""Visium HD scale: 1,100 to 100,000 (optionally 600,000) spots with known truth.

Every size is a tiled copy of one tutorial-sized simulation (``destvi_core.simulate.
tiled_simulation``: 15,000 reference cells, 12 types, 2,000 genes; tiles are exact copies, so
the truth and the NNLS floor are those of the 1,100-spot base slide). The reference model is
trained once (it does not depend on the slide) and loaded by every size's worker process.

Per size (one process each, so peak RSS is that size's), the default automatic schedule:
DestVI steps and time per step, total training time, the plan's estimate (measured probe),
inference (proportions, gamma) and analysis times (automatic thresholds for all types, gamma
sPCA of the most abundant type, DE of that type between the two halves of the slide, the export
bundle), model-folder and export sizes, peak RSS, and RMSE / mean per-type Spearman against the
truth next to the NNLS floor.

``--cli N`` also runs the command line at its defaults on an N-spot slide written as a
Space Ranger Visium HD folder (``train`` then ``export``), the whole processes timed and their
peak RSS read from the kernel (``os.wait4``).

Run alone, under the CPU lock::

    flock /tmp/cpu.lock python bench/bench_scale.py --sizes 1100,11000,100000 --cli 100000

Prints markdown tables; also written to ``bench/results/bench_scale_<timestamp>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _dir_mb(path: Path) -> float:
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


# --------------------------------------------------------------------------------- data
def write_data(work: Path, sizes: list[int], seed: int) -> dict:
    """Simulate the base slide once; write sc.h5ad, one st_<n>.h5ad per size, truth of the base."""
    import pandas as pd

    from destvi_core.data import prepare_inputs
    from destvi_core.evaluation import nnls_proportions, proportion_metrics
    from destvi_core.simulate import TUTORIAL_BASE, simulate_destvi, tile_spatial

    base = simulate_destvi(seed=seed, **TUTORIAL_BASE)
    base.sc.write_h5ad(work / "sc.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare_inputs(base.sc, base.st, labels_key="cell_type")
    truth = pd.DataFrame(base.st.obsm["true_proportions"]).loc[prep.st.obs_names]
    floor = proportion_metrics(truth, nnls_proportions(prep.sc, prep.st))
    n_base = base.st.n_obs
    for n in sizes:
        path = work / f"st_{n}.h5ad"
        if not path.exists():
            tiled = tile_spatial(base.st, -(-n // n_base), n_spots=n)
            for key in [k for k in tiled.obsm if k.startswith("true_gamma")]:
                del tiled.obsm[key]  # the truth needed here is the proportions
            tiled.write_h5ad(path)
    return {"n_base": n_base, "nnls": floor, "n_types": truth.shape[1]}


def train_reference(work: Path, seed: int, threads: int) -> dict:
    """Train CondSCVI once with the default schedule; save its weights for the workers."""
    import torch

    torch.set_num_threads(threads)
    _apply_quick()
    from destvi_core.condscvi import CondSCVI
    from destvi_core.data import prepare_inputs, read_h5ad_safe
    from destvi_core.pipeline import TrainingParams
    from destvi_core.schedule import reference_schedule

    sc = read_h5ad_safe(work / "sc.h5ad")
    st = read_h5ad_safe(work / f"st_{_SMALLEST}.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare_inputs(sc, st, labels_key="cell_type")
    params = TrainingParams(seed=seed, device="cpu")
    plan = reference_schedule(prep.sc.n_obs, params)
    model = CondSCVI(prep.sc, "cell_type", seed=seed, device="cpu")
    _, seconds = _timed(model.train, **plan.train_kwargs())
    torch.save(model.module.state_dict(), work / "condscvi.pt")
    return {"sc_steps": plan.steps, "sc_epochs": plan.epochs, "sc_seconds": seconds,
            "sc_s_per_step": seconds / plan.steps, "n_cells": prep.sc.n_obs}


_SMALLEST = 0
QUICK = {"SC_MAX_STEPS": 200, "ST_MIN_STEPS": 100, "ST_MAX_STEPS": 200}
"""``--quick`` (a smoke run of the script): tiny step bounds instead of the defaults."""


def _apply_quick() -> None:
    if os.environ.get("BENCH_SCALE_QUICK"):
        from destvi_core import schedule

        for name, value in QUICK.items():
            setattr(schedule, name, value)


# --------------------------------------------------------------------------------- worker
def worker(work: Path, n: int, seed: int, threads: int) -> dict:
    """One size: prepare, plan, train DestVI, infer, analyse, export (this process only)."""
    import numpy as np
    import pandas as pd
    import torch

    torch.set_num_threads(threads)
    _apply_quick()
    from destvi_core import analysis, persistence
    from destvi_core.condscvi import CondSCVI
    from destvi_core.data import prepare_inputs
    from destvi_core.destvi import DestVI
    from destvi_core.evaluation import proportion_metrics
    from destvi_core.pipeline import TrainingParams
    from destvi_core.readers import read_counts_file, read_spatial
    from destvi_core.planning import plan_training
    from destvi_core.schedule import spatial_model_schedule

    out: dict = {"spots": n}
    t0 = time.perf_counter()
    sc, st = read_counts_file(work / "sc.h5ad"), read_spatial(work / f"st_{n}.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare_inputs(sc, st, labels_key="cell_type")
    del sc, st
    out["read_prepare_s"] = time.perf_counter() - t0
    truth = pd.DataFrame(prep.st.obsm["true_proportions"]).loc[prep.st.obs_names]
    params = TrainingParams(seed=seed, device="cpu")
    plan, out["plan_s"] = _timed(plan_training, prep.sc.n_obs, prep.st.n_obs, prep.st.n_vars,
                                 truth.shape[1], params, "cpu", sc_counts=prep.sc.X,
                                 st_counts=prep.st.X)
    out["plan"] = plan.describe()
    out["estimate_st_s"] = plan.spatial.estimate_s
    sc_model = CondSCVI(prep.sc, "cell_type", seed=seed, device="cpu", init="reference")
    sc_model.module.load_state_dict(torch.load(work / "condscvi.pt", weights_only=True))
    sc_model.is_trained = True
    st_model, out["prior_s"] = _timed(DestVI.from_rna_model, prep.st, sc_model, seed=seed)
    schedule = spatial_model_schedule(prep.st.n_obs, params)
    progress = []
    _, out["st_train_s"] = _timed(st_model.train, callback=progress.append,
                                  **schedule.train_kwargs())
    out.update(st_steps=schedule.steps, st_epochs=schedule.epochs,
               st_s_per_step=out["st_train_s"] / schedule.steps,
               mid_epoch_updates=sum(not p.end_of_epoch for p in progress))
    props, out["proportions_s"] = _timed(st_model.get_proportions)
    gamma, out["gamma_s"] = _timed(st_model.get_gamma, return_numpy=True)
    acc = proportion_metrics(truth, props)
    out.update(rmse=acc["rmse"], spearman=acc["spearman"])
    coords = prep.st.obsm["spatial"]
    thr, out["thresholds_s"] = _timed(analysis.automatic_thresholds, props, coords,
                                      kind="secondary")
    ct = str(props.mean().idxmax())
    expl, out["spca_s"] = _timed(analysis.explore_gamma, st_model, sc_model, ct,
                                 thr.thresholds[ct], coords=coords, proportions=props,
                                 gamma=gamma)
    left = coords[:, 0] < np.median(coords[:, 0])
    de, out["de_s"] = _timed(analysis.de_genes, st_model, ct, left,
                             threshold=thr.thresholds[ct], proportions=props)
    out["de_sampled"] = [de.n_sampled1, de.n_sampled2]
    out["de_groups"] = [de.n_group1, de.n_group2]
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        gamma_frames = st_model.get_gamma()
        _, out["export_s"] = _timed(
            analysis.export_bundle, Path(tmp) / "bundle", prep.st, props,
            thresholds=thr.thresholds, gamma=gamma_frames,
            spca={ct: (expl.spot_names, expl.pca.spot_projection, expl.spot_colors)},
            de_results={f"{ct} left vs right": de.table}, parameters=params.to_dict())
        out["export_mb"] = _dir_mb(Path(tmp) / "bundle")
        _, out["save_model_s"] = _timed(persistence.save_models, Path(tmp) / "model", sc_model,
                                        st_model)
        out["model_mb"] = _dir_mb(Path(tmp) / "model")
    out["peak_rss_gb"] = _peak_rss_gb()
    return out


# --------------------------------------------------------------------------------- CLI run
def _run_timed(cmd: list[str], env: dict, log: Path) -> tuple[float, float, int]:
    """Wall time (s), peak RSS (GiB) and exit code of one child process."""
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 2**20, proc.returncode


def cli_run(work: Path, n: int, threads: int) -> dict:
    """``train`` + ``export`` at the defaults on an n-spot slide given as a Visium HD folder."""
    import anndata as ad
    import numpy as np
    import pandas as pd

    from destvi_core.evaluation import proportion_metrics
    from destvi_core.simulate import write_visium_hd

    st = ad.read_h5ad(work / f"st_{n}.h5ad")
    hd = work / f"hd_{n}"
    if not (hd / "binned_outputs").is_dir():
        write_visium_hd(st, hd, bin_size=16)
    truth = pd.DataFrame(st.obsm["true_proportions"])
    del st
    env = {**os.environ, "DESTVI_STUDIO_CACHE": str(work / "cache"),
           "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    model, result = work / f"cli_model_{n}", work / f"cli_result_{n}.h5ad"
    train = [sys.executable, "-m", "destvi_core", "train", "--sc", str(work / "sc.h5ad"),
             "--st", str(hd), "--bin-size", "16", "--label-key", "cell_type",
             "--out", str(model), "--device", "cpu"]
    if os.environ.get("BENCH_SCALE_QUICK"):
        train += ["--sc-max-steps", str(QUICK["SC_MAX_STEPS"]), "--st-min-steps",
                  str(QUICK["ST_MIN_STEPS"]), "--st-max-steps", str(QUICK["ST_MAX_STEPS"])]
    export = [sys.executable, "-m", "destvi_core", "export", "--model", str(model),
              "--st", str(hd), "--out", str(result), "--device", "cpu"]
    out = {"spots": n, "train_cmd": "python " + " ".join(train[1:]),
           "export_cmd": "python " + " ".join(export[1:])}
    out["train_s"], out["train_rss_gb"], code = _run_timed(train, env, work / f"cli_train_{n}.log")
    if code != 0:
        return {**out, "error": (work / f"cli_train_{n}.log").read_text()[-2000:]}
    out["export_s"], out["export_rss_gb"], code = _run_timed(export, env,
                                                             work / f"cli_export_{n}.log")
    if code != 0:
        return {**out, "error": (work / f"cli_export_{n}.log").read_text()[-2000:]}
    res = ad.read_h5ad(result)
    props = pd.DataFrame(np.asarray(res.obsm["proportions"]), columns=truth.columns,
                         index=truth.index)
    acc = proportion_metrics(truth, props)
    out.update(rmse=acc["rmse"], spearman=acc["spearman"], model_mb=_dir_mb(model),
               export_mb=_dir_mb(result))
    log = (work / f"cli_train_{n}.log").read_text().splitlines()
    out["schedule_line"] = next((x for x in log if x.startswith("Schedule")), "")
    return out


# --------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1100,11000,100000")
    ap.add_argument("--cli", type=int, default=0, help="also run the CLI on this many spots")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="folder for data and models (default: temp)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: tiny step bounds (numbers are not meaningful)")
    ap.add_argument("--_worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    global _SMALLEST
    if args._worker:
        work, n = Path(args._worker[0]), int(args._worker[1])
        print("WORKERJSON " + json.dumps(worker(work, n, args.seed, args.threads)))
        return 0

    if args.quick:
        os.environ["BENCH_SCALE_QUICK"] = "1"
    sizes = [int(s) for s in args.sizes.split(",") if s]
    _SMALLEST = min(sizes + ([args.cli] if args.cli else []))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    md = RESULTS / f"bench_scale_{dt.datetime.now():%Y%m%d_%H%M%S}.md"

    def emit(text: str) -> None:
        print(text, flush=True)
        with md.open("a") as f:
            f.write(text + "\n")

    import torch

    emit(f"# bench_scale {dt.datetime.now():%Y-%m-%d %H:%M}\n\nmachine: {platform.processor() or platform.machine()}, "
         f"{os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads, "
         f"Python {platform.python_version()}, GPU: "
         f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}\n\n"
         f"load before: `{_uptime()}`\n")
    info = write_data(work, sorted(set(sizes + ([args.cli] if args.cli else []))), args.seed)
    floor = info["nnls"]
    emit(f"base slide: {info['n_base']} spots, {info['n_types']} types (tiles are exact copies); "
         f"NNLS floor RMSE {floor['rmse']:.4f} / Spearman {floor['spearman']:.3f}\n")
    ref = train_reference(work, args.seed, args.threads)
    emit(f"reference (trained once, default schedule): {ref['n_cells']} cells, "
         f"{ref['sc_steps']:,} steps ({ref['sc_epochs']} epochs) in {ref['sc_seconds']:.0f} s = "
         f"{1e3 * ref['sc_s_per_step']:.1f} ms/step\n")
    emit("| spots | DestVI steps (epochs) | ms/step | DestVI train s (estimate) | peak RSS GB | "
         "proportions s | gamma s | thresholds s | sPCA s | DE s (spots sampled) | export s "
         "(MB) | model MB | RMSE | Spearman |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for n in sizes:
        proc = subprocess.run([sys.executable, __file__, "--_worker", str(work), str(n),
                               "--seed", str(args.seed), "--threads", str(args.threads)],
                              capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("WORKERJSON ")), None)
        if line is None:
            emit(f"| {n:,} | error: {proc.stderr.strip().splitlines()[-1] if proc.stderr else '?'} |")
            continue
        r = json.loads(line[len("WORKERJSON "):])
        rows.append(r)
        emit(f"| {n:,} | {r['st_steps']:,} ({r['st_epochs']}) | {1e3 * r['st_s_per_step']:.1f} | "
             f"{r['st_train_s']:.0f} ({r['estimate_st_s']:.0f}) | {r['peak_rss_gb']:.2f} | "
             f"{r['proportions_s']:.2f} | {r['gamma_s']:.2f} | {r['thresholds_s']:.2f} | "
             f"{r['spca_s']:.2f} | {r['de_s']:.2f} ({r['de_sampled'][0]:,}+{r['de_sampled'][1]:,}"
             f" of {r['de_groups'][0]:,}+{r['de_groups'][1]:,}) | {r['export_s']:.2f} "
             f"({r['export_mb']:.0f}) | {r['model_mb']:.1f} | {r['rmse']:.4f} | "
             f"{r['spearman']:.3f} |")
    with (RESULTS / "bench_scale.jsonl").open("a") as f:
        for r in rows:
            f.write(json.dumps({**r, "reference": ref, "nnls": floor,
                                "when": dt.datetime.now().isoformat(timespec="seconds")}) + "\n")
    if args.cli:
        emit(f"\nload before the CLI run: `{_uptime()}`\n")
        r = cli_run(work, args.cli, args.threads)
        if "error" in r:
            emit(f"CLI run failed:\n```\n{r['error']}\n```")
        else:
            emit(f"CLI at its defaults, {args.cli:,} spots (Visium HD folder, 16 um bins):\n\n"
                 f"- `{r['train_cmd']}`\n- `{r['export_cmd']}`\n"
                 f"- {r['schedule_line']}\n"
                 f"- train: **{r['train_s'] / 60:.1f} min**, peak RSS **{r['train_rss_gb']:.2f} GB**"
                 f"; export: {r['export_s']:.0f} s, peak RSS {r['export_rss_gb']:.2f} GB, "
                 f"{r['export_mb']:.0f} MB; model folder {r['model_mb']:.1f} MB\n"
                 f"- accuracy: RMSE {r['rmse']:.4f} / Spearman {r['spearman']:.3f} "
                 f"(NNLS floor {floor['rmse']:.4f} / {floor['spearman']:.3f})\n")
        with (RESULTS / "bench_scale_cli.jsonl").open("a") as f:
            f.write(json.dumps({**r, "nnls": floor,
                                "when": dt.datetime.now().isoformat(timespec="seconds")}) + "\n")
    emit(f"\nload after: `{_uptime()}`\nwork folder: {work}\nsaved {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
