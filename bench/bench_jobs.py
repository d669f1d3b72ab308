"""Job-layer benchmark: what running trainings as Dask jobs costs and buys.

Run alone: ``flock /tmp/cpu.lock python bench/bench_jobs.py [--parts overhead,concurrent,sections,demo]``

* ``overhead`` — one training of the demo (1,000 spots; ``--sc-epochs`` + ``--st-epochs``)
  directly in a process with 1 torch thread vs through the job layer on a warm local cluster
  (2 workers x 1 thread): wall time from submission to the model in the cache, and s/epoch.
  Target: overhead < 5 %. The cold first submission (cluster start, torch import in the
  worker) is reported apart.
* ``concurrent`` — two trainings at once: two processes started by hand (torch's default
  threads, as two lab members or two tabs would) vs two jobs on the local cluster; per-epoch
  time of each model of each run.
* ``sections`` — 4 sections of 1,000 spots with one reference: the reference, then the 4
  DestVI models one after the other in one process with 2 torch threads ("1 worker x 2
  threads") vs 2 single-thread workers through the job layer. Decides the local layout.
* ``demo`` — the app in headless Chromium on a fresh cache: time from clicking *Use the demo*
  to the first proportion map (first-look model), and to the refined model replacing it.

Prints the load average with every table; tables are appended to
``bench/results/bench_jobs_<timestamp>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))


def uptime() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _per_epoch(records: list[dict], model: str) -> float:
    """s/epoch of ``model`` from progress reports (last report: elapsed / epoch)."""
    last = [r for r in records if r["model"] == model][-1]
    return last["elapsed_s"] / last["epoch"]


# ------------------------------------------------------------------ data
def demo_pair():
    from destvi_core.cache import prepared_demo

    sc, st, *_ = prepared_demo(0, root=tempfile.mkdtemp(prefix="bench-demo-"))
    return sc, st


def four_sections():
    """One reference and 4 sections of 1,000 spots (a 4,000-spot simulation cut in four)."""
    import numpy as np

    from destvi_core.sections import prepare_sections
    from destvi_core.simulate import simulate_destvi

    sim = simulate_destvi(n_spots=4000, n_cells=4000, n_genes=2000, n_types=8, n_latent=2,
                          cells_per_spot=10, seed=1)
    parts = np.array_split(np.arange(sim.st.n_obs), 4)
    sections = {f"S{i}": sim.st[idx].copy() for i, idx in enumerate(parts)}
    for adata in sections.values():
        for key in [k for k in adata.obsm if k.startswith("true_")]:
            del adata.obsm[key]
    return prepare_sections(sim.sc, sections, labels_key="cell_type")


# ------------------------------------------------------------------ a training in a process
def _direct_main(args) -> None:
    """Child process: train one pair with ``--threads`` torch threads; print JSON timings."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from destvi_core.pipeline import preset, train_models

    sc, st = demo_pair()
    records = []
    params = preset("quick", sc_epochs=args.sc_epochs, st_epochs=args.st_epochs,
                    seed=args.seed, device="cpu")
    start = time.perf_counter()
    train_models(sc, st, "cell_type", params,
                 callback=lambda p: records.append({"model": p.model, "epoch": p.epoch,
                                                    "elapsed_s": p.elapsed_s}))
    total = time.perf_counter() - start
    print(json.dumps({"total_s": total, "threads": torch.get_num_threads(),
                      "sc_s_per_epoch": _per_epoch(records, "condscvi"),
                      "st_s_per_epoch": _per_epoch(records, "destvi")}))


def direct_process(sc_epochs: int, st_epochs: int, threads: int | None, seed: int = 0):
    cmd = [sys.executable, __file__, "_direct", "--sc-epochs", str(sc_epochs),
           "--st-epochs", str(st_epochs), "--seed", str(seed)]
    if threads:
        cmd += ["--threads", str(threads)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))


def result_of(proc) -> dict:
    out, _ = proc.communicate()
    return json.loads(out.strip().splitlines()[-1])


def manager(plan):
    from destvi_core.cache import ModelCache
    from destvi_core.jobs import JobManager

    return JobManager(None, cache=ModelCache(tempfile.mkdtemp(prefix="bench-cache-")), plan=plan)


def job_timing(job, start: float) -> dict:
    records = job.history
    out = {"wall_s": job._ended - start, "st_s_per_epoch": _per_epoch(records, "destvi")}
    if job.reference is not None and job.reference.history:
        out["sc_s_per_epoch"] = _per_epoch(job.reference.history, "condscvi")
    return out


