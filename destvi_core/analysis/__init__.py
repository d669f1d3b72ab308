"""Downstream analysis of a fitted DestVI model (destvi_utils equivalents, spec section 4).

Every function returns data (DataFrames, arrays, small dataclasses); the app draws them.
"""

from .de import (
    DEResult,
    benjamini_hochberg,
    de_genes,
    fc_cutoff_gmm,
    group_from_gamma_axis,
    group_from_obs,
    group_from_spot_names,
    group_from_threshold,
    ks_2samp_columns,
    significance,
)
from .enrichment import ENRICHMENT_COLUMNS, EnrichmentResult, enrich, enrich_auto, enrichr_reachable
from .export import bundle_zip, export_bundle, json_safe, package_versions, safe_name
from .spatial_pca import (
    GammaExploration,
    SpatialPCAResult,
    axis_genes,
    colormap_2d,
    colormap_legend,
    explore_gamma,
    log_normalize,
    project_cells,
    spatial_pca,
)
from .thresholds import (
    ThresholdResult,
    apply_thresholds,
    automatic_thresholds,
    spatial_knn_weights,
    spots_containing,
    threshold_curve,
)

__all__ = [
    "DEResult", "benjamini_hochberg", "de_genes", "fc_cutoff_gmm", "group_from_gamma_axis",
    "group_from_obs", "group_from_spot_names", "group_from_threshold", "ks_2samp_columns",
    "significance",
    "ENRICHMENT_COLUMNS", "EnrichmentResult", "enrich", "enrich_auto", "enrichr_reachable",
    "bundle_zip", "export_bundle", "json_safe", "package_versions", "safe_name",
    "GammaExploration", "SpatialPCAResult", "axis_genes", "colormap_2d", "colormap_legend",
    "explore_gamma", "log_normalize", "project_cells", "spatial_pca",
    "ThresholdResult", "apply_thresholds", "automatic_thresholds", "spatial_knn_weights",
    "spots_containing", "threshold_curve",
]
