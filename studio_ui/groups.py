"""DE group specifications: compact strings (shareable in the URL) → boolean spot masks.

Specs: ``rest`` (group 2 only), ``threshold:<type>``, ``gamma:<axis>:<lo>:<hi>``,
``region:<x0>:<x1>:<y0>:<y1>`` (a box), ``regionset:<name>`` (a saved region: lasso or box,
see the Regions page), ``obs:<column>:<value>``. Masks come from the engine's
group builders (``destvi_core.analysis.group_from_*``).
"""

from __future__ import annotations

import numpy as np

from destvi_core.errors import InputError

from . import loaders, region_state
from .state import LoadedData, LoadedModels

MODES = {"threshold": "Spots containing a cell type (threshold)",
         "gamma": "Range on a gamma axis (sPC)",
         "region": "Box drawn on the map",
         "regionset": "A saved region (lasso or box)",
         "obs": "Annotation column (obs)",
         "rest": "All other spots"}


def mode_of(spec: str | None, default: str) -> str:
    mode = (spec or default).split(":", 1)[0]
    return mode if mode in MODES else default


def parts(spec: str | None) -> list[str]:
    if (spec or "").startswith("regionset:"):
        return [spec.split(":", 1)[1]]  # the name is everything after "regionset:"
    return (spec or "").split(":")[1:]


def free_name(existing, base: str = "drawn on DE page") -> str:
    """A region name not in ``existing`` (``base``, ``base 2``, ...)."""
    name, i = base, 1
    while name in existing:
        i += 1
        name = f"{base} {i}"
    return name


def build_mask(spec: str, models: LoadedModels, data: LoadedData, ct: str, thresholds: dict,
               weighting: str = "outer") -> tuple[np.ndarray | None, str]:
    """``(mask over all spots or None for "rest", plain-words description)``."""
    from destvi_core.analysis import (group_from_gamma_axis, group_from_obs, group_from_spot_names,
                                      group_from_threshold)

    mode, args = mode_of(spec, "rest"), parts(spec)
    spots = loaders.spot_table(models.key, models)
    if mode == "rest":
        return None, "all other spots"
    if mode == "threshold":
        other = args[0] if args and args[0] in thresholds else ct
        mask = group_from_threshold(loaders.proportions(models), other, thresholds[other])
        return mask, f"spots containing {other} (proportion > {thresholds[other]:.3f})"
    if mode == "gamma":
        axis, lo, hi = int(args[0]), float(args[1]), float(args[2])
        ex, _ = loaders.gamma_exploration(models.key, ct, thresholds[ct], weighting, models)
        mask = group_from_gamma_axis(ex.pca.spot_projection, ex.spot_indices, lo, hi,
                                     len(spots), axis=axis)
        return mask, f"{ct} sPC{axis + 1} between {lo:.3g} and {hi:.3g}"
    if mode == "region":
        if len(args) < 4:
            raise InputError("no box is drawn yet", "draw a box on the map below")
        x0, x1, y0, y1 = map(float, args[:4])
        inside = spots["x"].between(min(x0, x1), max(x0, x1)) & spots["y"].between(min(y0, y1), max(y0, y1))
        mask = group_from_spot_names(spots["spot"], spots.loc[inside, "spot"])
        return mask, f"region x {x0:.0f}–{x1:.0f}, y {y0:.0f}–{y1:.0f}"
    if mode == "regionset":
        regions = region_state.regions(len(spots))
        if not args or args[0] not in regions:
            what = f"region {args[0]!r} does not exist (any more)" if args else "no region is chosen"
            raise InputError(what, "save a region on the Regions page (or draw one on the map "
                             "below) and pick it")
        mask = np.asarray(regions[args[0]], bool)
        return mask, f"region '{args[0]}' ({int(mask.sum()):,} spots)"
    if mode == "obs":
        if len(args) < 2:
            raise InputError("no annotation column chosen", "pick a column and a value")
        column, value = args[0], ":".join(args[1:])
        obs = data.st.obs
        if column in obs and obs[column].dtype == bool:
            mask = group_from_obs(obs, column)
        else:
            col = obs[column].astype(str) if column in obs else None
            mask = group_from_obs(obs.assign(**{column: col}) if col is not None else obs, column, value)
        return mask, f"{column} = {value}"
    raise InputError(f"unknown group type {mode!r}", f"use one of {list(MODES)}")
