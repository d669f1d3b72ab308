"""Downstream analysis of a fitted DestVI model (destvi_utils equivalents, spec section 4).

Every function returns data (DataFrames, arrays, small dataclasses); the app draws them.
"""

from .colocalisation import (
    blend_colors,
    blend_legend,
    cooccurrence_scores,
    strongest_pairs,
    within_spot_correlation,
)
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
from .fit_quality import FitSummary, spot_fit_quality, summarize_fit_quality
from .export import bundle_zip, export_bundle, json_safe, package_versions, safe_name
from .regions import (
    RegionComparison,
    check_region_name,
    decode_mask,
    encode_mask,
    region_composition,
    region_labels,
    spots_in_box,
    spots_in_polygon,
)
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
    "blend_colors", "blend_legend", "cooccurrence_scores", "strongest_pairs",
    "within_spot_correlation",
    "FitSummary", "spot_fit_quality", "summarize_fit_quality",
    "RegionComparison", "check_region_name", "decode_mask", "encode_mask", "region_composition",
    "region_labels", "spots_in_box", "spots_in_polygon",
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
