"""A training job's handle: state, progress and cancel, shared by every session.

Built and updated by :class:`destvi_core.jobs.JobManager` (see there); read anywhere.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass

from .errors import DestVIError

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
MODEL_NAMES = {"condscvi": "reference (CondSCVI)", "destvi": "spatial (DestVI)"}


@dataclass(frozen=True)
class JobProgress:
    """The last progress report of a running job."""

    model: str  # "condscvi" or "destvi"
    epoch: int
    n_epochs: int
    step: int
    loss: dict
    elapsed_s: float  # in this model's training
    eta_s: float  # time left for this model

    @property
    def fraction(self) -> float:
        return min(1.0, self.epoch / max(self.n_epochs, 1))


def one_line(text: object, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def describe_failure(error: BaseException) -> str:
    """One line saying why a job failed, and what to do, for any exception from a task."""
    name = type(error).__name__
    if isinstance(error, DestVIError):
        return one_line(error)
    if name == "KilledWorker":
        return ("the worker running it died (most often out of memory). Fix: train fewer jobs "
                "at once, a smaller data set, or on a worker with more memory")
    if isinstance(error, MemoryError):
        return "out of memory. Fix: train fewer jobs at once or on a worker with more memory"
    if isinstance(error, FloatingPointError):
        return one_line(error)
    if name in ("CommClosedError", "FutureCancelledError") or isinstance(error, (OSError,
                                                                                 TimeoutError)):
        return one_line(f"lost contact with the cluster ({name}: {error}). Fix: check the "
                        "scheduler and workers, then train again")
    return one_line(f"{name}: {error}" if str(error) else name)


class Job:
    """Handle of one training job (thread-safe; shared by every session of the app).

    Read :attr:`state`, :attr:`message`, :attr:`progress`, :attr:`history`; :meth:`cancel`;
    :meth:`wait`. ``path`` is the cache entry once done.
    """

    def __init__(self, job_id: str, kind: str, label: str, cache_key: str, *, section=None,
                 data_key=None, params=None, n_epochs: int = 0, seed=None, submitted=None,
                 manager=None, reference: Job | None = None):
        self.id, self.kind, self.label, self.cache_key = job_id, kind, label, cache_key
        self.section, self.data_key = section, data_key
        self.params = dict(params or {})
        self.n_epochs, self.seed = int(n_epochs), seed
        self.submitted = submitted or time.time()
        self.reference = reference
        self.from_cache = False
        self.path = None
        self._manager = weakref.ref(manager) if manager is not None else None
        self._future = None
        self._task_key: str | None = None
        self._inputs: tuple = ()
        self._final: str | None = None
        self._message = ""
        self._started: float | None = None
        self._ended: float | None = None
        self._events: list[dict] = []
        self._lock = threading.Lock()
        self._finished = threading.Event()

    # ------------------------------------------------------------------ reading
    @property
    def state(self) -> str:
        if self._final is not None:
            return self._final
        return "running" if self._started is not None else "queued"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def message(self) -> str:
        """Why it failed or was cancelled ('' otherwise)."""
        return self._message

    @property
    def progress(self) -> JobProgress | None:
        with self._lock:
            last = next((e for e in reversed(self._events) if "epoch" in e), None)
        if last is None:
            return None
        return JobProgress(last["model"], last["epoch"], last["n_epochs"], last.get("step", 0),
                           dict(last.get("loss", {})), last.get("elapsed_s", 0.0),
                           last.get("eta_s", 0.0))

    @property
    def history(self) -> list[dict]:
        """Every progress report so far (model, epoch, loss terms, ...), for loss curves."""
        with self._lock:
            return [dict(e) for e in self._events if "epoch" in e]

    @property
    def elapsed_s(self) -> float:
        if self._started is None:
            return 0.0
        return (self._ended or time.time()) - self._started

    def fraction(self) -> float:
        """Share of this job's epochs done (1 when done)."""
        if self.state == "done":
            return 1.0
        p = self.progress
        if p is None:
            return 0.0
        if self.kind == "reference" or p.model == "destvi":
            return p.fraction
        return 0.0

    def describe(self) -> str:
        """One line for lists: what it trains, where it is, loss, time left."""
        state = self.state
        if state == "queued":
            return f"{self.label}: queued"
        if state == "running":
            p = self.progress
            if p is None:
                return f"{self.label}: starting"
            loss = p.loss.get("loss")
            loss_txt = f" · loss {loss:,.1f}" if loss is not None else ""
            return (f"{self.label}: {MODEL_NAMES.get(p.model, p.model)} epoch {p.epoch:,}/"
                    f"{p.n_epochs:,}{loss_txt} · about {p.eta_s:,.0f} s left")
        if state == "done":
            how = "from the cache" if self.from_cache else f"in {self.elapsed_s:,.0f} s"
            return f"{self.label}: done {how}"
        return f"{self.label}: {state}" + (f" — {self._message}" if self._message else "")

    def wait(self, timeout: float | None = None) -> str:
        """Block until the job ended (or ``timeout`` seconds passed); returns the state."""
        self._finished.wait(timeout)
        return self.state

    # ------------------------------------------------------------------ control
    def cancel(self) -> bool:
        """Cancel: a queued job never starts, a running one stops at its next check (within
        a second). Returns False when the job had already ended."""
        manager = self._manager() if self._manager else None
        if manager is None or not self.active:
            return False
        return manager.cancel(self)

    # ------------------------------------------------------------------ updates (manager)
    def _on_event(self, event: dict) -> None:
        with self._lock:
            state = event.get("state")
            if state == "running" and self._started is None:
                self._started = float(event.get("t") or time.time())
            if "epoch" in event:
                self._events.append(event)
            elif state in ("done", "failed", "cancelled") and self._final is None:
                self._finish_locked(state, event.get("message", ""))

    def _finish(self, state: str, message: str = "", path=None) -> None:
        with self._lock:
            self._finish_locked(state, message, path)

    def _finish_locked(self, state: str, message: str = "", path=None) -> None:
        if self._final is not None:
            return
        self.path = path if path is not None else self.path
        self._message = message
        self._ended = time.time()
        self._final = state
        self._future = None
        self._inputs = ()
        self._finished.set()

    def __repr__(self) -> str:
        return f"Job({self.id!r}, {self.kind}, {self.label!r}, {self.state})"
