"""How many optimisation steps do the models need? Accuracy against known truth vs steps.

The default schedule (``destvi_core.schedule``) picks epochs from a number of optimisation steps
instead of the tutorial's fixed epochs. This script measures what that costs or gains: it trains
the reference model once per reference schedule, then DestVI under several spatial schedules,
and prints RMSE and mean per-type Spearman of the proportions against the truth (spec 5.3)
next to the NNLS floor, with trajectories (accuracy every ``--eval-every`` steps).

Schedules
---------
``--sc`` (``;``-separated): ``epochs=300`` (the tutorial) or ``steps=N`` (epochs = N / steps per
epoch, KL warm-up 4/3 of the steps as the tutorial's 400/300). ``--st``: ``epochs=2500`` (the
tutorial, warm-up 200 epochs) or ``steps=N`` (warm-up 8 % of the steps, per step, as the
tutorial's 200/2500); add ``,batch=B`` for another batch size.

Data (``--data``): ``tutorial`` (1,100 spots, 12 types, 15,000 cells, 2,000 genes),
``sim:N`` (a fresh simulation of N spots with the tutorial-sized parameters),
``tiled:N`` (tiles of the tutorial-sized simulation, ``destvi_core.simulate.tiled_simulation``).

Run (alone, under the CPU lock)::

    flock /tmp/cpu.lock python bench/bench_schedule.py --data tutorial \
        --sc "epochs=300" --st "epochs=2500;steps=8000;steps=12000" --eval-every 2000

Prints a markdown table; also appended to ``bench/results/bench_schedule_<timestamp>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def load(name: str, seed: int):
    """``(sc, st, truth)`` prepared for training."""
    import pandas as pd

    from destvi_core.data import prepare_inputs
    from destvi_core.errors import DestVIWarning
    from destvi_core.simulate import (TUTORIAL_BASE, simulate_destvi, tiled_simulation,
                                      tutorial_size_simulation)

    if name == "tutorial":
        sim = tutorial_size_simulation(seed=seed)
    elif name.startswith("sim:"):
        sim = simulate_destvi(seed=seed, **{**TUTORIAL_BASE, "n_spots": int(name[4:])})
    elif name.startswith("tiled:"):
        sim = tiled_simulation(int(name[6:]), seed=seed)
    else:
        raise SystemExit(f"unknown data {name!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DestVIWarning)
        prep = prepare_inputs(sim.sc, sim.st, labels_key="cell_type")
    truth = pd.DataFrame(sim.st.obsm["true_proportions"]).loc[prep.st.obs_names]
    return prep.sc, prep.st, truth


def parse(spec: str) -> dict:
    out = {}
    for part in spec.split(","):
        key, value = part.split("=")
        out[key.strip()] = int(value)
    return out


def schedule(spec: dict, n_obs: int, tutorial_epochs: int, warmup_ratio: float) -> dict:
    batch = spec.get("batch", 128)
    per_epoch = max(1, n_obs // batch + (1 if n_obs % batch >= 3 else 0))
    if "epochs" in spec:
        epochs = spec["epochs"]
        return dict(max_epochs=epochs, batch_size=batch,
                    n_epochs_kl_warmup=round(warmup_ratio * tutorial_epochs),
                    steps=epochs * per_epoch)
    epochs = max(1, round(spec["steps"] / per_epoch))
    steps = epochs * per_epoch
    return dict(max_epochs=epochs, batch_size=batch, n_steps_kl_warmup=round(warmup_ratio * steps),
                steps=steps)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="tutorial")
    ap.add_argument("--sc", default="epochs=300")
    ap.add_argument("--st", default="epochs=2500;steps=12000")
    ap.add_argument("--eval-every", type=int, default=2000, help="steps between evaluations")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sc-cache", default=None,
                    help="folder where trained reference weights are kept and reused "
                         "(keyed by data, reference schedule and seed)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from destvi_core.condscvi import CondSCVI
    from destvi_core.destvi import DestVI
    from destvi_core.evaluation import nnls_proportions, proportion_metrics

    load_avg = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    sc, st, truth = load(args.data, args.seed)
    floor = proportion_metrics(truth, nnls_proportions(sc, st))
    RESULTS.mkdir(parents=True, exist_ok=True)
    md = RESULTS / f"bench_schedule_{dt.datetime.now():%Y%m%d_%H%M%S}.md"
    header = (f"# bench_schedule {dt.datetime.now():%Y-%m-%d %H:%M}, data {args.data} "
              f"({st.n_obs} spots, {sc.n_obs} cells, {truth.shape[1]} types, {st.n_vars} genes), "
              f"seed {args.seed}, {args.threads} threads\n\nload before: `{load_avg}`\n\n"
              f"NNLS floor: RMSE {floor['rmse']:.4f} / Spearman {floor['spearman']:.3f}\n\n"
              "| reference | spatial | sc steps | st steps | sc s | st s | RMSE | Spearman | "
              "trajectory (steps: RMSE/Spearman) |\n|---|---|---|---|---|---|---|---|---|")
    print(header, flush=True)
    with md.open("a") as f:
        f.write(header + "\n")
    for sc_spec in args.sc.split(";"):
        sc_plan = schedule(parse(sc_spec), sc.n_obs, 300, 400 / 300)
        sc_model = CondSCVI(sc, labels_key="cell_type", seed=args.seed, device="cpu")
        cached = (Path(args.sc_cache) / f"{args.data}_{sc_spec}_{args.seed}.pt".replace(":", "-")
                  if args.sc_cache else None)
        if cached is not None and cached.is_file():
            saved = torch.load(cached, weights_only=False)
            sc_model.module.load_state_dict(saved["state"])
            sc_model.is_trained, sc_seconds = True, saved["seconds"]
        else:
            t0 = time.perf_counter()
            sc_model.train(max_epochs=sc_plan["max_epochs"], batch_size=sc_plan["batch_size"],
                           n_epochs_kl_warmup=sc_plan.get("n_epochs_kl_warmup"),
                           n_steps_kl_warmup=sc_plan.get("n_steps_kl_warmup"))
            sc_seconds = time.perf_counter() - t0
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"state": sc_model.module.state_dict(), "seconds": sc_seconds}, cached)
        for st_spec in args.st.split(";"):
            plan = schedule(parse(st_spec), st.n_obs, 2500, 200 / 2500)
            st_model = DestVI.from_rna_model(st, sc_model, seed=args.seed)
            trajectory = []
            clock = {"train": 0.0, "last": time.perf_counter(), "next": args.eval_every}

            def callback(p, st_model=st_model, trajectory=trajectory, clock=clock, plan=plan):
                if not p.end_of_epoch:
                    return
                now = time.perf_counter()
                clock["train"] += now - clock["last"]
                if p.step >= clock["next"] or p.epoch == p.n_epochs:
                    m = proportion_metrics(truth, st_model.get_proportions())
                    st_model.module.train()
                    trajectory.append((p.step, m["rmse"], m["spearman"]))
                    clock["next"] = p.step + args.eval_every
                clock["last"] = time.perf_counter()

            st_model.train(max_epochs=plan["max_epochs"], batch_size=plan["batch_size"],
                           n_epochs_kl_warmup=plan.get("n_epochs_kl_warmup"),
                           n_steps_kl_warmup=plan.get("n_steps_kl_warmup"), callback=callback)
            final = proportion_metrics(truth, st_model.get_proportions())
            traj = ", ".join(f"{s}: {r:.4f}/{sp:.3f}" for s, r, sp in trajectory)
            line = (f"| {sc_spec} | {st_spec} | {sc_plan['steps']} | {plan['steps']} | "
                    f"{sc_seconds:.0f} | {clock['train']:.0f} | {final['rmse']:.4f} | "
                    f"{final['spearman']:.3f} | {traj} |")
            print(line, flush=True)
            with md.open("a") as f:
                f.write(line + "\n")
            with (RESULTS / "bench_schedule.jsonl").open("a") as f:
                f.write(json.dumps({"data": args.data, "seed": args.seed, "sc": sc_spec,
                                    "st": st_spec, "sc_steps": sc_plan["steps"],
                                    "st_steps": plan["steps"], "sc_s": sc_seconds,
                                    "st_s": clock["train"], **final,
                                    "nnls": floor, "trajectory": trajectory,
                                    "when": dt.datetime.now().isoformat(timespec="seconds")})
                        + "\n")
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\nload after: `{load_after}`\nsaved {md}")
    with md.open("a") as f:
        f.write(f"\nload after: `{load_after}`\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
