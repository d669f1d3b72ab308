"""'Export everything': gathers this session's results and calls destvi_core.analysis.export."""

from __future__ import annotations

import tempfile
from collections.abc import Callable

from . import loaders, state


def available() -> bool:
    try:
        from destvi_core.analysis.export import bundle_zip, export_bundle  # noqa: F401
    except ImportError:
        return False
    return True


def session_results() -> dict:
    """DE / enrichment / sPCA results computed in this session (name -> table)."""
    return {"de": dict(state.flag("de_results", {}) or {}),
            "enrichment": dict(state.flag("enrichment_results", {}) or {}),
            "spca": dict(state.flag("spca_results", {}) or {})}


def bundle_callable(models: state.LoadedModels) -> Callable[[], bytes]:
    """A zero-argument function building the zip; everything from the session is captured now
    (the download runs outside the script run)."""
    from destvi_core.analysis.export import bundle_zip, export_bundle

    from .ui import current_thresholds

    spots = loaders.spot_table(models.key, models)
    types = loaders.cell_types(models)
    proportions = spots[types].set_index(spots["spot"])
    thresholds = current_thresholds(models)
    results = session_results()
    data = state.data()
    parameters = {"training": models.params, "model_key": models.key,
                  "threshold_kind": state.threshold_kind(), "thresholds": thresholds,
                  "data_source": data.source if data else None,
                  "labels_key": data.labels_key if data else None}

    def build() -> bytes:
        gamma = models.st_model.get_gamma()
        with tempfile.TemporaryDirectory() as tmp:
            export_bundle(tmp, models.st_model.adata, proportions, thresholds=thresholds,
                          gamma=gamma, spca=results["spca"] or None, de_results=results["de"] or None,
                          enrichment=results["enrichment"] or None, parameters=parameters)
            return bundle_zip(tmp)

    return build
