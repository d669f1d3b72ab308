"""Training jobs on a real local Dask cluster (2 worker processes x 1 thread, conftest.py).

Known answers: a pair trained through jobs equals the pair trained in-process, bit for bit; one
reference serves several sections; re-submitting returns the cached result without a task.
Behaviour: progress from the workers, cancel (queued and running), a late input error and a
lost worker end as failed with a one-line message while the cluster and the cache stay intact,
concurrent submissions queue on single-training workers, another client reads the jobs.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import tiny_params

pytest.importorskip("distributed")

WAIT = 180  # generous: the first task on a worker imports torch


@pytest.fixture(scope="module")
def manager(scheduler_address, tmp_path_factory):
    from destvi_core.cache import ModelCache
    from destvi_core.jobs import JobManager

    mgr = JobManager(scheduler_address, cache=ModelCache(tmp_path_factory.mktemp("job_cache")))
    yield mgr
    for job in mgr.jobs():
        if job.active:
            job.cancel()
    mgr.close()


def _sections(tiny_sim, n: int = 3):
    """``n`` sections cut from the tiny simulation's spots (same genes), prepared together."""
    from destvi_core.sections import prepare_sections

    parts = np.array_split(np.arange(tiny_sim.st.n_obs), n)
    sections = {f"S{i}": tiny_sim.st[idx].copy() for i, idx in enumerate(parts)}
    return prepare_sections(tiny_sim.sc, sections, hvg=False)


def _wait_running(job, timeout: float = WAIT):
    end = time.monotonic() + timeout
    while job.progress is None and job.active and time.monotonic() < end:
        time.sleep(0.2)
    assert job.progress is not None, job.describe()


def test_pair_through_jobs_equals_in_process_training_and_is_cached(manager, tiny_data):
    from destvi_core.persistence import load_models
    from destvi_core.pipeline import train_models

    params = tiny_params(sc_epochs=4, st_epochs=6)
    job = manager.submit_pair(tiny_data.sc, tiny_data.st, "cell_type", params, section="A")
    assert job.kind == "spatial" and job.reference.kind == "reference"
    assert job.wait(WAIT) == "done", job.message
    assert job.reference.state == "done" and job.path.is_dir()
    assert manager.cache.has_reference(job.reference.cache_key)
    _, st_jobs = load_models(job.path, tiny_data.sc, tiny_data.st, device="cpu")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as on the test cluster's workers: same float summation order
    try:
        _, st_direct = train_models(tiny_data.sc, tiny_data.st, "cell_type", params)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(st_jobs.get_proportions().to_numpy(),
                                  st_direct.get_proportions().to_numpy())
    assert len(job.history) >= 1 and job.history[-1]["epoch"] == 6

    n_tasks = len(manager.client.get_events("destvi-studio-jobs"))
    again = manager.submit_pair(tiny_data.sc, tiny_data.st, "cell_type", params, section="A")
    assert again.state == "done" and again.from_cache and again.path == job.path
    assert len(manager.client.get_events("destvi-studio-jobs")) == n_tasks  # no new task


def test_progress_then_cancel_running_job(manager, tiny_data):
    params = tiny_params(sc_epochs=1, st_epochs=100_000, seed=11)
    job = manager.submit_pair(tiny_data.sc, tiny_data.st, "cell_type", params, section="long")
    _wait_running(job)
    time.sleep(1.5)
    p = job.progress
    assert job.state == "running" and p.model == "destvi" and p.n_epochs == 100_000
    assert 0 < p.epoch < p.n_epochs and p.step >= p.epoch and p.eta_s > 0
    assert {"loss", "reconstruction", "kl_local"} <= set(p.loss)
    assert "spatial (DestVI) epoch" in job.describe() and "s left" in job.describe()
    assert job.cancel()
    assert job.wait(60) == "cancelled"
    assert "cancelled" in job.message
    assert job.cache_key not in manager.cache  # nothing written
    assert not job.cancel()  # already ended


