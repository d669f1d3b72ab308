"""One call from prepared data to a trained model pair, through the content-addressed cache."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

from anndata import AnnData

from .errors import InputError

if TYPE_CHECKING:  # the models import torch; parameters and presets do not need it
    from .condscvi import CondSCVI
    from .destvi import DestVI
    from .training import ProgressCallback


@dataclass
class TrainingParams:
    """Every hyper-parameter of a trained pair (defaults: scvi-tools 1.3 / the DestVI tutorial).

    Deliberate deviations (see README, "Deviations"): ``init="data"`` starts both models at the
    data's scale instead of scvi-tools' random init (``"reference"``).

    Schedules (:mod:`destvi_core.schedule`): with ``sc_epochs`` / ``st_epochs`` left at None
    (default) the epochs are chosen from optimisation steps: the tutorial's 300 / 2,500 epochs,
    with DestVI bounded to ``[st_min_steps, st_max_steps]`` steps (None = the defaults
    ``schedule.ST_MIN_STEPS`` / ``ST_MAX_STEPS``) and CondSCVI to at most ``sc_max_steps``
    (``schedule.SC_MAX_STEPS``), KL warm-ups in steps with the tutorial's share of training.
    Given epochs are trained exactly (scvi-tools' epoch warm-ups ``*_kl_warmup_epochs``); the
    step bounds then apply only when set (e.g. ``st_min_steps=5000`` stretches a small slide).
    """

    # reference model (CondSCVI)
    sc_epochs: int | None = None
    sc_max_steps: int | None = None
    sc_lr: float = 1e-3
    sc_batch_size: int = 128
    sc_kl_warmup_epochs: int = 400
    n_latent: int = 5
    n_hidden: int = 128
    n_layers: int = 2
    dropout_rate: float = 0.05
    weight_obs: bool = False
    # spatial model (DestVI)
    st_epochs: int | None = None
    st_lr: float = 3e-3
    st_batch_size: int = 128
    st_kl_warmup_epochs: int = 200
    vamp_prior_p: int = 15
    amortization: str = "both"
    l1_reg: float = 0.0
    beta_reg: float = 5.0
    eta_reg: float = 1e-4
    st_min_steps: int | None = None
    st_max_steps: int | None = None
    init: str = "data"
    # run
    seed: int = 0
    st_seed: int | None = field(default=None, metadata={"cache_key": "if_set"})
    device: str = field(default="auto", metadata={"cache_key": False})

    def validate(self) -> "TrainingParams":
        for name in ("sc_epochs", "st_epochs", "sc_batch_size", "st_batch_size", "n_latent",
                     "n_hidden", "n_layers"):
            value = getattr(self, name)
            if name.endswith("_epochs") and value is None:
                continue  # automatic schedule
            if int(value) < 1:
                raise InputError(f"{name} must be at least 1 (got {value})",
                                 f"set {name} to a positive number" +
                                 (" or leave it empty for the automatic schedule"
                                  if name.endswith("_epochs") else ""))
        for name in ("sc_max_steps", "st_min_steps", "st_max_steps"):
            value = getattr(self, name)
            if value is not None and int(value) < 0:
                raise InputError(f"{name} must be 0 or more (got {value})",
                                 f"set {name} to a number of steps (0 = no bound)")
        if self.st_min_steps and self.st_max_steps and self.st_min_steps > self.st_max_steps:
            raise InputError(f"st_min_steps ({self.st_min_steps}) is above st_max_steps "
                             f"({self.st_max_steps})", "make the floor at most the cap")
        for name in ("sc_lr", "st_lr"):
            if not (0 < float(getattr(self, name)) < 1):
                raise InputError(f"{name} must be between 0 and 1 (got {getattr(self, name)})",
                                 "use a learning rate such as 1e-3")
        if self.st_seed is not None and int(self.st_seed) < 0:
            raise InputError(f"st_seed must be a non-negative integer (got {self.st_seed})",
                             "leave it unset to use seed, or give a seed such as 1")
        if str(self.device).strip().lower() not in ("auto", "cpu"):  # needs torch to check
            from .device import resolve_device

            resolve_device(self.device)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def cache_dict(self) -> dict:
        """The parameters that change the trained weights (device excluded; ``st_seed`` only
        when set, so models trained before it existed keep their cache keys)."""
        out = {}
        for f in fields(self):
            rule = f.metadata.get("cache_key", True)
            value = getattr(self, f.name)
            if rule is True or (rule == "if_set" and value is not None):
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "TrainingParams":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def spatial_schedule(n_spots: int, params: TrainingParams) -> tuple[int, int]:
    """Epochs and KL warm-up (in epochs) of the spatial model on ``n_spots`` spots.

    See :func:`destvi_core.schedule.spatial_model_schedule` for the full schedule (steps,
    warm-up in steps, the rule used); with the automatic schedule the warm-up is returned
    rounded up to whole epochs. Epochs given with a step floor are stretched with their warm-up
    by the same factor, so the warm-up keeps its share of training.
    """
    from .schedule import spatial_model_schedule

    plan = spatial_model_schedule(n_spots, params)
    if plan.kl_warmup_epochs is not None:
        return plan.epochs, plan.kl_warmup_epochs
    return plan.epochs, math.ceil(plan.kl_warmup_steps / plan.steps_per_epoch)


@dataclass
class FitResult:
    sc_model: CondSCVI
    st_model: DestVI
    from_cache: bool = False
    cache_key: str | None = None


# Parameters that only shape the spatial model: everything else (including fields added later)
# counts for the reference model, so a reference is never reused where it should not be.
_SPATIAL_ONLY = frozenset({"vamp_prior_p", "amortization", "l1_reg", "beta_reg", "eta_reg"})


def is_spatial_param(name: str) -> bool:
    """True for parameters of the spatial model only (``st_*`` and DestVI's regularisers)."""
    return name.startswith("st_") or name in _SPATIAL_ONLY


def reference_cache_dict(params: TrainingParams) -> dict:
    """The parameters that change the reference model's weights (its cache key)."""
    return {k: v for k, v in params.cache_dict().items() if not is_spatial_param(k)}


def spatial_seed(params: TrainingParams) -> int:
    """Seed of the spatial model: ``st_seed`` when set (seed ensembles), else ``seed``."""
    return int(params.seed if params.st_seed is None else params.st_seed)


def train_reference(sc: AnnData, labels_key: str = "cell_type",
                    params: TrainingParams | None = None, callback: ProgressCallback | None = None,
                    should_stop=None) -> CondSCVI:
    """Train CondSCVI on the reference (no cache). One reference serves every spatial section
    whose data share its genes."""
    from .condscvi import CondSCVI
    from .schedule import reference_schedule

    params = (params or TrainingParams()).validate()
    sc_model = CondSCVI(sc, labels_key=labels_key, n_latent=params.n_latent,
                        n_hidden=params.n_hidden, n_layers=params.n_layers,
                        dropout_rate=params.dropout_rate, weight_obs=params.weight_obs,
                        seed=params.seed, device=params.device, init=params.init)
    sc_model.train(lr=params.sc_lr, callback=callback, should_stop=should_stop,
                   **reference_schedule(sc.n_obs, params).train_kwargs())
    return sc_model


def train_spatial(st: AnnData, sc_model: CondSCVI, params: TrainingParams | None = None,
                  callback: ProgressCallback | None = None, should_stop=None) -> DestVI:
    """Train DestVI on one section from a trained reference model (no cache).

    Given the same reference weights, the result is the same whether the reference was just
    trained in this process or loaded from a saved folder.
    """
    from .destvi import DestVI
    from .schedule import spatial_model_schedule

    params = (params or TrainingParams()).validate()
    st_model = DestVI.from_rna_model(st, sc_model, vamp_prior_p=params.vamp_prior_p,
                                     amortization=params.amortization, l1_reg=params.l1_reg,
                                     beta_reg=params.beta_reg, eta_reg=params.eta_reg,
                                     seed=spatial_seed(params), init=params.init)
    st_model.train(lr=params.st_lr, callback=callback, should_stop=should_stop,
                   **spatial_model_schedule(st.n_obs, params).train_kwargs())
    return st_model


def train_models(sc: AnnData, st: AnnData, labels_key: str = "cell_type",
                 params: TrainingParams | None = None, callback: ProgressCallback | None = None,
                 should_stop=None) -> tuple[CondSCVI, DestVI]:
    """Train CondSCVI on the reference, then DestVI on the spots (no cache)."""
    params = (params or TrainingParams()).validate()
    sc_model = train_reference(sc, labels_key, params, callback, should_stop)
    return sc_model, train_spatial(st, sc_model, params, callback, should_stop)


def fit_models(sc: AnnData, st: AnnData, labels_key: str = "cell_type",
               params: TrainingParams | None = None, callback: ProgressCallback | None = None,
               should_stop=None, cache=None, use_cache: bool = True) -> FitResult:
    """Load the pair from the cache when the same data and parameters were trained before,
    otherwise train it and store it (atomically) in the cache.

    Parameters
    ----------
    cache
        A :class:`~destvi_core.cache.ModelCache`; ``None`` uses the default location.
    use_cache
        False trains without reading or writing the cache.
    """
    from .cache import ModelCache, cache_key
    from .persistence import build_metadata  # noqa: F401  (keeps import errors early)

    params = (params or TrainingParams()).validate()
    if not use_cache:
        return FitResult(*train_models(sc, st, labels_key, params, callback, should_stop))
    cache = cache if cache is not None else ModelCache()
    key = cache_key(sc, st, labels_key, params.cache_dict())
    hit = cache.get(key, sc, st, device=params.device)
    if hit is not None:
        return FitResult(hit[0], hit[1], from_cache=True, cache_key=key)
    sc_model, st_model = train_models(sc, st, labels_key, params, callback, should_stop)
    cache.put(key, sc_model, st_model, {"params": params.to_dict()})
    return FitResult(sc_model, st_model, from_cache=False, cache_key=key)


PRESETS = ("default", "tutorial", "quick", "reference")


def preset(name: str, **overrides) -> TrainingParams:
    """Named parameter sets.

    ``"default"``: the automatic schedule in steps (:mod:`destvi_core.schedule`).
    ``"tutorial"``: exactly the scvi-tools tutorial's 300 + 2,500 epochs. ``"quick"``: 100 + 300
    epochs, enough with ``init="data"`` on data of demo size (measured in bench/bench_models.py),
    for a first look in minutes on a CPU. ``"reference"``: tutorial epochs and scvi-tools' own
    init.
    """
    presets = {
        "default": {},
        "tutorial": {"sc_epochs": 300, "st_epochs": 2500},
        "quick": {"sc_epochs": 100, "st_epochs": 300},
        "reference": {"sc_epochs": 300, "st_epochs": 2500, "init": "reference"},
    }
    if name not in presets:
        raise InputError(f"unknown preset {name!r}", f"use one of {', '.join(presets)}")
    return TrainingParams(**{**presets[name], **overrides}).validate()
