"""One fixed colour per cell type across the whole app (colour-blind-friendly)."""

from __future__ import annotations

from collections.abc import Iterable

# Okabe-Ito (minus black), then Paul Tol "muted" and "light" qualitative schemes.
_BASE = [
    "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999",
    "#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255",
    "#AA4499", "#77AADD", "#EE8866", "#BBCC33", "#FFAABB", "#44BB99", "#AAAA00", "#EEDD88",
]


def type_colors(cell_types: Iterable[str]) -> dict[str, str]:
    """Map cell types (sorted by name) to fixed hex colours.

    The same set of types always gives the same mapping, whatever the order they arrive in.
    More than 24 types cycle through the palette.
    """
    names = sorted({str(t) for t in cell_types})
    return {name: _BASE[i % len(_BASE)] for i, name in enumerate(names)}


def color_scale_args(cell_types: Iterable[str]) -> dict[str, list[str]]:
    """``domain``/``range`` arguments for ``alt.Scale`` with the fixed type colours."""
    colors = type_colors(cell_types)
    return {"domain": list(colors), "range": list(colors.values())}
