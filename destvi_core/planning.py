"""What a training will cost on this machine, measured before it starts.

:func:`plan_training` returns the :class:`~destvi_core.schedule.TrainingPlan` of both models
(steps and epochs from :mod:`destvi_core.schedule`) with a time estimate from a short probe: a
few optimisation steps of both networks, untrained, at their real sizes on the chosen device.
It sits above the models (it builds them), the schedule below them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .schedule import TrainingPlan, reference_schedule, spatial_model_schedule

if TYPE_CHECKING:
    from .pipeline import TrainingParams


def plan_training(n_cells: int, n_spots: int, n_genes: int, n_types: int,
                  params: TrainingParams | None = None, device="auto", probe: bool = True,
                  sc_counts=None, st_counts=None, probe_steps: int = 6) -> TrainingPlan:
    """The schedule of both models and, with ``probe``, the time it will take on ``device``.

    Parameters
    ----------
    n_cells, n_spots, n_genes, n_types
        Sizes of the prepared data.
    params
        :class:`~destvi_core.pipeline.TrainingParams` (default: the defaults).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ... or a ``torch.device``.
    probe
        Time ``probe_steps`` optimisation steps of each network (untrained, same sizes, same
        batch size) on the device, after two warm-up steps: about a second on a CPU. Without
        it the plan has no time estimate.
    sc_counts, st_counts
        Optional count matrices (cells / spots x genes) whose rows feed the probe, so that its
        sparsity is the data's; otherwise Poisson counts of mean 2.
    """
    from .pipeline import TrainingParams

    params = params or TrainingParams()
    reference = reference_schedule(n_cells, params)
    spatial = spatial_model_schedule(n_spots, params)
    if not probe:
        return TrainingPlan(reference, spatial, str(device))
    from .device import describe_device, resolve_device

    dev = resolve_device(device if device != "auto" else params.device)
    sc_s, st_s = probe_step_times(n_genes, n_types, params, dev, sc_counts, st_counts,
                                  probe_steps, n_cells=n_cells, n_spots=n_spots)
    reference.seconds_per_step, spatial.seconds_per_step = sc_s, st_s
    return TrainingPlan(reference, spatial, describe_device(dev), measured=True)


def _probe_rows(counts, n_rows: int, n_genes: int, rng):
    import numpy as np
    import scipy.sparse as sp

    if counts is None:
        return sp.csr_matrix(rng.poisson(2.0, size=(n_rows, n_genes)).astype(np.float32))
    rows = np.sort(rng.choice(counts.shape[0], size=min(n_rows, counts.shape[0]), replace=False))
    block = counts[rows]
    return sp.csr_matrix(block, dtype=np.float32)


def probe_step_times(n_genes: int, n_types: int, params: TrainingParams, device,
                     sc_counts=None, st_counts=None, probe_steps: int = 6,
                     n_cells: int | None = None, n_spots: int | None = None
                     ) -> tuple[float, float]:
    """Seconds per optimisation step of CondSCVI and DestVI at these sizes on ``device``.

    Runs the real loss, backward pass and Adam update on untrained networks (the time per step
    does not depend on the weights) with the planned batch sizes; the RNG state of torch is
    restored afterwards.
    """
    import numpy as np
    import torch

    from .condscvi import CondSCVIModule
    from .destvi import DestVIModule
    from .tensors import SparseCounts
    from .training import take_batch

    rng = np.random.default_rng(0)
    timings = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        sc_module = CondSCVIModule(n_genes, n_types, params.n_latent, params.n_hidden,
                                   params.n_layers, params.dropout_rate).to(device)
        p = max(1, int(params.vamp_prior_p or 1))
        shape = (n_types, p, params.n_latent)
        prior = ((np.zeros(shape), np.ones(shape), np.full(shape[:2], 1.0 / p))
                 if params.vamp_prior_p else None)
        n_st = max(params.st_batch_size, min(int(n_spots or params.st_batch_size), 4096))
        st_module = DestVIModule(sc_module, n_st, params.n_latent, params.n_hidden, prior,
                                 params.amortization, params.l1_reg, params.beta_reg,
                                 params.eta_reg).to(device)
        sc_rows = _probe_rows(sc_counts, 4 * params.sc_batch_size, n_genes, rng)
        st_rows = _probe_rows(st_counts, 4 * params.st_batch_size, n_genes, rng)
        jobs = [(sc_module, {"x": SparseCounts(sc_rows, device),
                             "y": torch.as_tensor(rng.integers(0, n_types, sc_rows.shape[0]),
                                                  device=device)},
                 params.sc_batch_size, params.sc_lr, int(n_cells or sc_rows.shape[0])),
                (st_module, {"x": SparseCounts(st_rows, device),
                             "ind": torch.arange(st_rows.shape[0], device=device)},
                 params.st_batch_size, params.st_lr, n_st)]
        for module, data, batch_size, lr, n_obs in jobs:
            module.train()
            trainable = [q for q in module.parameters() if q.requires_grad]
            opt = torch.optim.Adam(trainable, lr=lr, eps=0.01, weight_decay=1e-6,
                                   fused=True if device.type in ("cpu", "cuda") else None)
            n_rows = len(data["x"])

            def step():
                idx = torch.randint(0, n_rows, (min(batch_size, n_rows),), device=device)
                loss, _ = module.loss(take_batch(data, idx), 0.5, n_obs)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            for _ in range(2):
                step()
            _sync(device)
            start = time.perf_counter()
            for _ in range(probe_steps):
                step()
            _sync(device)
            timings.append((time.perf_counter() - start) / probe_steps)
    return timings[0], timings[1]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
