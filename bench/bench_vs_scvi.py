"""Whole-process speed at equal epochs: our CLI vs scvi-tools 1.3.3, side by side.

Writes the tutorial-sized simulation (15,000 cells x 2,000 genes, 12 types, 1,100 spots) once,
then alternates ``--repeats`` times: ``python -m destvi_core train`` with the given epochs
(exact epochs, no cache, no HVG: the genes are already the 2,000) and
``bench/scvi_tools_runner.py`` in its own environment with the same epochs. Every run is a whole
process timed from launch to exit (imports, data loading, model building, VampPrior, training,
saving); the medians are compared. The per-epoch times each side reports are printed too.

Needs scvi-tools in a separate environment (``bench/scvi_tools_runner.py`` explains how), e.g.::

    flock /tmp/cpu.lock python bench/bench_vs_scvi.py --scvi-python /tmp/scvi-venv/bin/python \
        --sc-epochs 20 --st-epochs 150 --repeats 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scvi-python", required=True)
    ap.add_argument("--sc-epochs", type=int, default=20)
    ap.add_argument("--st-epochs", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from destvi_core.simulate import tutorial_size_simulation

    RESULTS.mkdir(parents=True, exist_ok=True)
    md = RESULTS / f"bench_vs_scvi_{dt.datetime.now():%Y%m%d_%H%M%S}.md"

    def emit(text: str) -> None:
        print(text, flush=True)
        with md.open("a") as f:
            f.write(text + "\n")

    emit(f"# bench_vs_scvi {dt.datetime.now():%Y-%m-%d %H:%M}: {args.sc_epochs} + "
         f"{args.st_epochs} epochs, {args.threads} threads\n\nload before: `{_uptime()}`\n")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="vs_scvi_") as tmp:
        tmp = Path(tmp)
        sim = tutorial_size_simulation(seed=0)
        for key in [k for k in sim.st.obsm if k not in ("true_proportions", "spatial")]:
            del sim.st.obsm[key]
        sim.st.uns.clear()
        sim.sc.obsm.clear()
        sim.sc.write_h5ad(tmp / "sc.h5ad")
        sim.st.write_h5ad(tmp / "st.h5ad")
        ours_cmd = [sys.executable, "-m", "destvi_core", "train", "--sc", str(tmp / "sc.h5ad"),
                    "--st", str(tmp / "st.h5ad"), "--label-key", "cell_type", "--no-hvg",
                    "--sc-epochs", str(args.sc_epochs), "--st-epochs", str(args.st_epochs),
                    "--no-cache", "--device", "cpu", "--out", str(tmp / "model")]
        scvi_cmd = [args.scvi_python, str(ROOT / "bench" / "scvi_tools_runner.py"),
                    "--sc", str(tmp / "sc.h5ad"), "--st", str(tmp / "st.h5ad"),
                    "--sc-epochs", str(args.sc_epochs), "--st-epochs", str(args.st_epochs),
                    "--eval-every", str(args.st_epochs), "--threads", str(args.threads)]
        walls: dict[str, list[float]] = {"ours": [], "scvi-tools": []}
        reported = {}
        for rep in range(args.repeats):
            for name, cmd in (("ours", ours_cmd), ("scvi-tools", scvi_cmd)):
                start = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
                wall = time.perf_counter() - start
                if proc.returncode != 0:
                    emit(f"{name} failed:\n```\n{(proc.stderr or proc.stdout)[-3000:]}\n```")
                    return 1
                walls[name].append(wall)
                if name == "scvi-tools":
                    line = next(x for x in proc.stdout.splitlines() if x.startswith("SCVIJSON "))
                    sv = json.loads(line[len("SCVIJSON "):])
                    reported[name] = (f"CondSCVI {sv['sc_epoch_s_median']:.3f} s/epoch, DestVI "
                                      f"{sv['st_epoch_s_median']:.3f} s/epoch, final RMSE "
                                      f"{sv['final']['rmse']:.4f} / Spearman "
                                      f"{sv['final']['spearman']:.3f}")
                else:
                    meta = json.loads((tmp / "model" / "metadata.json").read_text())
                    reported[name] = (f"{len(meta['condscvi']['history'])} + "
                                      f"{len(meta['destvi']['history'])} epochs trained")
                emit(f"- run {rep + 1}, {name}: {wall:.1f} s (load `{_uptime()}`)")
        ours, theirs = statistics.median(walls["ours"]), statistics.median(walls["scvi-tools"])
        emit(f"\n| | scvi-tools 1.3.3 | DestVI Studio CLI | speed-up |\n|---|---|---|---|\n"
             f"| whole process, {args.sc_epochs} + {args.st_epochs} epochs (median of "
             f"{args.repeats}) | {theirs:.1f} s | {ours:.1f} s | **{theirs / ours:.2f}x** |\n")
        for name, text in reported.items():
            emit(f"- {name}: {text}")
    emit(f"\nload after: `{_uptime()}`\nsaved {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
