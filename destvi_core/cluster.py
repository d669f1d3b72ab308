"""Where trainings run: a local Dask cluster started on first use, or an existing one.

* **Local (default).** A Dask ``SpecCluster`` of worker *processes*, each running one training
  at a time (one Dask thread and the resource ``train=1``). With CUDA, one worker per GPU, pinned
  to it through ``CUDA_VISIBLE_DEVICES``. On CPU, ``workers x torch threads`` never exceeds the
  machine's cores: two torch processes with two threads each on two cores run more than 10x
  slower than one after the other, so concurrent submissions queue instead.
  How many workers and threads: :func:`plan_local_workers` (README, "Jobs": measured choice).
* **Attached.** ``--scheduler tcp://host:8786``, ``$DESTVI_STUDIO_SCHEDULER`` or the app's
  field connect to a running scheduler (e.g. started by dask-jobqueue on SLURM); workers need
  the same Python environment with ``destvi_core`` importable.

Nothing here imports dask or torch at module import: the app's first map must not pay for it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field

from .errors import InputError

SCHEDULER_ENV = "DESTVI_STUDIO_SCHEDULER"
"""Address of an existing Dask scheduler to run the jobs on (e.g. ``tcp://10.0.0.5:8786``)."""
WORKERS_ENV = "DESTVI_STUDIO_WORKERS"
"""Number of local workers (default: from the machine, see :func:`plan_local_workers`)."""
THREADS_ENV = "DESTVI_STUDIO_THREADS"
"""Torch threads per local worker (default: see :func:`plan_local_workers`)."""
TORCH_THREADS_ENV = "DESTVI_TORCH_THREADS"
"""Set on each local worker: the torch threads a training uses there."""

TRAIN_RESOURCE = "train"
"""Worker resource that admits one training at a time (declared by our local workers; declare
it on your own workers with ``--resources train=1``)."""


@dataclass(frozen=True)
class WorkerPlan:
    """How the local cluster is laid out."""

    n_workers: int
    torch_threads: int  # per worker
    gpus: tuple[int | None, ...] = field(default=())  # device index of each worker (None: CPU)
    memory_limit: str | int = "auto"

    def describe(self) -> str:
        if any(g is not None for g in self.gpus):
            return (f"{self.n_workers} GPU worker{'s' * (self.n_workers > 1)} "
                    f"(one per GPU, {self.torch_threads} CPU thread{'s' * (self.torch_threads > 1)} each)")
        return (f"{self.n_workers} worker process{'es' * (self.n_workers > 1)} x "
                f"{self.torch_threads} torch thread{'s' * (self.torch_threads > 1)}")


def cpu_cores() -> int:
    """Cores this process may use (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def cuda_devices() -> int:
    """Number of visible CUDA GPUs (0 without torch or CUDA)."""
    if importlib.util.find_spec("torch") is None:
        return 0
    import torch

    try:
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken driver means no GPU for us
        return 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        raise InputError(f"${name} must be a whole number (got {value!r})",
                         "unset it or set it to e.g. 1") from None
    if number < 1:
        raise InputError(f"${name} must be at least 1 (got {number})", "unset it or set it to 1")
    return number


def default_torch_threads(cores: int) -> int:
    """Torch threads per CPU worker: 1 up to 4 cores, then 2 up to 16, then 4.

    On 2 cores two single-thread workers train two sections in about the time of one trained
    with two threads (README, "Jobs"), and small models gain little from more threads; on big
    machines a few threads per worker keep one large slide from being slow.
    """
    return 1 if cores <= 4 else 2 if cores <= 16 else 4


def plan_local_workers(cores: int | None = None, gpus: int | None = None,
                       n_workers: int | None = None, torch_threads: int | None = None) -> WorkerPlan:
    """Workers and threads of the local cluster.

    GPUs present: one worker per GPU (pinned), CPU threads shared between them. CPU only:
    ``torch_threads`` per worker (default :func:`default_torch_threads`) and as many workers
    as fit, so that ``n_workers * torch_threads <= cores``. ``$DESTVI_STUDIO_WORKERS`` and
    ``$DESTVI_STUDIO_THREADS`` override the defaults (the product still caps the total).
    """
    cores = cpu_cores() if cores is None else max(1, int(cores))
    gpus = cuda_devices() if gpus is None else max(0, int(gpus))
    n_workers = n_workers or _env_int(WORKERS_ENV)
    torch_threads = torch_threads or _env_int(THREADS_ENV)
    if gpus:
        n = min(n_workers or gpus, gpus)
        threads = torch_threads or max(1, min(4, cores // n))
        return WorkerPlan(n, max(1, min(threads, cores // n or 1)), tuple(range(n)))
    threads = min(torch_threads or default_torch_threads(cores), cores)
    n = max(1, min(n_workers or cores // threads, cores // threads))
    return WorkerPlan(n, threads, (None,) * n)


def scheduler_address(explicit: str | None = None) -> str | None:
    """The scheduler to attach to: ``explicit``, else ``$DESTVI_STUDIO_SCHEDULER``, else None
    (a local cluster)."""
    address = (explicit or os.environ.get(SCHEDULER_ENV) or "").strip()
    if not address:
        return None
    if "://" not in address:
        address = "tcp://" + address
    return address


def _worker_env(plan: WorkerPlan, gpu: int | None) -> dict[str, str]:
    threads = str(plan.torch_threads)
    env = {TORCH_THREADS_ENV: threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "OPENBLAS_NUM_THREADS": threads}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    elif any(g is not None for g in plan.gpus):  # pragma: no cover - mixed plans are not built
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def start_local_cluster(plan: WorkerPlan | None = None):
    """Start the local cluster of :func:`plan_local_workers` (a ``distributed.SpecCluster``).

    Workers: one ``Nanny`` process each, one Dask thread, resource ``train=1``, the torch
    thread count in their environment and, with GPUs, their own device. A task that kills its
    worker (out of memory) fails at once instead of being retried on the other workers.
    """
    from distributed import Nanny, Scheduler, SpecCluster
    from distributed.system import MEMORY_LIMIT

    plan = plan or plan_local_workers()
    memory = plan.memory_limit
    if memory == "auto":
        memory = int(MEMORY_LIMIT * min(1.0, plan.torch_threads / cpu_cores())) or MEMORY_LIMIT
    dashboard = ":0" if importlib.util.find_spec("bokeh") is not None else None
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": dashboard,
                                               "allowed_failures": 0}}
    workers = {f"destvi-{i}": {"cls": Nanny, "options": {
        "nthreads": 1, "memory_limit": memory, "resources": {TRAIN_RESOURCE: 1},
        "env": _worker_env(plan, gpu), "host": "127.0.0.1", "silence_logs": logging.ERROR,
        "preload": ["destvi_core.worker_preload"]}}
        for i, gpu in enumerate(plan.gpus)}
    logging.getLogger("distributed").setLevel(logging.ERROR)
    return SpecCluster(workers=workers, scheduler=scheduler, name="destvi-studio",
                       silence_logs=logging.ERROR)


def connect(address: str, timeout: float = 10.0):
    """A ``distributed.Client`` on ``address``; :class:`InputError` with a fix when it cannot
    be reached."""
    from distributed import Client

    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise InputError(f"could not reach the Dask scheduler at {address} "
                         f"({type(err).__name__})",
                         "check the address and that the scheduler is running (dask scheduler "
                         f"or dask-jobqueue), or clear ${SCHEDULER_ENV} to use a local cluster"
                         ) from None


def configure_worker_threads() -> int:
    """Called at the start of every training task; returns the torch thread count.

    ``$DESTVI_TORCH_THREADS`` when set (our local workers); else, on a worker that declares the
    ``train`` resource (one training at a time), its Dask thread count; else 1, since such a
    worker may run as many trainings at once as it has threads.
    """
    import torch

    threads = _env_int(TORCH_THREADS_ENV)
    if threads is None:
        try:
            from distributed import get_worker

            state = get_worker().state
            threads = int(state.nthreads) if state.total_resources.get(TRAIN_RESOURCE) else 1
        except (ImportError, ValueError, AttributeError):
            threads = torch.get_num_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