# ------------------------------------------------------------------ parts
def part_overhead(args, out: list[str]) -> None:
    from destvi_core.cluster import WorkerPlan
    from destvi_core.pipeline import preset

    sc, st = demo_pair()
    out.append(f"\n### One training: direct vs job layer ({uptime()})\n")
    out.append(f"Demo, {args.sc_epochs} + {args.st_epochs} epochs, 1 torch thread.\n")
    out.append("| run | wall (s) | CondSCVI s/epoch | DestVI s/epoch |")
    out.append("|---|---|---|---|")
    mgr = manager(WorkerPlan(2, 1, (None, None)))
    try:
        t0 = time.perf_counter()  # cold: starts the cluster, the worker imports torch
        warm = mgr.submit_pair(sc, st, "cell_type", preset("quick", sc_epochs=1, st_epochs=1,
                                                            seed=99, device="cpu"))
        warm.wait()
        cold = time.perf_counter() - t0
        out.append(f"| cold start: cluster + 1 + 1 epochs | {cold:.1f} | | |")
        rows = []
        for rep in range(args.repeats):
            direct = result_of(direct_process(args.sc_epochs, args.st_epochs, 1, seed=rep))
            params = preset("quick", sc_epochs=args.sc_epochs, st_epochs=args.st_epochs,
                            seed=rep, device="cpu")
            start = time.time()
            job = mgr.submit_pair(sc, st, "cell_type", params)
            assert job.wait() == "done", job.message
            timing = job_timing(job, start)
            rows.append((direct["total_s"], timing["wall_s"]))
            out.append(f"| direct (process, repeat {rep + 1}) | {direct['total_s']:.1f} | "
                       f"{direct['sc_s_per_epoch']:.3f} | {direct['st_s_per_epoch']:.3f} |")
            out.append(f"| job layer (warm cluster, repeat {rep + 1}) | {timing['wall_s']:.1f} | "
                       f"{timing.get('sc_s_per_epoch', float('nan')):.3f} | "
                       f"{timing['st_s_per_epoch']:.3f} |")
        direct_total = sum(r[0] for r in rows)
        jobs_total = sum(r[1] for r in rows)
        out.append(f"\nOverhead of the job layer: {100 * (jobs_total / direct_total - 1):+.1f} % "
                   f"(submission to model in the cache vs training alone; {uptime()})")
    finally:
        mgr.close()


def part_concurrent(args, out: list[str]) -> None:
    from destvi_core.cluster import WorkerPlan
    from destvi_core.pipeline import preset

    sc, st = demo_pair()
    sc_ep, st_ep = args.sc_epochs // 2 or 1, args.st_epochs // 2 or 1
    out.append(f"\n### Two trainings at once ({uptime()})\n")
    out.append(f"Demo, {sc_ep} + {st_ep} epochs each.\n")
    out.append("| run | training | wall (s) | CondSCVI s/epoch | DestVI s/epoch |")
    out.append("|---|---|---|---|---|")
    t0 = time.perf_counter()
    procs = [direct_process(sc_ep, st_ep, None, seed=s) for s in (0, 1)]
    res = [result_of(p) for p in procs]
    wall = time.perf_counter() - t0
    for i, r in enumerate(res):
        out.append(f"| two processes by hand ({r['threads']} threads each) | {i + 1} | "
                   f"{wall:.1f} | {r['sc_s_per_epoch']:.3f} | {r['st_s_per_epoch']:.3f} |")
    mgr = manager(WorkerPlan(2, 1, (None, None)))
    try:
        mgr.submit_pair(sc, st, "cell_type", preset("quick", sc_epochs=1, st_epochs=1, seed=99,
                                                     device="cpu")).wait()  # warm up
        start = time.time()
        jobs = [mgr.submit_pair(sc, st, "cell_type",
                                preset("quick", sc_epochs=sc_ep, st_epochs=st_ep, seed=s,
                                       device="cpu")) for s in (0, 1)]
        for i, job in enumerate(jobs):
            assert job.wait() == "done", job.message
        for i, job in enumerate(jobs):
            t = job_timing(job, start)
            out.append(f"| two jobs, 2 workers x 1 thread | {i + 1} | {t['wall_s']:.1f} | "
                       f"{t.get('sc_s_per_epoch', float('nan')):.3f} | "
                       f"{t['st_s_per_epoch']:.3f} |")
    finally:
        mgr.close()
    out.append(f"\n({uptime()})")


