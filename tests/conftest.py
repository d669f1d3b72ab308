"""Shared tiny-data fixtures for the model, persistence and CLI tests.

Everything here is small (150 spots, 600 cells, 200 genes, 4 types) and trains for a few epochs
on the CPU so that the whole model suite runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import pytest

TINY_SIM = dict(n_spots=150, n_cells=600, n_types=4, n_genes=200, n_latent=2, seed=0,
                n_markers=20, program_size=10, n_decoys=3)


def tiny_params(**overrides):
    """Training parameters for a seconds-long CPU run on :func:`tiny_data`."""
    from destvi_core.pipeline import TrainingParams

    values = dict(sc_epochs=3, st_epochs=3, n_hidden=32, n_latent=3, vamp_prior_p=5,
                  device="cpu", seed=0)
    values.update(overrides)
    return TrainingParams(**values)


@pytest.fixture(scope="session")
def tiny_sim():
    """Raw simulated reference + spatial data (``SimulatedData``); do not modify."""
    from destvi_core.simulate import simulate_destvi

    return simulate_destvi(**TINY_SIM)


@pytest.fixture(scope="session")
def tiny_data(tiny_sim):
    """Prepared (validated, same ordered genes, counts in X) tiny pair; do not modify."""
    from destvi_core.data import prepare_inputs

    return prepare_inputs(tiny_sim.sc, tiny_sim.st, labels_key="cell_type", hvg=False)


@pytest.fixture(scope="session")
def tiny_models(tiny_data):
    """``(sc_model, st_model)`` trained with :func:`tiny_params`; read-only use only."""
    from destvi_core.pipeline import train_models

    return train_models(tiny_data.sc, tiny_data.st, "cell_type", tiny_params())


@pytest.fixture(scope="session")
def dask_cluster():
    """A real local Dask cluster for the job tests: 2 worker processes x 1 torch thread, built
    by the product's own :func:`destvi_core.cluster.start_local_cluster` (resource train=1,
    no retry of a task that killed its worker). Shut down at the end of the session."""
    from destvi_core.cluster import WorkerPlan, start_local_cluster

    cluster = start_local_cluster(WorkerPlan(2, 1, (None, None)))
    try:
        yield cluster
    finally:
        cluster.close(timeout=30)


@pytest.fixture(scope="session")
def scheduler_address(dask_cluster) -> str:
    return dask_cluster.scheduler_address
