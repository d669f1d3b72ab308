"""What a Dask worker runs for a training job (the submitting side is :mod:`destvi_core.jobs`).

A task trains one model and returns the saved model folder as ``{file name: bytes}``: the
worker may be on another machine without the app's file system, so the submitting side writes
the files into its content-addressed cache (atomically, :meth:`ModelCache.put_files`).

While it trains, a task reports to the scheduler with ``Worker.log_event`` on the topic
:data:`PROGRESS_TOPIC` (``{"job", "state": "running", "model", "epoch", "n_epochs", "step",
"loss", "elapsed_s", "eta_s"}``, at most every :data:`PROGRESS_EVERY_S` seconds plus the first
and last epoch of each model), readable by any client of the scheduler. It polls a
``distributed.Event`` named :func:`cancel_event_name` (at most every :data:`CANCEL_POLL_S`
seconds) from the training loop's ``should_stop``: setting it stops a running training with
:class:`~destvi_core.errors.TrainingCancelled`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

PROGRESS_TOPIC = "destvi-studio-progress"
PROGRESS_EVERY_S = 0.5
CANCEL_POLL_S = 0.5
_CANCEL_PREFIX = "destvi-studio-cancel-"


def cancel_event_name(job_id: str) -> str:
    """Name of the ``distributed.Event`` that cancels the running job ``job_id``."""
    return _CANCEL_PREFIX + job_id


class _Reporter:
    """Progress callback and cancel flag of one task on a worker (no-ops outside a worker)."""

    def __init__(self, job_id: str):
        self.job_id = job_id
        self.worker = None
        self.event = None
        try:
            from distributed import get_worker

            self.worker = get_worker()
        except (ImportError, ValueError):
            pass
        self._last_log = 0.0
        self._last_poll = 0.0
        self._stop = False
        self._model = None

    def log(self, message: dict) -> None:
        if self.worker is not None:
            self.worker.log_event(PROGRESS_TOPIC, {"job": self.job_id, **message})

    def started(self, threads: int) -> None:
        self.log({"state": "running", "worker": getattr(self.worker, "address", "local"),
                  "threads": threads, "t": time.time()})

    def __call__(self, progress) -> None:
        now = time.monotonic()
        boundary = progress.model != self._model or progress.epoch >= progress.n_epochs
        if not boundary and now - self._last_log < PROGRESS_EVERY_S:
            return
        self._model = progress.model
        self._last_log = now
        loss = {k: float(v) for k, v in progress.loss.items()}
        self.log({"state": "running", "model": progress.model, "epoch": int(progress.epoch),
                  "n_epochs": int(progress.n_epochs), "step": int(progress.step), "loss": loss,
                  "elapsed_s": float(progress.elapsed_s), "eta_s": float(progress.eta_s),
                  "t": time.time()})

    def should_stop(self) -> bool:
        if self._stop or self.worker is None:
            return self._stop
        now = time.monotonic()
        if now - self._last_poll < CANCEL_POLL_S:
            return False
        self._last_poll = now
        try:
            if self.event is None:
                from distributed import Event

                self.event = Event(cancel_event_name(self.job_id))
            self._stop = bool(self.event.is_set())
        except Exception:  # noqa: BLE001 - a flaky scheduler connection must not kill training
            return False
        return self._stop


def _params(values: dict):
    from .pipeline import TrainingParams

    return TrainingParams.from_dict(values).validate()


def train_reference_task(job_id: str, sc, labels_key: str, params: dict,
                         extra: dict | None = None) -> dict[str, bytes]:
    """Train the reference model (CondSCVI); returns its folder's files (no ``destvi.pt``)."""
    from .cluster import configure_worker_threads
    from .model_files import folder_files
    from .persistence import save_reference
    from .pipeline import train_reference

    reporter = _Reporter(job_id)
    reporter.started(configure_worker_threads())
    training = _params(params)
    sc_model = train_reference(sc, labels_key, training, reporter, reporter.should_stop)
    with tempfile.TemporaryDirectory(prefix="destvi-job-") as tmp:
        save_reference(tmp, sc_model, {"params": training.to_dict(), **(extra or {})})
        return folder_files(tmp)


def train_spatial_task(job_id: str, sc, st, labels_key: str, params: dict,
                       reference: dict[str, bytes], extra: dict | None = None) -> dict[str, bytes]:
    """Train DestVI on one section from a trained reference (``reference``: the reference
    folder's files); returns the complete pair folder's files, as :func:`save_models` writes
    them, so ``export --model`` works on it."""
    from .cluster import configure_worker_threads
    from .model_files import folder_files, write_files
    from .persistence import load_reference, save_models
    from .pipeline import train_spatial

    reporter = _Reporter(job_id)
    reporter.started(configure_worker_threads())
    training = _params(params)
    with tempfile.TemporaryDirectory(prefix="destvi-job-") as tmp:
        sc_model = load_reference(write_files(Path(tmp) / "reference", reference), sc,
                                  device=training.device)
        st_model = train_spatial(st, sc_model, training, reporter, reporter.should_stop)
        pair = Path(tmp) / "pair"
        save_models(pair, sc_model, st_model, {"params": training.to_dict(), **(extra or {})})
        return folder_files(pair)
