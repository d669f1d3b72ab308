"""Pixels of spot maps: geometry, colour look-up tables, and a server-side rasteriser.

Pure numpy / scipy / Pillow (no Streamlit, no Plotly). Used by :mod:`studio_ui.maps` (the
interactive figures) and :mod:`studio_ui.map_export` (PNG / SVG downloads).

The rasteriser paints each pixel with the colour of the nearest spot if that spot is within half
a spot spacing (so spots look like touching discs at any zoom level of the data), transparent
otherwise. The pixel -> spot look-up depends only on the coordinates and the image size, so it is
computed once (k-d tree) and reused for every colouring: recolouring 100,000 spots for a new
threshold is one fancy-indexing step and a PNG encode.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

GREY = (208, 208, 208)
GREY_HEX = "#d0d0d0"


# ------------------------------------------------------------------ geometry
@dataclass(frozen=True)
class Geometry:
    """Axis ranges (data units, y grows downwards as in images), plot size and marker size."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int  # plot area, px
    height: int
    spacing: float  # median distance between neighbouring spots (data units)
    marker_px: float  # spot diameter on screen

    @property
    def px_per_unit(self) -> float:
        return min(self.width / max(self.x1 - self.x0, 1e-9), self.height / max(self.y1 - self.y0, 1e-9))


_SPACING: dict[str, float] = {}


def spot_spacing(x: np.ndarray, y: np.ndarray) -> float:
    """Median nearest-neighbour distance between spots (1 when it cannot be measured), from up
    to 300 spots spread over the list against all spots (plain numpy up to 20,000 spots: no k-d
    tree to import on the way to a small slide's first map); remembered per coordinates."""
    n = len(x)
    if n < 2:
        return 1.0
    key = _coords_digest(x, y)
    if key in _SPACING:
        return _SPACING[key]
    pts = np.c_[x, y].astype(np.float64)
    pts -= pts.mean(0)  # better conditioned squared distances
    sample = pts[np.linspace(0, n - 1, min(n, 300)).astype(int)]
    if n > 20_000:  # large slides need the k-d tree for their raster anyway
        from scipy.spatial import cKDTree

        d, _ = cKDTree(pts).query(sample, k=2)
        best = np.where(d[:, 1] > 0, d[:, 1] ** 2, np.inf)
    else:
        d2 = (sample ** 2).sum(1)[:, None] + (pts ** 2).sum(1)[None, :] - 2.0 * sample @ pts.T
        d2[d2 <= 1e-9 * (float(np.abs(pts).max()) ** 2 + 1e-12)] = np.inf  # itself, duplicates
        best = d2.min(1)
    finite = best[np.isfinite(best)]
    s = float(np.sqrt(np.median(finite))) if finite.size else 1.0
    s = s if s > 0 else 1.0
    if len(_SPACING) > 64:
        _SPACING.clear()
    _SPACING[key] = s
    return s


def geometry(x: np.ndarray, y: np.ndarray, width: int, image: dict | None = None,
             spacing: float | None = None) -> Geometry:
    """Ranges that hold every spot (and the histology image), a height keeping the tissue's
    aspect ratio, and a marker diameter that makes neighbouring spots almost touch."""
    spacing = spot_spacing(x, y) if spacing is None else spacing
    if image is not None:
        x0, x1 = min(x.min(), image["x0"]), max(x.max(), image["x1"])
        y0, y1 = min(y.min(), image["y0"]), max(y.max(), image["y1"])
        pad = 0.0
    else:
        x0, x1, y0, y1 = float(x.min()), float(x.max()), float(y.min()), float(y.max())
        pad = spacing
    x0, x1, y0, y1 = x0 - pad, x1 + pad, y0 - pad, y1 + pad
    rx, ry = max(x1 - x0, 1e-9), max(y1 - y0, 1e-9)
    height = int(np.clip(width * ry / rx, 120, 2.2 * width))
    px = min(width / rx, height / ry)
    marker = float(np.clip(spacing * px * 0.92, 2.0, 40.0))
    return Geometry(float(x0), float(x1), float(y0), float(y1), int(width), height, float(spacing), marker)


# ------------------------------------------------------------------ colours
_LUTS: dict[str, np.ndarray] = {}


def _anchors(name: str) -> list[str]:
    """Colour stops of a sequential scale (Plotly's copies of viridis, magma, ...)."""
    import plotly.colors as pc

    table = {n.lower(): n for n in dir(pc.sequential) if not n.startswith("_")}
    if name.lower() not in table:
        raise ValueError(f"unknown colour scale {name!r}")
    return list(getattr(pc.sequential, table[name.lower()]))


def lut(name: str) -> np.ndarray:
    """``[256, 3]`` uint8 colour table of a sequential scale (viridis, magma, ...), linear
    between the same stops Plotly uses, so rasters, points and colour bars agree."""
    if name not in _LUTS:
        stops = np.array([hex_to_rgb(c) if c.startswith("#") else
                          tuple(int(v) for v in c[c.index("(") + 1:-1].split(",")[:3])
                          for c in _anchors(name)], dtype=np.float64)
        pos = np.linspace(0, 1, len(stops))
        grid = np.linspace(0, 1, 256)
        _LUTS[name] = np.stack([np.interp(grid, pos, stops[:, k]) for k in range(3)], 1).round().astype(np.uint8)
    return _LUTS[name]


def plotly_safe(colors):
    """Colours Streamlit will not rewrite: its Plotly element replaces ``#000000``-``#000040``
    (theme placeholders) anywhere in the figure, so those near-blacks get a red channel of 1."""
    if isinstance(colors, str):
        return "#01" + colors[3:] if colors.lower().startswith("#0000") else colors
    arr = np.asarray(colors).astype("U7")
    hit = np.char.startswith(np.char.lower(arr), "#0000")
    if hit.any():
        arr = arr.copy()
        arr[hit] = np.char.add("#01", np.char.replace(arr[hit], "#0000", "00"))
    return arr


