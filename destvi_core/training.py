"""The training loop shared by both models: plain PyTorch, data already on the device.

The loop knows nothing about the UI. It calls ``callback(TrainingProgress)`` after every epoch
and, throttled to one call per ``progress_interval_s`` seconds, within long epochs (a 100,000-spot
slide has ~800 steps per epoch); time left comes from the measured time per step. It checks
``should_stop()`` before every optimisation step; when it returns True the loop raises
:class:`~destvi_core.errors.TrainingCancelled` and the caller keeps its previous state.

Data values are tensors (indexed per batch) or :class:`~destvi_core.tensors.SparseCounts`
(CSR on the device, densified per batch).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch

from .errors import TrainingCancelled
from .schedule import steps_per_epoch  # noqa: F401  (re-exported)


@dataclass
class TrainingProgress:
    """What the progress callback receives after every epoch (and within long epochs).

    Mid-epoch updates have ``end_of_epoch=False``: ``epoch`` is then the number of *completed*
    epochs and ``loss`` the running means over the observations seen so far in the epoch; code
    that draws one point per epoch (loss curves) should skip them.
    """

    model: str  # "condscvi" or "destvi"
    epoch: int  # 1-based, epochs done
    n_epochs: int
    step: int  # optimisation steps done
    loss: dict[str, float]  # loss terms of this epoch (means over observations)
    elapsed_s: float
    eta_s: float  # estimated time left for this model, from the measured time per step
    n_steps: int = 0  # optimisation steps of the whole schedule (0 if unknown)
    end_of_epoch: bool = True  # False for the throttled updates within an epoch
    phase: str = "train"  # "train", or "inference" for chunked passes over the spots
    seconds_per_step: float = 0.0  # measured mean time per step (or per inference chunk)

    @property
    def fraction(self) -> float:
        """Share of the work done, in [0, 1]."""
        if self.n_steps:
            return min(1.0, self.step / self.n_steps)
        return min(1.0, self.epoch / self.n_epochs) if self.n_epochs else 0.0


ProgressCallback = Callable[[TrainingProgress], None]


class LossModule(Protocol):
    def loss(self, batch: dict[str, torch.Tensor], kl_weight: float, n_obs: int
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


def kl_weight_schedule(epoch: int, n_epochs_kl_warmup: int | None) -> float:
    """KL warm-up as in scvi-tools: ``min(1, epoch / n_epochs_kl_warmup)``, epoch counted from 0.

    The same function serves the warm-up in steps (scvi-tools' ``n_steps_kl_warmup``): pass the
    step counted from 0 and the warm-up length in steps.
    """
    if not n_epochs_kl_warmup:
        return 1.0
    return min(1.0, epoch / n_epochs_kl_warmup)


@dataclass
class TrainingConfig:
    max_epochs: int
    lr: float
    batch_size: int = 128
    n_epochs_kl_warmup: int | None = 400
    weight_decay: float = 1e-6
    adam_eps: float = 0.01
    seed: int = 0
    history: list[dict] = field(default_factory=list)
    n_steps_kl_warmup: int | None = None  # when set, the KL weight ramps per step instead
    progress_interval_s: float = 1.0  # at most one mid-epoch progress call per interval


def minibatches(n_obs: int, batch_size: int, generator: torch.Generator, device: torch.device,
                min_last: int = 3):
    """Shuffled index batches; a last batch with fewer than ``min_last`` observations is dropped."""
    perm = torch.randperm(n_obs, generator=generator).to(device)
    for start in range(0, n_obs, batch_size):
        idx = perm[start:start + batch_size]
        if idx.numel() < min_last and start > 0:
            break
        yield idx


def n_observations(data: dict) -> int:
    """Rows of the first data entry (tensor or SparseCounts)."""
    return len(next(iter(data.values())))


def data_device(data: dict) -> torch.device:
    value = next(iter(data.values()))
    return value.device


def take_batch(data: dict, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows ``idx`` of every entry; sparse counts are densified (with their non-zeros)."""
    batch: dict[str, torch.Tensor] = {}
    for key, value in data.items():
        if isinstance(value, torch.Tensor):
            batch[key] = value[idx]
        else:
            batch.update(value.batch(idx, key))
    return batch


def run_training(module: torch.nn.Module, data: dict, config: TrainingConfig,
                 name: str, callback: ProgressCallback | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list[dict]:
    """Optimise ``module.loss`` with Adam over shuffled minibatches of ``data``.

    Parameters
    ----------
    module
        A module with ``loss(batch, kl_weight, n_obs) -> (loss, terms)``; ``terms`` maps term
        names to per-observation tensors ``[m]`` that are averaged for the history.
    data
        Tensors or :class:`~destvi_core.tensors.SparseCounts` already on the training device,
        first dimension = observations.
    config
        Optimiser and schedule settings (Adam eps 0.01, weight decay 1e-6 as scvi-tools).
        ``n_steps_kl_warmup`` switches the KL warm-up from epochs to steps.

    Returns
    -------
    The per-epoch history (list of dicts), also appended to ``config.history``.
    """
    n_obs = n_observations(data)
    device = data_device(data)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, eps=config.adam_eps,
                                 weight_decay=config.weight_decay,
                                 fused=True if device.type in ("cpu", "cuda") else None)
    generator = torch.Generator().manual_seed(config.seed)
    module.train()
    start = time.perf_counter()
    last_report = start
    per_epoch = steps_per_epoch(n_obs, config.batch_size)
    total_steps = per_epoch * config.max_epochs
    step = 0
    history = config.history

    def progress(epoch_done: int, record: dict, end_of_epoch: bool) -> TrainingProgress:
        elapsed = time.perf_counter() - start
        per_step = elapsed / max(step, 1)
        return TrainingProgress(name, epoch_done, config.max_epochs, step, record, elapsed,
                                per_step * max(total_steps - step, 0), total_steps,
                                end_of_epoch, "train", per_step)

    for epoch in range(config.max_epochs):
        if config.n_steps_kl_warmup:
            kl_weight = kl_weight_schedule(step, config.n_steps_kl_warmup)
        else:
            kl_weight = kl_weight_schedule(epoch, config.n_epochs_kl_warmup)
        sums: dict[str, torch.Tensor] = {}
        seen = 0
        for idx in minibatches(n_obs, config.batch_size, generator, device):
            if should_stop is not None and should_stop():
                raise TrainingCancelled(f"{name} training cancelled at epoch {epoch + 1}")
            if config.n_steps_kl_warmup:
                kl_weight = kl_weight_schedule(step, config.n_steps_kl_warmup)
            loss, terms = module.loss(take_batch(data, idx), kl_weight, n_obs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            seen += idx.numel()
            with torch.no_grad():
                for key, value in terms.items():
                    total = value.detach().sum()
                    sums[key] = sums[key] + total if key in sums else total
            if callback is not None and time.perf_counter() - last_report >= \
                    config.progress_interval_s and seen < n_obs:
                running = {key: float(value) / seen for key, value in sums.items()}
                running["kl_weight"] = kl_weight
                callback(progress(epoch, running, end_of_epoch=False))
                last_report = time.perf_counter()
        record = {key: float(value) / max(seen, 1) for key, value in sums.items()}  # one sync/epoch
        if any(not math.isfinite(v) for v in record.values()):
            raise FloatingPointError(
                f"{name} training diverged at epoch {epoch + 1} (loss is not finite). "
                "Fix: check that the inputs are raw counts, or lower the learning rate")
        record.update(epoch=epoch + 1, kl_weight=kl_weight)
        history.append(record)
        if callback is not None:
            callback(progress(epoch + 1, {k: v for k, v in record.items() if k != "epoch"},
                              end_of_epoch=True))
            last_report = time.perf_counter()
    module.eval()
    return history


def fit_model(model, data: dict, name: str, max_epochs: int, lr: float,
              batch_size: int, n_epochs_kl_warmup: int | None,
              callback: ProgressCallback | None = None, should_stop=None,
              n_steps_kl_warmup: int | None = None, progress_interval_s: float = 1.0):
    """Train ``model.module`` on ``data``; record the parameters and history on ``model``.

    ``model`` is a :class:`~destvi_core.condscvi.CondSCVI` or :class:`~destvi_core.destvi.DestVI`
    (anything with ``module``, ``seed``, ``history``, ``train_params`` and ``is_trained``).
    """
    seed_everything(model.seed)
    config = TrainingConfig(max_epochs=max_epochs, lr=lr, batch_size=batch_size,
                            n_epochs_kl_warmup=n_epochs_kl_warmup, seed=model.seed,
                            history=model.history, n_steps_kl_warmup=n_steps_kl_warmup,
                            progress_interval_s=progress_interval_s)
    model.train_params = dict(max_epochs=max_epochs, lr=lr, batch_size=batch_size,
                              n_epochs_kl_warmup=n_epochs_kl_warmup,
                              n_steps_kl_warmup=n_steps_kl_warmup,
                              n_steps=steps_per_epoch(n_observations(data), batch_size) * max_epochs)
    run_training(model.module, data, config, name, callback, should_stop)
    model.is_trained = True
    return model


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch (all devices) and return a numpy Generator for the same seed."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)