def test_concurrent_submissions_queue_and_a_queued_job_can_be_cancelled(manager, tiny_data):
    """Three long trainings on two single-training workers: two run (each alone on its
    worker, one torch thread), the third waits; cancelling it means it never starts."""
    # one shared reference (st_seed varies the spatial model only), so the order is fixed:
    # the reference, then two spatial jobs at once, the third waits
    long = [tiny_params(sc_epochs=1, st_epochs=100_000, st_seed=20 + i) for i in range(3)]
    jobs = [manager.submit_pair(tiny_data.sc, tiny_data.st, "cell_type", p, section=f"q{i}")
            for i, p in enumerate(long)]
    try:
        for job in jobs[:2]:
            _wait_running(job)
        time.sleep(1.0)
        assert jobs[2].state == "queued" and jobs[2].progress is None
        events = [m for _, m in manager.client.get_events("destvi-studio-progress")
                  if m.get("job") in {j.id for j in jobs} and "threads" in m]
        assert {m["threads"] for m in events} == {1}
        assert len({m["worker"] for m in events if m["job"] in (jobs[0].id, jobs[1].id)}) == 2
        assert jobs[2].cancel()
        assert jobs[2].wait(60) == "cancelled"
        assert jobs[2].message == "cancelled before it started"
    finally:
        for job in jobs:
            job.cancel()
    for job in jobs:
        assert job.wait(60) == "cancelled"


def test_late_input_error_fails_with_message_and_cluster_stays_usable(manager, tiny_data):
    bad = tiny_params(sc_epochs=2, st_epochs=2, amortization="sideways", seed=3)
    job = manager.submit_pair(tiny_data.sc, tiny_data.st, "cell_type", bad, section="bad")
    assert job.wait(WAIT) == "failed"
    assert job.message.startswith("unknown amortization 'sideways'") and "Fix:" in job.message
    assert "\n" not in job.message
    assert job.reference.state == "done"  # the reference was fine and is kept
    assert job.cache_key not in manager.cache
    good = manager.submit_pair(tiny_data.sc, tiny_data.st, "cell_type",
                               tiny_params(sc_epochs=2, st_epochs=2, seed=3), section="good")
    assert good.reference is None or good.reference.from_cache  # same reference, not retrained
    assert good.wait(WAIT) == "done", good.message


def test_lost_worker_fails_the_job_with_message(manager, tiny_data):
    import os
    import signal

    params = tiny_params(sc_epochs=1, st_epochs=100_000, seed=31)
    job = manager.submit_pair(tiny_data.sc, tiny_data.st, "cell_type", params, section="lost")
    _wait_running(job)
    worker = next(m["worker"] for _, m in manager.client.get_events("destvi-studio-progress")
                  if m.get("job") == job.id and "worker" in m)
    pid = manager.client.run(os.getpid, workers=[worker])[worker]
    os.kill(pid, signal.SIGKILL)  # as the kernel's out-of-memory killer would
    assert job.wait(WAIT) == "failed"
    assert "worker running it died" in job.message and "Fix:" in job.message
    assert job.cache_key not in manager.cache
    deadline = time.monotonic() + WAIT  # the nanny restarts the worker
    while len(manager.client.scheduler_info()["workers"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    after = manager.submit_pair(tiny_data.sc, tiny_data.st, "cell_type",
                                tiny_params(sc_epochs=1, st_epochs=2, seed=31), section="after")
    assert after.wait(WAIT) == "done", after.message


def test_sections_train_one_reference_and_another_client_sees_the_jobs(manager, tiny_sim,
                                                                        scheduler_address):
    from destvi_core.jobs import JobManager

    prepared = _sections(tiny_sim, 3)
    params = tiny_params(sc_epochs=3, st_epochs=3, seed=5)
    jobs = manager.submit_sections(prepared.sc, prepared.sections, "cell_type", params,
                                   n_seeds=2)
    assert [(j.section, j.seed) for j in jobs] == [(s, k) for s in ("S0", "S1", "S2")
                                                     for k in (5, 6)]
    assert len({id(j.reference) for j in jobs}) == 1  # one reference for all
    for job in jobs:
        assert job.wait(WAIT) == "done", job.message
    assert len({j.cache_key for j in jobs}) == 6
    seeds = [manager.cache.proportions(j.cache_key, prepared.sections["S0"].obs_names)
             for j in jobs[:2]]
    assert not np.allclose(seeds[0].to_numpy(), seeds[1].to_numpy())  # seeds differ

    other = JobManager(scheduler_address, cache=manager.cache)
    try:
        seen = {j.id: j for j in other.jobs_on_scheduler()}
        for job in jobs + [jobs[0].reference]:
            assert seen[job.id].state == "done" and seen[job.id].label == job.label
        assert seen[jobs[0].id].history  # the progress reports came through the scheduler
    finally:
        other.close()