def part_sections(args, out: list[str]) -> None:
    import torch

    from destvi_core.cluster import WorkerPlan
    from destvi_core.pipeline import preset, train_reference, train_spatial

    prepared = four_sections()
    params = preset("quick", sc_epochs=args.sc_epochs, st_epochs=args.st_epochs, device="cpu")
    out.append(f"\n### 4 sections x 1,000 spots, one reference ({uptime()})\n")
    out.append(f"{args.sc_epochs} reference + 4 x {args.st_epochs} spatial epochs.\n")
    out.append("| layout | total wall (s) | reference (s) | sections (s) |")
    out.append("|---|---|---|---|")
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    ref = train_reference(prepared.sc, "cell_type", params)
    t_ref = time.perf_counter() - t0
    for st in prepared.sections.values():
        train_spatial(st, ref, params)
    total = time.perf_counter() - t0
    out.append(f"| sequential, one process, 2 torch threads | {total:.1f} | {t_ref:.1f} | "
               f"{total - t_ref:.1f} |")
    for plan, name in ((WorkerPlan(2, 1, (None, None)), "2 workers x 1 thread (jobs)"),
                       (WorkerPlan(1, 2, (None,)), "1 worker x 2 threads (jobs)")):
        mgr = manager(plan)
        try:
            mgr.submit_pair(prepared.sc, prepared.sections["S0"], "cell_type",
                            preset("quick", sc_epochs=1, st_epochs=1, seed=99,
                                   device="cpu")).wait()  # warm up the workers
            start = time.time()
            jobs = mgr.submit_sections(prepared.sc, prepared.sections, "cell_type", params)
            for job in jobs:
                assert job.wait() == "done", job.message
            ref_job = jobs[0].reference
            end = max(j._ended for j in jobs)
            out.append(f"| {name} | {end - start:.1f} | {ref_job._ended - start:.1f} | "
                       f"{end - ref_job._ended:.1f} |")
        finally:
            mgr.close()
    out.append(f"\n({uptime()})")


def part_demo(args, out: list[str]) -> None:
    from bench_app import ARGS, CHROMIUM, MAP, free_port
    from playwright.sync_api import sync_playwright

    out.append(f"\n### Demo: *Use the demo* to the first map, fresh cache ({uptime()})\n")
    out.append("| run | first map (s) | refined model (s) |")
    out.append("|---|---|---|")
    for run in range(args.demo_runs):
        cache = tempfile.mkdtemp(prefix="bench-demo-cache-")
        port = free_port()
        env = dict(os.environ, DESTVI_STUDIO_CACHE=cache)
        env.pop("DESTVI_STUDIO_FAST", None)
        env.pop("DESTVI_STUDIO_SCHEDULER", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
                page = browser.new_page(viewport={"width": 1500, "height": 1000})
                page.set_default_timeout(600_000)
                page.goto(url + "/data")
                page.get_by_role("button", name="▶ Use the demo").wait_for()
                t0 = time.perf_counter()
                page.get_by_role("button", name="▶ Use the demo").click()
                page.get_by_text("Loaded: built-in demo").wait_for()
                page.get_by_test_id("stSidebarNav").get_by_text("Proportion maps",
                                                                exact=True).click()
                page.locator(MAP).first.wait_for(state="visible")
                first = time.perf_counter() - t0
                refined = _wait_refined(page, t0)
                browser.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        out.append(f"| {run + 1} | {first:.1f} | {refined:.1f} |")
    out.append(f"\n({uptime()})")


def wait_healthy(url: str, timeout: float = 60) -> None:
    import urllib.request

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"streamlit did not start at {url}")


def _wait_refined(page, t0: float) -> float:
    """Seconds until the sidebar says the model is no longer the first look (the quick preset's
    model is in place): the Jobs link disappears when nothing runs or waits."""
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stSidebar"]').innerText.includes('Jobs:')""",
        timeout=1_800_000, polling=1000)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    direct = sub.add_parser("_direct")
    for p in (parser, direct):
        p.add_argument("--sc-epochs", type=int, default=20)
        p.add_argument("--st-epochs", type=int, default=100)
    direct.add_argument("--threads", type=int, default=None)
    direct.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", default="overhead,concurrent,sections,demo")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--demo-runs", type=int, default=2)
    args = parser.parse_args()
    if args.mode == "_direct":
        _direct_main(args)
        return
    sys.path.insert(0, str(ROOT / "bench"))
    import torch

    out = [f"## bench_jobs {dt.datetime.now():%Y-%m-%d %H:%M} — {platform.node()}, "
           f"{os.cpu_count()} CPUs, torch {torch.__version__}, Python {platform.python_version()}"]
    parts = {"overhead": part_overhead, "concurrent": part_concurrent,
             "sections": part_sections, "demo": part_demo}
    for name in args.parts.split(","):
        parts[name.strip()](args, out)
        print("\n".join(out), flush=True)
        print("-" * 60, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench_jobs_{dt.datetime.now():%Y%m%d_%H%M%S}.md"
    path.write_text("\n".join(out) + "\n")
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
