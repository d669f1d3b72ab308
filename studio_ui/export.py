"""'Export everything': gathers this session's results and calls destvi_core.analysis.export."""

from __future__ import annotations

import tempfile
from collections.abc import Callable

from . import loaders, region_state, state


def session_results() -> dict:
    """DE / enrichment / sPCA results computed in this session (name -> table)."""
    return {"de": dict(state.flag("de_results", {}) or {}),
            "enrichment": dict(state.flag("enrichment_results", {}) or {}),
            "spca": dict(state.flag("spca_results", {}) or {})}


def bundle_callable(models: state.LoadedModels) -> Callable[[], bytes]:
    """A zero-argument function building the zip.

    The session's choices (threshold kind and overrides, results) are captured now, because
    the download runs outside the script run; everything heavy (automatic thresholds, gamma,
    the engine's export module) happens only when the user clicks.
    """
    kind, overrides = state.threshold_kind(), dict(state.thresholds())
    results = session_results()
    data = state.data()
    spots = loaders.spot_table(models.key, models)
    types = loaders.cell_types(models)
    proportions = loaders.proportions(models)
    regions = dict(region_state.regions(len(spots)))
    source = (data.source, data.labels_key) if data else (None, None)

    def build() -> bytes:
        from destvi_core.analysis.export import bundle_zip, export_bundle

        thresholds = loaders.merged_thresholds(loaders.compute_auto_thresholds(spots, types),
                                               kind, overrides)
        parameters = {"training": models.params, "model_key": models.key,
                      "threshold_kind": kind, "thresholds": thresholds,
                      "data_source": source[0], "labels_key": source[1]}
        gamma = models.st_model.get_gamma()
        with tempfile.TemporaryDirectory() as tmp:
            export_bundle(tmp, models.st_model.adata, proportions, thresholds=thresholds,
                          gamma=gamma, spca=results["spca"] or None, de_results=results["de"] or None,
                          enrichment=results["enrichment"] or None, parameters=parameters,
                          regions=regions or None)
            return bundle_zip(tmp)

    return build