def plotly_colorscale(name: str) -> list[list]:
    """The same scale as a Plotly colour scale (its stops)."""
    stops = [plotly_safe(c) for c in _anchors(name)]
    return [[i / (len(stops) - 1), c] for i, c in enumerate(stops)]


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def continuous_rgba(values: np.ndarray, vmin: float, vmax: float, cmap: str,
                    mask: np.ndarray | None = None, grey_alpha: int = 200) -> np.ndarray:
    """``[n, 4]`` uint8 colours of values on a colormap; spots outside ``mask`` grey."""
    v = np.asarray(values, dtype=np.float64)
    span = max(vmax - vmin, 1e-12)
    codes = np.clip(np.nan_to_num((v - vmin) / span, nan=0.0) * 255, 0, 255).round().astype(np.uint8)
    out = np.empty((len(v), 4), np.uint8)
    out[:, :3] = lut(cmap)[codes]
    out[:, 3] = 255
    if mask is not None:
        off = ~np.asarray(mask, bool)
        out[off, :3] = GREY
        out[off, 3] = grey_alpha
    return out


def categorical_rgba(labels: np.ndarray, colors: dict[str, str], default: str = GREY_HEX) -> np.ndarray:
    """``[n, 4]`` uint8 colours of category labels (unknown labels get ``default``)."""
    labels = np.asarray(labels).astype(str)
    cats, inverse = np.unique(labels, return_inverse=True)
    table = np.array([(*hex_to_rgb(colors.get(c, default)), 255) for c in cats], np.uint8).reshape(-1, 4)
    return table[inverse]


def hex_colors(rgba: np.ndarray) -> np.ndarray:
    """``#rrggbb`` strings of ``[n, >=3]`` uint8 colours (safe to send through Streamlit)."""
    rgb = np.asarray(rgba, np.uint8)[:, :3].astype(np.uint32)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    return plotly_safe(np.char.add("#", np.char.zfill(np.char.mod("%x", packed), 6)))


# ------------------------------------------------------------------ raster
_PIXEL_CACHE: OrderedDict = OrderedDict()
_PIXEL_LOCK = threading.Lock()
_PIXEL_CACHE_SIZE = 24


def _coords_digest(x: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(x, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    return h.hexdigest()


def pixel_spots(x: np.ndarray, y: np.ndarray, geom: Geometry, scale: float = 2.0) -> np.ndarray:
    """``[H, W]`` int32 index of the spot painted in each pixel (-1: none), top row first.

    Cached by coordinates, ranges and size (a few entries), so only the first map of a dataset
    at a given size pays for the k-d tree query.
    """
    w_px, h_px = max(1, int(round(geom.width * scale))), max(1, int(round(geom.height * scale)))
    key = (_coords_digest(x, y), geom.x0, geom.x1, geom.y0, geom.y1, w_px, h_px)
    with _PIXEL_LOCK:
        hit = _PIXEL_CACHE.get(key)
        if hit is not None:
            _PIXEL_CACHE.move_to_end(key)
            return hit
    from scipy.spatial import cKDTree

    xs = geom.x0 + (np.arange(w_px) + 0.5) * (geom.x1 - geom.x0) / w_px
    ys = geom.y0 + (np.arange(h_px) + 0.5) * (geom.y1 - geom.y0) / h_px  # y0 (top) first
    gx, gy = np.meshgrid(xs, ys)
    radius = 0.5 * geom.spacing * 1.02
    d, idx = cKDTree(np.c_[x, y]).query(np.c_[gx.ravel(), gy.ravel()], k=1,
                                         distance_upper_bound=radius, workers=1)
    idx = np.where(np.isfinite(d), idx, -1).astype(np.int32).reshape(h_px, w_px)
    with _PIXEL_LOCK:
        _PIXEL_CACHE[key] = idx
        while len(_PIXEL_CACHE) > _PIXEL_CACHE_SIZE:
            _PIXEL_CACHE.popitem(last=False)
    return idx


def paint(pixels: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    """``[H, W, 4]`` uint8 image: each pixel the colour of its spot (transparent where none)."""
    out = np.zeros(pixels.shape + (4,), np.uint8)
    inside = pixels >= 0
    out[inside] = rgba[pixels[inside]]
    return out


def png_data_url(image: np.ndarray) -> str:
    """PNG data URL of an ``[H, W, 3|4]`` uint8 array (fast compression: maps change often)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def raster_url(x: np.ndarray, y: np.ndarray, geom: Geometry, rgba: np.ndarray, scale: float = 2.0) -> str:
    """The spots painted with ``rgba`` as a PNG data URL covering the geometry's ranges."""
    return png_data_url(paint(pixel_spots(x, y, geom, scale), rgba))


# ------------------------------------------------------------------ hover sample
def spread_sample(x: np.ndarray, y: np.ndarray, n_max: int) -> np.ndarray:
    """Indices of at most ``n_max`` spots spread evenly over the tissue (the first spot of each
    cell of a square grid with about ``n_max`` cells over the bounding box), in increasing
    order; all spots when there are fewer."""
    n = len(x)
    if n <= n_max:
        return np.arange(n)
    span_x, span_y = max(float(np.ptp(x)), 1e-9), max(float(np.ptp(y)), 1e-9)
    side = float(np.sqrt(span_x * span_y / n_max)) * 1.0001
    nx = int(span_x // side) + 1
    cell = ((y - y.min()) // side).astype(np.int64) * nx + ((x - x.min()) // side).astype(np.int64)
    _, first = np.unique(cell, return_index=True)
    return np.sort(first[:n_max])
