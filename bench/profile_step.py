"""Where the time of one optimisation step goes (torch.profiler), for both models.

Profiles ``--steps`` training steps of CondSCVI (128 cells x 2,000 genes, 12 types) and DestVI
(128 spots, 12 types) on the tutorial-sized simulation, exactly as the training loop runs them
(sparse batches densified per step, loss, backward, fused Adam), and groups the operators:
matrix products, the negative-binomial lgamma/digamma terms, softplus, dropout masks, building
the batch (gather/scatter of the CSR rows), the optimiser, and the rest. The matrix products
are the floor any implementation of these networks pays.

Run alone::

    flock /tmp/cpu.lock python bench/profile_step.py
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GROUPS = {
    "matrix products (mm, addmm, bmm, linear)": ("aten::mm", "aten::addmm", "aten::bmm",
                                                 "aten::addmv", "aten::addmv_", "aten::mv",
                                                 "aten::linear"),
    "NB lgamma / digamma": ("aten::lgamma", "aten::digamma"),
    "softplus (+ backward)": ("aten::softplus", "aten::softplus_backward"),
    "dropout masks": ("aten::random_", "aten::bernoulli_", "aten::bitwise_and", "aten::ge"),
    "batch building (CSR gather / scatter, index)": (
        "aten::repeat_interleave", "aten::index_put_", "aten::_index_put_impl_", "aten::index",
        "aten::index_select", "aten::index_add", "aten::index_add_", "aten::nonzero",
        "aten::cumsum", "aten::zeros", "aten::arange"),
    "optimiser (fused Adam, zero_grad)": ("aten::_fused_adam_", "Optimizer.step#Adam.step",
                                          "Optimizer.zero_grad#Adam.zero_grad"),
    "layer norm (+ backward)": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128, help="minibatch size")
    args = ap.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(args.threads)
    from destvi_core.condscvi import CondSCVIModule
    from destvi_core.data import prepare_inputs
    from destvi_core.destvi import DestVIModule
    from destvi_core.simulate import tutorial_size_simulation
    from destvi_core.tensors import SparseCounts
    from destvi_core.training import take_batch

    print(f"load before: `{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}`")
    sim = tutorial_size_simulation()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare_inputs(sim.sc, sim.st, hvg=False)
    n_types = len(sim.cell_types)
    torch.manual_seed(0)
    sc_module = CondSCVIModule(prep.sc.n_vars, n_types)
    sc_data = {"x": SparseCounts(prep.sc.X), "y": torch.as_tensor(
        prep.sc.obs["cell_type"].cat.codes.to_numpy(), dtype=torch.long)}
    st_module = DestVIModule(sc_module, prep.st.n_obs, 5, 128, None)
    st_data = {"x": SparseCounts(prep.st.X), "ind": torch.arange(prep.st.n_obs)}
    density = {"condscvi": prep.sc.X.nnz / (prep.sc.n_obs * prep.sc.n_vars),
               "destvi": prep.st.X.nnz / (prep.st.n_obs * prep.st.n_vars)}

    for name, module, data in (("condscvi", sc_module, sc_data), ("destvi", st_module, st_data)):
        module.train()
        params = [p for p in module.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=1e-3, eps=0.01, weight_decay=1e-6, fused=True)
        n = len(data["x"])
        gen = torch.Generator().manual_seed(0)

        def step():
            idx = torch.randperm(n, generator=gen)[:args.batch]
            loss, _ = module.loss(take_batch(data, idx), 0.5, n)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(10):
            step()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        per_step = (time.perf_counter() - start) / args.steps
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                step()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        grouped = {g: 0.0 for g in GROUPS}
        for e in events:
            for g, names in GROUPS.items():
                if e.key in names:
                    grouped[g] += e.self_cpu_time_total
                    break
        other = total - sum(grouped.values())
        print(f"\n{name}: {per_step * 1e3:.1f} ms per step (batch {args.batch}, {prep.sc.n_vars} genes, "
              f"{n_types} types, counts density {density[name]:.2f}; profiled "
              f"{total / 1e3 / args.steps:.1f} ms/step incl. profiler overhead)\n")
        print("| share of the step | % | ms/step |\n|---|---|---|")
        for g, v in sorted(grouped.items(), key=lambda kv: -kv[1]):
            print(f"| {g} | {100 * v / total:.0f} | {v / 1e3 / args.steps:.2f} |")
        print(f"| everything else (elementwise ops, autograd bookkeeping) | "
              f"{100 * other / total:.0f} | {other / 1e3 / args.steps:.2f} |")
        top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]
        print("\ntop operators: " + ", ".join(
            f"{e.key} {100 * e.self_cpu_time_total / total:.0f}%" for e in top))
    print(f"\nload after: `{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
