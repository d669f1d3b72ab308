"""Simulated single-cell reference + Visium-like spatial data with known truth.

The generator follows the DestVI paper (spec section 5.1): smooth spatial random fields drive the
cell-type proportions (softmax with a temperature) and a continuous cell state ``gamma`` per cell
type; expression is log-linear in ``gamma``; counts are Gamma-Poisson (negative binomial).

Layout of the returned data (:class:`SimulatedData`)
----------------------------------------------------
``sc`` (reference, cells x genes)
    ``X`` raw integer counts (float32 CSR); ``obs['cell_type']`` categorical; ``obs['region']``
    region of the cell's (hidden) location; ``obsm['true_gamma']`` ``[n_cells, n_latent]`` state
    of each cell (for its own type).
``st`` (spots x genes)
    ``X`` raw integer counts (float32 CSR); ``obsm['spatial']`` float64 ``[S, 2]`` pixel-like
    coordinates on a hexagonal grid (spot spacing 100); ``obs['array_row']``, ``obs['array_col']``;
    ``obs['region']`` categorical; ``obsm['true_proportions']`` DataFrame ``[S, C]`` (index = spot
    names, columns = cell types, rows sum to 1: realised cell frequencies);
    ``obsm['true_gamma_<type>']`` ``[S, n_latent]`` state of that type at each spot (one key per
    cell type, exact type name); ``uns['simulation']`` generator parameters (see
    :func:`true_scale_for_ct`).
``gene_sets``
    ``PLANTED_<TYPE>_STATE<k>_UP`` / ``_DOWN`` (genes loading strongly on gamma dimension ``k`` of
    that type), ``PLANTED_<TYPE>_REGION_<REGION>_UP`` (genes up in that type inside a region), and
    ``DECOY_<nn>`` random sets of similar size. ``<TYPE>`` is the type name upper-cased with
    non-alphanumerics replaced by ``_`` (see :func:`set_label`).

Large slides (Visium HD sizes) are tiles of a simulation: :func:`tile_spatial` and
:func:`tiled_simulation`; :func:`write_visium_hd` writes one as a Space Ranger HD folder.

This module is the public face of :mod:`destvi_core.simulation` (split by meaning: ``base``,
``fields``, ``generic``, ``demo``, ``paper``, ``gmt``, ``tiling``, ``visium_hd``); import from
here.
"""

from __future__ import annotations

from .simulation.base import (SPOT_SPACING, SimulatedData, set_label, softmax, true_gamma_key,
                              true_scale_for_ct)
from .simulation.demo import (DEMO_REGIONS, DEMO_TYPES, demo_dataset, tutorial_size_simulation,
                              write_demo)
from .simulation.fields import SmoothField, gamma_poisson, gp_draws, hex_grid
from .simulation.generic import simulate_destvi
from .simulation.gmt import read_gmt, write_gmt
from .simulation.paper import paper_simulation
from .simulation.tiling import TUTORIAL_BASE, tile_spatial, tiled_simulation
from .simulation.visium_hd import write_10x_h5, write_visium_hd

__all__ = [
    "SPOT_SPACING", "SimulatedData", "set_label", "softmax", "true_gamma_key",
    "true_scale_for_ct", "DEMO_REGIONS", "DEMO_TYPES", "demo_dataset",
    "tutorial_size_simulation", "write_demo", "SmoothField", "gamma_poisson", "gp_draws",
    "hex_grid", "simulate_destvi", "read_gmt", "write_gmt", "paper_simulation",
    "TUTORIAL_BASE", "tile_spatial", "tiled_simulation", "write_10x_h5", "write_visium_hd",
]
