"""The local cluster's layout, the scheduler address, and the app's torch- and dask-free path."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from destvi_core.cluster import (SCHEDULER_ENV, THREADS_ENV, WORKERS_ENV, plan_local_workers,
                                 scheduler_address)
from destvi_core.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    for name in (SCHEDULER_ENV, WORKERS_ENV, THREADS_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("cores, workers, threads", [(1, 1, 1), (2, 2, 1), (4, 4, 1),
                                                     (8, 4, 2), (16, 8, 2), (64, 16, 4)])
def test_cpu_plan_never_oversubscribes(cores, workers, threads):
    plan = plan_local_workers(cores=cores, gpus=0)
    assert (plan.n_workers, plan.torch_threads) == (workers, threads)
    assert plan.n_workers * plan.torch_threads <= cores
    assert plan.gpus == (None,) * workers


def test_one_worker_per_gpu_pinned():
    plan = plan_local_workers(cores=16, gpus=4)
    assert plan.n_workers == 4 and plan.gpus == (0, 1, 2, 3)
    assert plan.n_workers * plan.torch_threads <= 16
    assert "4 GPU workers" in plan.describe()
    from destvi_core.cluster import _worker_env

    env = _worker_env(plan, 2)
    assert env["CUDA_VISIBLE_DEVICES"] == "2" and env["DESTVI_TORCH_THREADS"] == "4"


def test_user_overrides_are_capped_by_the_cores(monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "8")
    monkeypatch.setenv(THREADS_ENV, "2")
    plan = plan_local_workers(cores=4, gpus=0)
    assert (plan.n_workers, plan.torch_threads) == (2, 2)
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(InputError, match=r"\$DESTVI_STUDIO_THREADS must be a whole number"):
        plan_local_workers(cores=4, gpus=0)


def test_scheduler_address_from_argument_or_environment(monkeypatch):
    assert scheduler_address() is None
    assert scheduler_address("10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    monkeypatch.setenv(SCHEDULER_ENV, "tls://head:8786")
    assert scheduler_address() == "tls://head:8786"
    assert scheduler_address("tcp://other:1") == "tcp://other:1"


def test_unreachable_scheduler_is_a_clear_error():
    from destvi_core.jobs import JobManager

    manager = JobManager("tcp://127.0.0.1:9", connect_timeout=1)  # nothing listens there
    with pytest.raises(InputError, match=r"could not reach the Dask scheduler at "
                                         r"tcp://127.0.0.1:9 .* Fix:"):
        _ = manager.client
    manager.close()


def test_job_manager_and_listing_import_neither_dask_nor_torch():
    """The app creates its job manager and lists jobs on every page: that path must stay as
    light as the first map's (no distributed, no torch) until something is submitted."""
    code = textwrap.dedent("""
        import sys
        from destvi_core.jobs import JobManager
        from destvi_core.cache import ModelCache
        m = JobManager(cache=ModelCache("/nonexistent"))
        m.jobs(); m.summary(); m.find("0" * 64)
        print("distributed" in sys.modules, "torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"


def test_readme_slurm_recipe_renders_a_gpu_job_with_one_training_per_worker():
    """The README's dask-jobqueue recipe (same arguments): one GPU per SLURM job, one worker
    process with 4 threads declaring train=1. Rendering the job script submits nothing."""
    jobqueue = pytest.importorskip("dask_jobqueue")
    readme = (ROOT / "README.md").read_text()
    for text in ('job_extra_directives=["--gres=gpu:1"]',
                 'worker_extra_args=["--resources", "train=1"]', "cores=4, processes=1"):
        assert text in readme
    cluster = jobqueue.SLURMCluster(
        queue="gpu", cores=4, processes=1, memory="32GB", walltime="04:00:00",
        job_extra_directives=["--gres=gpu:1"], worker_extra_args=["--resources", "train=1"],
        job_script_prologue=["export PYTHONPATH=~/destvi-studio"],
        scheduler_options={"host": "127.0.0.1", "port": 0, "dashboard_address": None})
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:1" in script and "--resources train=1" in script
    assert "--nthreads 4" in script and "--nworkers" not in script  # one worker process
