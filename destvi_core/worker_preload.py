"""Imported by every worker of the local cluster when it starts (Dask ``preload``): torch,
AnnData and scikit-learn load while the app is still preparing data, so the first training
task starts at once. Sets the worker's torch threads (``$DESTVI_TORCH_THREADS``)."""

from __future__ import annotations


def dask_setup(worker) -> None:  # noqa: ARG001 - Dask's preload hook
    import anndata  # noqa: F401
    import sklearn.cluster  # noqa: F401

    from .cluster import configure_worker_threads
    from .job_tasks import PROGRESS_TOPIC  # noqa: F401
    from .persistence import save_models  # noqa: F401  (imports torch and the models)

    configure_worker_threads()
