"""Training as background jobs on Dask distributed.

:class:`JobManager` submits trainings to a Dask cluster (a local one started on first use, or
an existing scheduler, see :mod:`destvi_core.cluster`) and returns :class:`Job` handles:

* a **reference** job trains CondSCVI once for a reference and its parameters;
* a **spatial** job trains DestVI on one section from that reference (waiting for the
  reference job when it is still running: a Dask dependency, so the reference model travels
  from worker to worker);
* :meth:`JobManager.submit_pair` is both, :meth:`JobManager.submit_sections` one reference and
  one spatial job per section (and per seed for a seed ensemble).

A job's state is ``queued``, ``running``, ``done``, ``failed`` (with a one-line message) or
``cancelled``; its progress (model, epoch, step, loss terms, elapsed, time left) comes from
the worker as scheduler events (:mod:`destvi_core.job_tasks`), so another process attached to
the same scheduler reads it too (:meth:`JobManager.jobs_on_scheduler`). A finished job's model
lands in the content-addressed cache through :meth:`ModelCache.put_files` (atomic: nothing
half-written ever lands there); submitting the same data and parameters again returns a
job that is done at once, and a job already queued or running for them is returned instead of
a second one.

Nothing here imports dask or torch until something is submitted.
"""

from __future__ import annotations

import atexit
import itertools
import threading
import uuid
from dataclasses import replace

from .cache import ModelCache, cache_key, data_digest, reference_digest, reference_key
from .cluster import TRAIN_RESOURCE, WorkerPlan, connect, scheduler_address, start_local_cluster
from .errors import DestVIError, TrainingCancelled
from .job_handle import (ACTIVE, MODEL_NAMES, STATES, Job, JobProgress,  # noqa: F401 - API
                         describe_failure, one_line)
from .job_tasks import PROGRESS_TOPIC, cancel_event_name

JOBS_TOPIC = "destvi-studio-jobs"


def ensemble_params(params, n_seeds: int) -> list:
    """The parameter sets of a seed ensemble: ``params`` itself (the model the app shows)
    and ``n_seeds - 1`` more with the spatial seed ``seed + 1, seed + 2, ...`` (same
    reference model)."""
    n_seeds = max(1, int(n_seeds))
    return [params] + [replace(params, st_seed=int(params.seed) + k) for k in range(1, n_seeds)]


