"""Training schedules in optimisation steps, and what they will cost on this machine.

The tutorial's schedules are in epochs (300 reference epochs, 2,500 spatial epochs) and were set
on ~1,100 spots: at Visium HD sizes (100,000 spots = 782 steps per epoch) 2,500 epochs would be
two million optimisation steps, while on a slide of 96 spots they are only 2,500. The automatic
schedule (the default: ``TrainingParams.st_epochs is None``) keeps the tutorial's epochs and
bounds the number of *steps*: at least ``st_min_steps`` (default :data:`ST_MIN_STEPS`) and at
most ``st_max_steps`` (default :data:`ST_MAX_STEPS`); the KL warm-up keeps the tutorial's share
of training (200 of 2,500 epochs = 8 %) and ramps per step. The reference model keeps its 300
epochs up to ``sc_max_steps`` (default :data:`SC_MAX_STEPS`) steps, warm-up 4/3 of training as
in scvi-tools (the KL weight ends at 0.75). Giving epochs (``st_epochs=2500``) trains exactly
those epochs; the step bounds then apply only when given explicitly. The choice is measured in
``bench/bench_schedule.py`` and ``bench/bench_scale.py`` (README, "Schedule").

:class:`TrainingPlan` is what the CLI and the app show before training ("DestVI 19,550 steps ...,
about 22 min here"); :func:`destvi_core.planning.plan_training` builds it with a time estimate
from a short measured probe. This module is plain arithmetic (no torch, no model import), so
the training loop and the pipeline can use it without an import cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

TrainingParams = Any
"""A :class:`destvi_core.pipeline.TrainingParams` (not imported: the pipeline uses this module)."""

TUTORIAL_SC_EPOCHS = 300
"""Reference epochs of the scvi-tools tutorial (the automatic schedule starts from them)."""
TUTORIAL_ST_EPOCHS = 2500
"""Spatial epochs of the DestVI tutorial (the automatic schedule starts from them)."""
SC_WARMUP_RATIO = 400 / 300
"""Reference KL warm-up / training length (scvi-tools: 400-epoch warm-up, 300 epochs)."""
ST_WARMUP_RATIO = 200 / 2500
"""Spatial KL warm-up / training length (tutorial: 200 of 2,500 epochs)."""
ST_MIN_STEPS = 5_000
"""Automatic schedule: fewest DestVI optimisation steps (small slides get more epochs)."""
ST_MAX_STEPS = 20_000
"""Automatic schedule: most DestVI optimisation steps (large slides get fewer epochs)."""
SC_MAX_STEPS = 40_000
"""Automatic schedule: most CondSCVI optimisation steps (large references get fewer epochs)."""


def steps_per_epoch(n_obs: int, batch_size: int, min_last: int = 3) -> int:
    """Optimisation steps in one epoch (a last batch of fewer than 3 is dropped, spec 1.4)."""
    full, rest = divmod(int(n_obs), int(batch_size))
    if full == 0:
        return 1 if n_obs else 0
    return full + (1 if rest >= min_last else 0)


@dataclass
class ModelSchedule:
    """Epochs, steps and KL warm-up of one model.

    Attributes
    ----------
    model
        ``"condscvi"`` or ``"destvi"``.
    n_obs, batch_size, steps_per_epoch, epochs
        Data size and the resulting schedule; ``steps = epochs * steps_per_epoch``.
    kl_warmup_epochs, kl_warmup_steps
        Warm-up in epochs (explicit epochs, as scvi-tools) or in steps (automatic schedule);
        exactly one is set.
    rule
        How the epochs were chosen, in words.
    seconds_per_step
        Measured time per step on the planned device (None when not measured).
    """

    model: str
    n_obs: int
    batch_size: int
    steps_per_epoch: int
    epochs: int
    kl_warmup_epochs: int | None
    kl_warmup_steps: int | None
    rule: str
    seconds_per_step: float | None = None

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def estimate_s(self) -> float | None:
        return None if self.seconds_per_step is None else self.steps * self.seconds_per_step

    def train_kwargs(self) -> dict:
        """Keyword arguments of ``CondSCVI.train`` / ``DestVI.train``."""
        return dict(max_epochs=self.epochs, batch_size=self.batch_size,
                    n_epochs_kl_warmup=self.kl_warmup_epochs,
                    n_steps_kl_warmup=self.kl_warmup_steps)

    def describe(self) -> str:
        name = {"condscvi": "reference (CondSCVI)", "destvi": "spatial (DestVI)"}[self.model]
        warm = (f"KL warm-up {self.kl_warmup_steps:,} steps" if self.kl_warmup_steps
                else f"KL warm-up {self.kl_warmup_epochs:,} epochs" if self.kl_warmup_epochs
                else "no KL warm-up")
        return (f"{name}: {self.steps:,} steps = {self.epochs:,} epochs x {self.steps_per_epoch:,} "
                f"batches of {self.batch_size} ({self.rule}; {warm})")


def _bounded(model: str, n_obs: int, batch_size: int, epochs: int | None, tutorial: int,
             lower: int | None, upper: int | None, default_lower: int, default_upper: int,
             warmup_ratio: float, warmup_epochs: int) -> ModelSchedule:
    per_epoch = max(1, steps_per_epoch(n_obs, batch_size))
    auto = epochs is None
    start = tutorial if auto else int(epochs)
    lo = (default_lower if auto else 0) if lower is None else int(lower)
    hi = (default_upper if auto else 0) if upper is None else int(upper)
    chosen, factor = start, 1.0
    rule = f"the tutorial's {start:,} epochs" if auto else f"{start:,} epochs as given"
    if lo and chosen * per_epoch < lo:
        chosen, factor = math.ceil(lo / per_epoch), lo / (start * per_epoch)
        rule = f"at least {lo:,} steps: {start:,} epochs would be {start * per_epoch:,} steps"
    elif hi and chosen * per_epoch > hi:
        chosen, factor = max(1, hi // per_epoch), hi / (start * per_epoch)
        rule = f"at most {hi:,} steps: {start:,} epochs would be {start * per_epoch:,} steps"
    if auto:
        return ModelSchedule(model, n_obs, batch_size, per_epoch, chosen, None,
                             max(1, round(warmup_ratio * chosen * per_epoch)), rule)
    # explicit epochs: scvi-tools' warm-up in epochs, stretched with the epochs
    warm = warmup_epochs if factor == 1.0 else math.ceil(warmup_epochs * factor)
    return ModelSchedule(model, n_obs, batch_size, per_epoch, chosen, warm, None, rule)


def reference_schedule(n_cells: int, params: TrainingParams) -> ModelSchedule:
    """CondSCVI schedule: ``sc_epochs`` as given, or the tutorial's 300 epochs up to
    ``sc_max_steps`` steps (default :data:`SC_MAX_STEPS`), warm-up 4/3 of training."""
    return _bounded("condscvi", n_cells, params.sc_batch_size, params.sc_epochs,
                    TUTORIAL_SC_EPOCHS, None, params.sc_max_steps, 0, SC_MAX_STEPS,
                    SC_WARMUP_RATIO, params.sc_kl_warmup_epochs)


def spatial_model_schedule(n_spots: int, params: TrainingParams) -> ModelSchedule:
    """DestVI schedule: ``st_epochs`` as given, or the tutorial's 2,500 epochs bounded to
    ``[st_min_steps, st_max_steps]`` steps (defaults :data:`ST_MIN_STEPS`,
    :data:`ST_MAX_STEPS`), warm-up 8 % of training."""
    return _bounded("destvi", n_spots, params.st_batch_size, params.st_epochs,
                    TUTORIAL_ST_EPOCHS, params.st_min_steps, params.st_max_steps, ST_MIN_STEPS,
                    ST_MAX_STEPS, ST_WARMUP_RATIO, params.st_kl_warmup_epochs)


@dataclass
class TrainingPlan:
    """What training will do and roughly how long it will take here.

    Attributes
    ----------
    reference, spatial
        :class:`ModelSchedule` of CondSCVI and DestVI.
    device
        Human-readable device (e.g. ``"CPU (2 threads)"``).
    measured
        Whether the time per step comes from a probe on this device.
    notes
        Extra lines (e.g. why the probe was skipped).
    """

    reference: ModelSchedule
    spatial: ModelSchedule
    device: str
    measured: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return self.reference.steps + self.spatial.steps

    @property
    def estimate_s(self) -> float | None:
        """Estimated training time (both models' optimisation steps), None if not measured."""
        parts = [self.reference.estimate_s, self.spatial.estimate_s]
        return None if any(p is None for p in parts) else float(sum(parts))

    def describe(self) -> str:
        """One line for the CLI and the app, e.g. ``"DestVI 19,550 steps (25 epochs of 782) +
        CondSCVI 35,400 steps (300 epochs of 118), about 22 min here on CPU (2 threads)"``."""
        st, sc = self.spatial, self.reference
        text = (f"DestVI {st.steps:,} steps ({st.epochs:,} epochs of {st.steps_per_epoch:,}) + "
                f"CondSCVI {sc.steps:,} steps ({sc.epochs:,} epochs of {sc.steps_per_epoch:,})")
        if self.estimate_s is not None:
            text += f", about {format_duration(self.estimate_s)} here on {self.device}"
        return text

    def details(self) -> list[str]:
        """Longer description: one line per model, then the time per step."""
        lines = [self.reference.describe(), self.spatial.describe()]
        if self.measured:
            lines.append(f"measured on {self.device}: {self.reference.seconds_per_step * 1e3:.1f} ms "
                         f"per reference step, {self.spatial.seconds_per_step * 1e3:.1f} ms per "
                         "spatial step")
        return lines + list(self.notes)


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"14 min"``, ``"2 h 05 min"``."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{round(minutes)} min"
    hours, rest = divmod(round(minutes), 60)
    return f"{hours} h {rest:02d} min"
