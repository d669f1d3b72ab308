"""The training loop shared by both models: plain PyTorch, data already on the device.

The loop knows nothing about the UI. It calls ``callback(TrainingProgress)`` once per epoch and
checks ``should_stop()`` between optimisation steps; when it returns True the loop raises
:class:`~destvi_core.errors.TrainingCancelled` and the caller keeps its previous state.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch

from .errors import TrainingCancelled


@dataclass
class TrainingProgress:
    """What the progress callback receives after every epoch."""

    model: str  # "condscvi" or "destvi"
    epoch: int  # 1-based, epochs done
    n_epochs: int
    step: int  # optimisation steps done
    loss: dict[str, float]  # loss terms of this epoch (means over observations)
    elapsed_s: float
    eta_s: float  # estimated time left for this model


ProgressCallback = Callable[[TrainingProgress], None]


class LossModule(Protocol):
    def loss(self, batch: dict[str, torch.Tensor], kl_weight: float, n_obs: int
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


def kl_weight_schedule(epoch: int, n_epochs_kl_warmup: int | None) -> float:
    """KL warm-up as in scvi-tools: ``min(1, epoch / n_epochs_kl_warmup)``, epoch counted from 0."""
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


def minibatches(n_obs: int, batch_size: int, generator: torch.Generator, device: torch.device,
                min_last: int = 3):
    """Shuffled index batches; a last batch with fewer than ``min_last`` observations is dropped."""
    perm = torch.randperm(n_obs, generator=generator).to(device)
    for start in range(0, n_obs, batch_size):
        idx = perm[start:start + batch_size]
        if idx.numel() < min_last and start > 0:
            break
        yield idx


def run_training(module: torch.nn.Module, data: dict[str, torch.Tensor], config: TrainingConfig,
                 name: str, callback: ProgressCallback | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list[dict]:
    """Optimise ``module.loss`` with Adam over shuffled minibatches of ``data``.

    Parameters
    ----------
    module
        A module with ``loss(batch, kl_weight, n_obs) -> (loss, terms)``; ``terms`` maps term
        names to per-observation tensors ``[m]`` that are averaged for the history.
    data
        Tensors already on the training device, first dimension = observations.
    config
        Optimiser and schedule settings (Adam eps 0.01, weight decay 1e-6 as scvi-tools).

    Returns
    -------
    The per-epoch history (list of dicts), also appended to ``config.history``.
    """
    n_obs = next(iter(data.values())).shape[0]
    device = next(iter(data.values())).device
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, eps=config.adam_eps,
                                 weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    module.train()
    start = time.perf_counter()
    step = 0
    history = config.history
    for epoch in range(config.max_epochs):
        kl_weight = kl_weight_schedule(epoch, config.n_epochs_kl_warmup)
        sums: dict[str, torch.Tensor] = {}
        seen = 0
        for idx in minibatches(n_obs, config.batch_size, generator, device):
            if should_stop is not None and should_stop():
                raise TrainingCancelled(f"{name} training cancelled at epoch {epoch + 1}")
            batch = {key: value[idx] for key, value in data.items()}
            loss, terms = module.loss(batch, kl_weight, n_obs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            seen += idx.numel()
            with torch.no_grad():
                for key, value in terms.items():
                    total = value.detach().sum()
                    sums[key] = sums[key] + total if key in sums else total
        record = {key: float(value) / max(seen, 1) for key, value in sums.items()}  # one sync/epoch
        if any(not math.isfinite(v) for v in record.values()):
            raise FloatingPointError(
                f"{name} training diverged at epoch {epoch + 1} (loss is not finite). "
                "Fix: check that the inputs are raw counts, or lower the learning rate")
        record.update(epoch=epoch + 1, kl_weight=kl_weight)
        history.append(record)
        if callback is not None:
            elapsed = time.perf_counter() - start
            done = epoch + 1
            eta = elapsed / done * (config.max_epochs - done)
            callback(TrainingProgress(name, done, config.max_epochs, step,
                                      {k: v for k, v in record.items() if k not in ("epoch",)},
                                      elapsed, eta))
    module.eval()
    return history


def fit_model(model, data: dict[str, torch.Tensor], name: str, max_epochs: int, lr: float,
              batch_size: int, n_epochs_kl_warmup: int | None,
              callback: ProgressCallback | None = None, should_stop=None):
    """Train ``model.module`` on ``data``; record the parameters and history on ``model``.

    ``model`` is a :class:`~destvi_core.condscvi.CondSCVI` or :class:`~destvi_core.destvi.DestVI`
    (anything with ``module``, ``seed``, ``history``, ``train_params`` and ``is_trained``).
    """
    seed_everything(model.seed)
    config = TrainingConfig(max_epochs=max_epochs, lr=lr, batch_size=batch_size,
                            n_epochs_kl_warmup=n_epochs_kl_warmup, seed=model.seed,
                            history=model.history)
    model.train_params = dict(max_epochs=max_epochs, lr=lr, batch_size=batch_size,
                              n_epochs_kl_warmup=n_epochs_kl_warmup)
    run_training(model.module, data, config, name, callback, should_stop)
    model.is_trained = True
    return model


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch (all devices) and return a numpy Generator for the same seed."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)