class JobManager:
    """Submits trainings to a Dask cluster and keeps every job of this process.

    Parameters
    ----------
    address
        Scheduler to attach to; default ``$DESTVI_STUDIO_SCHEDULER``, else a local cluster
        started on the first submission (:func:`~destvi_core.cluster.start_local_cluster`).
    cache
        Where finished models go (default :class:`ModelCache` at its default root).
    plan
        Layout of the local cluster (default :func:`~destvi_core.cluster.plan_local_workers`).
    connect_timeout
        Seconds to wait for an existing scheduler before saying it cannot be reached.
    """

    def __init__(self, address: str | None = None, cache: ModelCache | None = None,
                 plan: WorkerPlan | None = None, connect_timeout: float = 10.0):
        self.address = scheduler_address(address)
        self.connect_timeout = connect_timeout
        self.cache = cache if cache is not None else ModelCache()
        self.plan = plan
        self._client = None
        self._cluster = None
        self._lock = threading.RLock()
        self._client_lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._resources: dict | None = None
        self._counter = itertools.count(1)
        atexit.register(self.close)

    # ------------------------------------------------------------------ cluster
    @property
    def started(self) -> bool:
        return self._client is not None

    @property
    def client(self):
        """The ``distributed.Client`` (connects, or starts the local cluster, on first use)."""
        with self._client_lock:
            if self._client is None:
                if self.address:
                    client = connect(self.address, self.connect_timeout)
                else:
                    from distributed import Client

                    cluster = start_local_cluster(self.plan)
                    try:
                        client = Client(cluster, set_as_default=False)
                    except BaseException:
                        cluster.close()
                        raise
                    self._cluster = cluster
                client.subscribe_topic(PROGRESS_TOPIC, self._on_progress)
                self._client = client
            return self._client

    def start_in_background(self) -> None:
        """Start (or connect to) the cluster in a daemon thread, e.g. while data are being
        prepared for a training that is sure to come; errors resurface on first use."""
        if self._client is None:
            threading.Thread(target=self._quiet_start, name="destvi-cluster-start",
                             daemon=True).start()

    def _quiet_start(self) -> None:
        try:
            self.client  # noqa: B018
        except Exception:  # noqa: BLE001 - the submission reports it
            pass

    def local_worker_threads(self) -> int | None:
        """Torch threads of a local worker (the planned layout), None on a remote cluster."""
        from .cluster import plan_local_workers

        if self.address:
            return None
        return (self.plan or plan_local_workers()).torch_threads

    def describe_cluster(self) -> str:
        """Where jobs run, in words (starts nothing)."""
        if self.address:
            return f"Dask scheduler {self.address}"
        from .cluster import plan_local_workers

        plan = self.plan or plan_local_workers()
        when = "" if self._cluster is not None else "; starts with the first training"
        return f"local cluster ({plan.describe()}{when})"

    def dashboard_link(self) -> str | None:
        """The Dask dashboard (None before the cluster starts, or without bokeh locally)."""
        import importlib.util

        if self._client is None or (self._cluster is not None
                                    and importlib.util.find_spec("bokeh") is None):
            return None
        try:
            return self._client.dashboard_link
        except Exception:  # noqa: BLE001 - no dashboard
            return None

    def close(self) -> None:
        """Cancel what is still running, disconnect, and stop the local cluster if we started it."""
        with self._client_lock:
            client, cluster = self._client, self._cluster
            self._client = self._cluster = None
        for job in self.jobs():
            if job.active:
                if client is not None and self.address:  # nobody would store its model
                    try:
                        from distributed import Event

                        Event(cancel_event_name(job.id), client=client).set()
                    except Exception:  # noqa: BLE001 - best effort on the way out
                        pass
                job._finish("cancelled", "the app's job manager was shut down")
        if client is not None:
            try:
                client.close(timeout=10)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        if cluster is not None:
            try:
                cluster.close(timeout=20)
            except Exception:  # noqa: BLE001
                pass

    def _submit_options(self, priority: int) -> dict:
        """``resources={'train': 1}`` when the cluster's workers declare it (ours do)."""
        if self._resources is None or not self._resources:
            workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
            self._resources = {"resources": {TRAIN_RESOURCE: 1}} if any(
                TRAIN_RESOURCE in (w.get("resources") or {}) for w in workers.values()) else {}
        return {**self._resources, "priority": int(priority), "pure": False}

    # ------------------------------------------------------------------ listing
    def jobs(self) -> list[Job]:
        """Every job submitted through this manager, oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def find(self, key: str, kind: str = "spatial", active_only: bool = False) -> Job | None:
        """The latest job training the cache entry ``key`` (None if there is none)."""
        with self._lock:
            for job in reversed(list(self._jobs.values())):
                if job.cache_key == key and job.kind == kind and (job.active or not active_only):
                    return job
        return None

    def summary(self) -> dict[str, int]:
        """Number of jobs per state."""
        counts = dict.fromkeys(STATES, 0)
        for job in self.jobs():
            counts[job.state] += 1
        return counts

    def jobs_on_scheduler(self) -> list[Job]:
        """Every job any process submitted to this scheduler, rebuilt from its events
        (read-only handles: state, progress, history; :meth:`Job.cancel` works too)."""
        client = self.client
        jobs: dict[str, Job] = {}
        for _, info in client.get_events(JOBS_TOPIC):
            job = Job(info["id"], info["kind"], info["label"], info["cache_key"],
                      section=info.get("section"), data_key=info.get("data_key"),
                      params=info.get("params"), n_epochs=info.get("n_epochs", 0),
                      seed=info.get("seed"), submitted=info.get("submitted"), manager=self)
            job._task_key = info.get("task_key")
            jobs[job.id] = job
        for _, event in client.get_events(PROGRESS_TOPIC):
            if event.get("job") in jobs:
                jobs[event["job"]]._on_event(event)
        return list(jobs.values())

    # ------------------------------------------------------------------ submission
    def _new_job(self, kind, label, key, **info) -> Job:
        job_id = f"{kind[:3]}-{next(self._counter)}-{uuid.uuid4().hex[:8]}"
        return Job(job_id, kind, label, key, manager=self, **info)

    def _done_from_cache(self, job: Job, path) -> Job:
        job.from_cache = True
        job._finish("done", path=path)
        with self._lock:
            self._jobs[job.id] = job
        return job

    def _register(self, job: Job, future, inputs: tuple) -> Job:
        job._future, job._inputs = future, inputs
        job._task_key = future.key
        with self._lock:
            self._jobs[job.id] = job
        self.client.log_event(JOBS_TOPIC, {
            "id": job.id, "kind": job.kind, "label": job.label, "cache_key": job.cache_key,
            "section": job.section, "data_key": job.data_key, "n_epochs": job.n_epochs,
            "seed": job.seed, "submitted": job.submitted, "task_key": str(future.key),
            "params": job.params})
        future.add_done_callback(lambda f, job=job: self._on_done(job, f))
        return job

    def _scatter(self, value):
        return self.client.scatter(value, hash=False)

    def submit_reference(self, sc, labels_key: str, params, *, label: str = "reference",
                         data_key: str | None = None, priority: int = 0, digest: str | None = None,
                         sc_data: _Scattered | None = None) -> Job:
        """Train the reference model (or return the job that has it / is training it)."""
        from .job_tasks import train_reference_task
        from .pipeline import reference_cache_dict
        from .schedule import reference_schedule

        params = params.validate()
        key = reference_key(sc, labels_key, reference_cache_dict(params), digest)
        job = self._new_job("reference", label, key, data_key=data_key,
                            params=params.to_dict(), n_epochs=reference_schedule(sc.n_obs, params).epochs,
                            seed=params.seed)
        if self.cache.has_reference(key):
            return self._done_from_cache(job, self.cache.reference_path(key))
        running = self.find(key, "reference", active_only=True)
        if running is not None:
            return running
        sc_future = (sc_data or _Scattered(self, sc)).future
        future = self.client.submit(train_reference_task, job.id, sc_future, labels_key,
                                    params.to_dict(), {"reference_key": key},
                                    key=f"destvi-reference-{job.id}",
                                    **self._submit_options(priority))
        return self._register(job, future, (sc_future,))

    def submit_pair(self, sc, st, labels_key: str, params, *, section: str | None = None,
                    label: str | None = None, data_key: str | None = None, priority: int = 0,
                    reference: Job | None = None, digest: str | None = None,
                    ref_digest: str | None = None, sc_data: _Scattered | None = None,
                    st_data: _Scattered | None = None) -> Job:
        """Train DestVI on ``st`` (and the reference first unless it is cached or training).

        Returns the spatial job; its ``reference`` attribute is the reference job (None when
        the pair itself was cached). ``digest``: :func:`~destvi_core.cache.data_digest` of
        ``(sc, st)`` when already known.
        """
        from .job_tasks import train_spatial_task
        from .pipeline import spatial_schedule, spatial_seed

        params = params.validate()
        key = cache_key(sc, st, labels_key, params.cache_dict(),
                        digest or data_digest(sc, st, labels_key))
        name = label or (f"section {section}" if section else "spatial model")
        if params.st_seed is not None:
            name += f" · seed {spatial_seed(params)}"
        job = self._new_job("spatial", name, key, section=section, data_key=data_key,
                            params=params.to_dict(), seed=spatial_seed(params),
                            n_epochs=spatial_schedule(st.n_obs, params)[0])
        if key in self.cache:
            return self._done_from_cache(job, self.cache.path(key))
        running = self.find(key, "spatial", active_only=True)
        if running is not None:
            return running
        sc_data = sc_data or _Scattered(self, sc)
        if reference is not None and reference.state == "done" and not (
                reference.path is not None and reference.path.is_dir()):
            reference = None  # its cache entry was removed since: train it again
        if reference is None or reference.state in ("failed", "cancelled"):
            reference = self.submit_reference(sc, labels_key, params, data_key=data_key,
                                              priority=priority, digest=ref_digest,
                                              sc_data=sc_data)
        job.reference = reference
        if reference.state == "done":
            ref_files = self._scatter(_read_folder(reference.path))
        elif reference._future is not None:
            ref_files = reference._future
        else:  # pragma: no cover - a reference job always has a future until it ended
            raise DestVIError("the reference job ended without a model. Fix: train again")
        extra = {"cache_key": key, "reference_key": reference.cache_key, "section": section,
                 "job": job.id}
        sc_future, st_future = sc_data.future, (st_data or _Scattered(self, st)).future
        future = self.client.submit(train_spatial_task, job.id, sc_future, st_future, labels_key,
                                    params.to_dict(), ref_files, extra,
                                    key=f"destvi-spatial-{job.id}",
                                    **self._submit_options(priority))
        return self._register(job, future, (sc_future, st_future, ref_files))

    def submit_sections(self, sc, sections: dict, labels_key: str, params, *, n_seeds: int = 1,
                        data_keys: dict | None = None, priority: int = 0) -> list[Job]:
        """One reference job (shared) and one spatial job per section and seed.

        Returns the spatial jobs, section by section (seeds in order); they all point to the
        same reference job (or to none when every pair was cached). Data go to the cluster
        once, and only when something has to be trained.
        """
        from .cache import hash_matrix

        params = params.validate()
        ref_digest = reference_digest(sc, labels_key)
        sc_hash = hash_matrix(sc.X)
        sc_data = _Scattered(self, sc)
        reference = None
        jobs = []
        for name, st in sections.items():
            digest = data_digest(sc, st, labels_key, sc_hash=sc_hash)
            st_data = _Scattered(self, st)
            for member in ensemble_params(params, n_seeds):
                job = self.submit_pair(sc, st, labels_key, member, section=name,
                                       data_key=(data_keys or {}).get(name), priority=priority,
                                       reference=reference, digest=digest, ref_digest=ref_digest,
                                       sc_data=sc_data, st_data=st_data)
                reference = job.reference or reference
                jobs.append(job)
        return jobs

    # ------------------------------------------------------------------ control
    def cancel(self, job: Job) -> bool:
        """Cancel ``job`` (see :meth:`Job.cancel`); a reference job no other active job needs
        is cancelled with its last spatial job."""
        from distributed import Event, Future

        if not job.active:
            return False
        client = self.client
        Event(cancel_event_name(job.id), client=client).set()
        future = job._future
        if future is None and getattr(job, "_task_key", None):
            future = Future(job._task_key, client)
        if future is not None and job.state == "queued":
            future.cancel(force=True)  # the owner's callback records the state
        ref = job.reference
        if ref is not None and ref.active and not any(
                j.reference is ref and j.active and j is not job for j in self.jobs()):
            self.cancel(ref)
        return True

    # ------------------------------------------------------------------ events
    def _on_progress(self, event) -> None:
        _, message = event
        job = self.get(message.get("job", ""))
        if job is not None:
            job._on_event(message)

    def _on_done(self, job: Job, future) -> None:
        """Runs in Dask's callback thread when a task ended: store the model, set the state."""
        state, message, path = "failed", "", None
        try:
            if future.status == "finished":
                files = future.result()
                path = self.cache.put_files(job.cache_key, files,
                                            reference=job.kind == "reference")
                state = "done"
            elif future.status == "cancelled":
                state, message = "cancelled", "cancelled before it started"
                if job.reference is not None and job.reference.state == "failed":
                    state = "failed"
                    message = f"its reference model failed: {job.reference.message}"
            else:
                error = future.exception()
                if isinstance(error, TrainingCancelled):
                    state, message = "cancelled", one_line(error)
                elif job.reference is not None and job.reference.state in ("failed", "cancelled"):
                    state = job.reference.state
                    message = f"its reference model {job.reference.state}: {job.reference.message}"
                else:
                    message = describe_failure(error)
        except Exception as err:  # noqa: BLE001 - e.g. the cache folder is not writable
            state, message = "failed", "the trained model could not be stored: " + one_line(err)
        job._finish(state, message, path)
        try:
            if self._client is not None:
                self._client.log_event(PROGRESS_TOPIC, {"job": job.id, "state": state,
                                                        "message": message})
        except Exception:  # noqa: BLE001 - other processes then see it as still running
            pass


class _Scattered:
    """Data sent to the cluster once, on first need (``.future``)."""

    def __init__(self, manager: JobManager, value):
        self._manager, self._value, self._future = manager, value, None

    @property
    def future(self):
        if self._future is None:
            self._future = self._manager._scatter(self._value)
        return self._future


def _read_folder(path) -> dict[str, bytes]:
    from .model_files import folder_files

    return folder_files(path)
