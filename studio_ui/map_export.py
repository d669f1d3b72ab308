"""PNG / SVG downloads of spatial maps, drawn on the server with matplotlib (no browser, no kaleido).

Every spot is painted with its colour (whatever the on-screen rendering was) by the same
nearest-spot rasteriser as the large maps, at the output resolution, and placed as an image:
inside the SVG too, so a 100,000-spot map stays a small file that opens quickly, while titles,
colour bars and legends stay vector text. Only called when a download button is clicked.
"""

from __future__ import annotations

import base64
import io

import numpy as np

from .maps import SpotMap


def _decode_image(url: str) -> np.ndarray:
    from PIL import Image

    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def render(spot_map: SpotMap, fmt: str = "png", presentation: bool = False) -> bytes:
    """The map as PNG (200 dpi) or SVG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from .map_render import geometry, lut, paint, pixel_spots

    x, y = spot_map.x, spot_map.y
    dpi = 200 if fmt == "png" else 150
    n = len(spot_map.panels)
    cols = max(1, min(spot_map.columns, n))
    rows = int(np.ceil(n / cols))
    panel_w = 4.2 if n == 1 else 3.0
    geom = geometry(x, y, int(panel_w * dpi), spot_map.image)
    aspect = (geom.y1 - geom.y0) / max(geom.x1 - geom.x0, 1e-9)
    has_key = any(p.colorbar or p.legend for p in spot_map.panels)
    extra = 1.6 if (n == 1 and has_key) else 0.9
    fig = Figure(figsize=(cols * (panel_w + extra), rows * (panel_w * aspect + 0.6)), dpi=100)
    label_size, title_size = (15, 18) if presentation else (10, 12)
    pixels = pixel_spots(x, y, geom, scale=1.0)
    for i, panel in enumerate(spot_map.panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        if spot_map.image is not None:
            ax.imshow(_decode_image(spot_map.image["url"]), alpha=0.8, zorder=0,
                      extent=(spot_map.image["x0"], spot_map.image["x1"], spot_map.image["y1"], spot_map.image["y0"]))
        ax.imshow(paint(pixels, panel.rgba), extent=(geom.x0, geom.x1, geom.y1, geom.y0),
                  interpolation="nearest", zorder=1)
        ax.set_xlim(geom.x0, geom.x1)
        ax.set_ylim(geom.y1, geom.y0)
        ax.set_aspect("equal")
        ax.set_axis_off()
        ax.set_title(panel.title if n > 1 else spot_map.title, fontsize=title_size, loc="left")
        if panel.colorbar is not None:
            cmap, vmin, vmax, label = panel.colorbar
            bar = fig.colorbar(ScalarMappable(Normalize(vmin, vmax), ListedColormap(lut(cmap) / 255)), ax=ax,
                               fraction=0.046, pad=0.03)
            bar.set_label(label, fontsize=label_size)
            bar.ax.tick_params(labelsize=label_size - 1)
        if panel.legend:
            handles = [Line2D([], [], marker="o", linestyle="", markersize=8, markerfacecolor=c,
                              markeredgewidth=0, label=lab) for lab, c in panel.legend]
            ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False,
                      fontsize=label_size)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    return buf.getvalue()
