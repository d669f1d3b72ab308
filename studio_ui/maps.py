"""Spatial maps of spots as Plotly figures, fast from 1,000 to 100,000+ spots (pure: no Streamlit).

Three renderings, chosen by the number of spots (thresholds measured with bench/bench_app.py;
see the README, "Maps that scale"):

* ``svg`` (up to :data:`SVG_MAX` spots): Plotly ``scatter``; every spot is hoverable and the
  page may hold many maps (SVG uses no WebGL context; browsers allow ~16 of those per page).
* ``gl`` (up to :data:`POINTS_MAX`): WebGL ``scattergl`` for the one or two large maps of a page.
* ``raster`` (above, and for many-map views at any size): the spots are painted server-side into
  an image (:mod:`studio_ui.map_render`), under a transparent layer of at most :data:`HOVER_MAX`
  evenly spread spots that carries the hover (a nearby spot's values) and the lasso.

Every figure has the same colours (fixed per cell type), hover (spot, dominant type, every
proportion and its seed spread when the spot table has ``sd:<type>`` columns), zoom/pan, and the
histology image under the spots. Selections come back as shapes (lasso paths, boxes) and
:func:`selection_mask` turns them into a mask over *all* spots on the server, so a selection is
exact in every rendering and the browser never ships 100,000 selected points back.

Every builder returns a :class:`SpotMap`: the figure plus per-spot colours, from which
:mod:`studio_ui.map_export` draws the PNG / SVG downloads without the browser.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import map_render as mr
from .palette import type_colors

SVG_MAX = 3_000
POINTS_MAX = 10_000
HOVER_MAX = 6_000
HOVER_MAX_MANY = 1_000  # maps shown many to a page (threshold maps): a light SVG hover layer
FONT = "Source Sans Pro, sans-serif"
GREY = mr.GREY_HEX
hex_colors = mr.hex_colors
GROUP_COLORS = {"group 1": "#D55E00", "group 2": "#0072B2", "not used": GREY}


@dataclass
class Panel:
    """One map panel as the downloads draw it: a colour per spot and its key."""

    title: str
    rgba: np.ndarray  # [n, 4] uint8 (alpha 0 = not drawn)
    colorbar: tuple[str, float, float, str] | None = None  # (cmap, vmin, vmax, label)
    legend: list[tuple[str, str]] | None = None  # (label, hex colour)
    order: np.ndarray | None = None  # drawing order (e.g. grey spots first)


@dataclass
class SpotMap:
    """A spatial map: the Plotly figure and what the downloads need."""

    figure: dict
    title: str
    x: np.ndarray
    y: np.ndarray
    panels: list[Panel]
    kind: str  # "svg", "gl" or "raster"
    image: dict | None = None
    selectable: bool = False
    columns: int = 1
    trace_spots: list[np.ndarray | None] = field(default_factory=list)  # spot index per trace point

    @property
    def n_spots(self) -> int:
        return len(self.x)


def render_kind(n_spots: int, many: bool = False) -> str:
    """``svg`` / ``gl`` / ``raster`` for a map of ``n_spots`` (``many``: one of many on a page).

    ``DESTVI_STUDIO_MAPS=svg|gl|raster`` forces one rendering (benchmarks; a browser without
    WebGL), except that pages with many maps never use WebGL.
    """
    forced = os.environ.get("DESTVI_STUDIO_MAPS", "").strip().lower()
    if forced in ("svg", "gl", "raster"):
        return "raster" if forced == "gl" and many else forced
    if n_spots <= SVG_MAX:
        return "svg"
    if n_spots <= POINTS_MAX and not many:
        return "gl"
    return "raster"


# ------------------------------------------------------------------ hover
def _hover(spots: pd.DataFrame, types: list[str], idx: np.ndarray, value: np.ndarray | None = None,
           value_label: str | None = None, sampled: bool = False) -> dict:
    """Trace fields showing spot, dominant type, the mapped value and every proportion (± sd)."""
    names = spots["spot"].to_numpy().astype(str)[idx]
    text = names
    if "dominant" in spots:
        text = np.char.add(np.char.add(names, "<br>dominant: "), spots["dominant"].to_numpy().astype(str)[idx])
    cols, lines = [], []
    if value is not None:
        cols.append(np.asarray(value, dtype=np.float32)[idx])
        lines.append(f"<b>{value_label or 'value'}: %{{customdata[0]:.3g}}</b>")
    shown = [t for t in types if t in spots]
    sd = [f"sd:{t}" for t in shown if f"sd:{t}" in spots]
    for t in shown:
        j = len(cols)
        cols.append(spots[t].to_numpy(dtype=np.float32)[idx])
        line = f"{t}: %{{customdata[{j}]:.2f}}"
        if f"sd:{t}" in spots:
            cols.append(spots[f"sd:{t}"].to_numpy(dtype=np.float32)[idx])
            line += f" ± %{{customdata[{j + 1}]:.2f}}"
        lines.append(line)
    out: dict = {"hovertext": text}
    head = "<b>%{hovertext}</b>" + ("<br><i>a spot near the pointer</i>" if sampled else "")
    if cols:
        out["customdata"] = np.ascontiguousarray(np.stack(cols, axis=1))
        out["hovertemplate"] = head + "<br>" + "<br>".join(lines) + ("<br>(± sd over seeds)" if sd else "") + "<extra></extra>"
    else:
        out["hovertemplate"] = head + "<extra></extra>"
    return out


# ------------------------------------------------------------------ figure shell
def _layout(geom: mr.Geometry, title: str, image: dict | None, legend: bool, colorbar: bool,
            selectable: bool) -> dict:
    right = 130 if legend else (90 if colorbar else 10)
    layout = {
        "width": geom.width + right + 10, "height": geom.height + 50,
        "margin": {"l": 5, "r": right, "t": 40, "b": 5},
        "title": {"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 15}},
        "font": {"family": FONT, "size": 12},
        "xaxis": {"range": [geom.x0, geom.x1], "visible": False, "constrain": "domain"},
        "yaxis": {"range": [geom.y1, geom.y0], "visible": False, "scaleanchor": "x",
                  "scaleratio": 1, "constrain": "domain"},
        "plot_bgcolor": "white", "paper_bgcolor": "white",
        "dragmode": "pan",
        "hovermode": "closest", "hoverlabel": {"font": {"size": 12}},
        "showlegend": legend,
        "legend": {"x": 1.02, "y": 1, "xanchor": "left", "font": {"size": 12},
                   "itemsizing": "constant"},
        "images": [],
        "uirevision": "keep",  # keep the user's zoom when the map is redrawn
        "template": "none",  # every style is explicit; Streamlit's theme template only adds weight
    }
    if image is not None:
        layout["images"].append(_image(image["url"], image, opacity=0.8))
    return layout


def _image(url: str, extent, opacity: float = 1.0, xref: str = "x", yref: str = "y",
           layer: str = "below") -> dict:
    """A layout image over ``extent`` (data units, top-left anchored on the reversed y axis).
    Spot rasters go ``above`` the traces: two images in the same ``below`` layer leave the
    later one hidden under the first (measured with the histology underlay)."""
    x0, x1, y0, y1 = (extent["x0"], extent["x1"], extent["y0"], extent["y1"]) if isinstance(extent, dict) \
        else (extent.x0, extent.x1, extent.y0, extent.y1)
    return {"source": url, "xref": xref, "yref": yref, "x": x0, "y": y0, "sizex": x1 - x0,
            "sizey": y1 - y0, "xanchor": "left", "yanchor": "top", "sizing": "stretch",
            "layer": layer, "opacity": opacity}


def _marker_trace(kind: str, x, y, **fields) -> dict:
    return {"type": "scatter" if kind == "svg" else "scattergl", "mode": "markers",
            "x": np.asarray(x, np.float32), "y": np.asarray(y, np.float32), **fields}


def _colorbar_trace(cmap: str, vmin: float, vmax: float, label: str, length: int) -> dict:
    """A pointless trace whose only job is the colour bar (raster maps have no coloured trace)."""
    return {"type": "scatter", "mode": "markers", "x": [None], "y": [None], "hoverinfo": "skip",
            "showlegend": False,
            "marker": {"color": [vmin], "colorscale": mr.plotly_colorscale(cmap), "cmin": vmin,
                       "cmax": vmax, "showscale": True, "opacity": 0,
                       "colorbar": _colorbar(label, length)}}


def _colorbar(label: str, length: int) -> dict:
    return {"title": {"text": label, "side": "right"}, "len": min(1.0, 220 / max(length, 1)),
            "lenmode": "fraction", "thickness": 14, "y": 1, "yanchor": "top", "x": 1.01}


def _legend_trace(label: str, color: str, kind: str = "svg") -> dict:
    return {"type": "scatter", "mode": "markers", "x": [None], "y": [None], "name": label,
            "marker": {"color": color, "size": 10}, "showlegend": True, "hoverinfo": "skip"}


def _finish(spots: pd.DataFrame, geom: mr.Geometry, panel: Panel, kind: str, traces: list[dict],
            trace_spots: list, image: dict | None, title: str, types: list[str],
            selectable: bool, value: np.ndarray | None = None, value_label: str | None = None,
            many: bool = False) -> SpotMap:
    """Assemble the figure: point traces (svg/gl) or raster image + hover sample (raster)."""
    x, y = spots["x"].to_numpy(float), spots["y"].to_numpy(float)
    layout = _layout(geom, title, image, panel.legend is not None, panel.colorbar is not None, selectable)
    if kind == "raster":
        layout["images"].append(_image(mr.raster_url(x, y, geom, panel.rgba), geom, layer="above"))
        sample = mr.spread_sample(x, y, HOVER_MAX_MANY if many else HOVER_MAX)
        size = float(np.clip(geom.px_per_unit * np.sqrt(np.ptp(x) * np.ptp(y) / max(len(sample), 1)), 4, 30))
        traces = [_marker_trace("svg" if len(sample) <= SVG_MAX else "gl", x[sample], y[sample],
                                marker={"size": size, "color": "rgba(0,0,0,0)"}, showlegend=False,
                                **_hover(spots, types, sample, value, value_label, sampled=True))]
        trace_spots = [sample]
        if panel.colorbar is not None:
            traces.append(_colorbar_trace(*panel.colorbar, length=geom.height))
            trace_spots.append(None)
        if panel.legend is not None:
            traces += [_legend_trace(lab, col) for lab, col in panel.legend]
            trace_spots += [None] * len(panel.legend)
            layout["legend"].update(itemclick=False, itemdoubleclick=False)
    layout["meta"] = {"map": title, "render": kind, "spots": len(x)}
    return SpotMap({"data": traces, "layout": layout}, title, x, y, [panel], kind, image, selectable,
                   1, trace_spots)


def _spots_xy(spots: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return spots["x"].to_numpy(float), spots["y"].to_numpy(float)


def _types_of(spots: pd.DataFrame, types: list[str] | None) -> list[str]:
    if types is not None:
        return list(types)
    skip = {"spot", "x", "y", "dominant", "dominant_prop"}
    return [c for c in spots.columns if c not in skip and not str(c).startswith("sd:")
            and pd.api.types.is_float_dtype(spots[c])]


# ------------------------------------------------------------------ continuous maps
def _continuous(spots: pd.DataFrame, values: np.ndarray, label: str, cmap: str, vmin: float,
                vmax: float, width: int, image: dict | None, title: str, types: list[str],
                mask: np.ndarray | None, select: bool, many: bool, hover_value: bool = True) -> SpotMap:
    x, y = _spots_xy(spots)
    geom = mr.geometry(x, y, width, image)
    kind = render_kind(len(x), many)
    values = np.asarray(values, dtype=np.float64)
    rgba = mr.continuous_rgba(values, vmin, vmax, cmap, mask)
    order = None if mask is None else np.r_[np.flatnonzero(~mask), np.flatnonzero(mask)]
    panel = Panel(title, rgba, colorbar=(cmap, vmin, vmax, label), order=order)
    traces, trace_spots = [], []
    if kind != "raster":
        on = np.arange(len(x)) if mask is None else np.flatnonzero(mask)
        if mask is not None and (~mask).any():
            off = np.flatnonzero(~mask)
            traces.append(_marker_trace(kind, x[off], y[off], showlegend=False,
                                        marker={"size": geom.marker_px, "color": mr.GREY_HEX, "opacity": 0.6},
                                        **_hover(spots, types, off, values if hover_value else None, label)))
            trace_spots.append(off)
        traces.append(_marker_trace(kind, x[on], y[on], showlegend=False, marker={
            "size": geom.marker_px, "color": values[on].astype(np.float32), "cmin": vmin, "cmax": vmax,
            "colorscale": mr.plotly_colorscale(cmap), "showscale": True, "opacity": 0.95,
            "colorbar": _colorbar(label, geom.height)},
            **_hover(spots, types, on, values if hover_value else None, label)))
        trace_spots.append(on)
    return _finish(spots, geom, panel, kind, traces, trace_spots, image, title, types, select,
                   values if hover_value else None, label, many)


def proportion_map(spots: pd.DataFrame, ct: str, types: list[str], vmax: float | None = None,
                   width: int = 420, image: dict | None = None, title: str | None = None,
                   legend: bool = True, zoom: bool = True, select: bool = False,
                   many: bool = False) -> SpotMap:
    """Spots coloured by one type's proportion (viridis, 0..vmax)."""
    vmax = float(vmax if vmax is not None else max(float(spots[ct].max()), 1e-6))
    return _continuous(spots, spots[ct].to_numpy(), "proportion", "viridis", 0.0, vmax, width, image,
                       title if title is not None else ct, types, None, select, many, hover_value=False)


def kept_map(spots: pd.DataFrame, ct: str, types: list[str], threshold: float, width: int = 380,
             image: dict | None = None, title: str | None = None) -> SpotMap:
    """Spots kept for ``ct`` (proportion > threshold) coloured by proportion; others grey."""
    values = spots[ct].to_numpy(dtype=float)
    kept = values > threshold
    vmax = max(float(values.max()), 1e-6)
    return _continuous(spots, values, "proportion", "viridis", 0.0, vmax, width, image,
                       title or f"{ct}: {int(kept.sum())} of {len(kept)} spots kept", types, kept,
                       False, True, hover_value=False)


def value_map(spots: pd.DataFrame, values: np.ndarray, label: str, width: int = 420,
              image: dict | None = None, title: str | None = None, mask: np.ndarray | None = None,
              scheme: str = "magma", types: list[str] | None = None, select: bool = False,
              vmin: float | None = None, vmax: float | None = None) -> SpotMap:
    """Spots coloured by any per-spot value (e.g. imputed expression); ``mask`` greys others."""
    v = np.asarray(values, dtype=float)
    mask = None if mask is None else np.asarray(mask, bool)
    shown = v if mask is None or not mask.any() else v[mask]
    finite = shown[np.isfinite(shown)]
    lo = float(finite.min()) if vmin is None and finite.size else float(vmin or 0.0)
    hi = float(finite.max()) if vmax is None and finite.size else float(vmax if vmax is not None else 1.0)
    return _continuous(spots, v, label, scheme, lo, max(hi, lo + 1e-12), width, image,
                       title or label, _types_of(spots, types), mask, select, False)


# ------------------------------------------------------------------ categorical maps
def _categorical(spots: pd.DataFrame, labels: np.ndarray, colors: dict[str, str], width: int,
                 image: dict | None, title: str, types: list[str], select: bool, many: bool = False,
                 order: list[str] | None = None) -> SpotMap:
    x, y = _spots_xy(spots)
    geom = mr.geometry(x, y, width, image)
    kind = render_kind(len(x), many)
    labels = np.asarray(labels).astype(str)
    present = [c for c in (order or list(colors)) if (labels == c).any()]
    rgba = mr.categorical_rgba(labels, colors)
    panel = Panel(title, rgba, legend=[(c, colors[c]) for c in present])
    traces, trace_spots = [], []
    if kind != "raster":
        for c in present:
            idx = np.flatnonzero(labels == c)
            traces.append(_marker_trace(kind, x[idx], y[idx], name=c, legendgroup=c,
                                        marker={"size": geom.marker_px, "color": colors[c], "opacity": 0.95},
                                        **_hover(spots, types, idx)))
            trace_spots.append(idx)
    return _finish(spots, geom, panel, kind, traces, trace_spots, image, title, types, select,
                   many=many)


def dominant_map(spots: pd.DataFrame, types: list[str], width: int = 420,
                 image: dict | None = None, select: bool = False) -> SpotMap:
    """Each spot coloured by its most abundant type (fixed colours across the app)."""
    colors = type_colors(types)
    return _categorical(spots, spots["dominant"].to_numpy(), colors, width, image,
                        "Dominant type per spot", types, select, order=list(types))


def group_map(spots: pd.DataFrame, group: np.ndarray, width: int = 420, image: dict | None = None,
              select: bool = True, types: list[str] | None = None) -> SpotMap:
    """Spots labelled by DE group ("group 1", "group 2", "not used"); box or lasso to select."""
    return _categorical(spots, group, GROUP_COLORS, width, image,
                        "DE groups" + (" (box or lasso to draw a region)" if select else ""),
                        _types_of(spots, types), select)


def label_map(spots: pd.DataFrame, labels: np.ndarray, colors: dict[str, str], title: str,
              width: int = 420, image: dict | None = None, select: bool = False,
              types: list[str] | None = None) -> SpotMap:
    """Spots coloured by any labels with the given colours (e.g. regions; others grey)."""
    return _categorical(spots, labels, colors, width, image, title, _types_of(spots, types), select)


def rgb_map(spots: pd.DataFrame, selected: pd.DataFrame, width: int = 380,
            image: dict | None = None, title: str = "Tissue", types: list[str] | None = None,
            select: bool = False) -> SpotMap:
    """All spots faint, spots of ``selected`` (columns ``spot, color``) in their own colour."""
    pos = pd.Index(spots["spot"].astype(str)).get_indexer(selected["spot"].astype(str))
    colors = np.full(len(spots), mr.GREY_HEX, dtype=object)
    colors[pos[pos >= 0]] = selected["color"].to_numpy()[pos >= 0]
    return colour_map(spots, colors, title, width=width, image=image, types=types, select=select,
                      faint=np.setdiff1d(np.arange(len(spots)), pos[pos >= 0]))


def colour_map(spots: pd.DataFrame, colors: np.ndarray, title: str, width: int = 420,
               image: dict | None = None, types: list[str] | None = None, select: bool = False,
               faint: np.ndarray | None = None, key: list[tuple[str, str]] | None = None,
               background: str | None = None) -> SpotMap:
    """Spots in given colours (``#rrggbb`` strings or ``[n, 3]`` uint8 RGB, e.g. blended types);
    ``faint`` spots drawn light; ``background`` colours the plot area (e.g. dark for blends,
    whose "none" is black and "all" white)."""
    x, y = _spots_xy(spots)
    types = _types_of(spots, types)
    geom = mr.geometry(x, y, width, image)
    kind = render_kind(len(x))
    colors = np.asarray(colors)
    if colors.ndim == 2:
        rgb = colors.astype(np.uint8)
        colors = mr.hex_colors(rgb)
    else:
        colors = mr.plotly_safe(colors.astype(str))
        rgb = _hex_array_to_rgb(colors)
    rgba = np.c_[rgb, np.full(len(colors), 255, np.uint8)]
    faint_mask = np.zeros(len(x), bool)
    if faint is not None and len(faint):
        faint_mask[faint] = True
        rgba[faint_mask, 3] = 110
    panel = Panel(title, rgba, legend=key, order=np.r_[np.flatnonzero(faint_mask), np.flatnonzero(~faint_mask)])
    traces, trace_spots = [], []
    if kind != "raster":
        for idx, opacity in ((np.flatnonzero(faint_mask), 0.35), (np.flatnonzero(~faint_mask), 1.0)):
            if len(idx):
                traces.append(_marker_trace(kind, x[idx], y[idx], showlegend=False, marker={
                    "size": geom.marker_px, "color": list(colors[idx]), "opacity": opacity},
                    **_hover(spots, types, idx)))
                trace_spots.append(idx)
        traces += [_legend_trace(lab, col) for lab, col in (key or [])]
        trace_spots += [None] * len(key or [])
    out = _finish(spots, geom, panel, kind, traces, trace_spots, image, title, types, select)
    if background:
        out.figure["layout"]["plot_bgcolor"] = background
    return out


def _hex_array_to_rgb(colors: np.ndarray) -> np.ndarray:
    if len(colors) == 0:
        return np.zeros((0, 3), np.uint8)
    packed = np.char.replace(np.asarray(colors).astype("U7"), "#", "")
    packed = np.array([int(c, 16) for c in packed.tolist()], dtype=np.uint32)
    return np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1).astype(np.uint8)


# ------------------------------------------------------------------ small multiples
def small_multiples(spots: pd.DataFrame, types: list[str], shared: bool = True, width: int = 220,
                    columns: int = 4, image: dict | None = None) -> SpotMap:
    """One rasterised proportion map per type in one figure (linked zoom across panels).

    Panels are always images: 12 panels x 100,000 spots would be 1.2 million points; as images
    they cost the same at any number of spots. Hover the single-type map for values.
    """
    x, y = _spots_xy(spots)
    geom = mr.geometry(x, y, width, image)
    vmax_all = float(spots[types].to_numpy().max()) if len(types) else 1.0
    n = len(types)
    rows = max(1, int(np.ceil(n / columns)))
    gap_x, gap_y, bar = 20, 46, (70 if shared else 0)
    cell_w, cell_h = geom.width + (0 if shared else 62), geom.height
    total_w = columns * cell_w + (columns - 1) * gap_x + bar + 10
    total_h = rows * cell_h + rows * gap_y + 10
    layout = {"width": total_w, "height": total_h, "margin": {"l": 5, "r": bar + 5, "t": 10, "b": 5},
              "font": {"family": FONT, "size": 12}, "plot_bgcolor": "white", "paper_bgcolor": "white",
              "dragmode": "pan", "showlegend": False, "images": [], "annotations": [],
              "uirevision": "keep", "hovermode": False, "template": "none"}
    traces, panels = [], []
    plot_w, plot_h = total_w - bar - 10, total_h - 15
    for i, t in enumerate(types):
        r, c = divmod(i, columns)
        ax = "" if i == 0 else str(i + 1)
        vmax = vmax_all if shared else max(float(spots[t].max()), 1e-6)
        rgba = mr.continuous_rgba(spots[t].to_numpy(), 0.0, vmax, "viridis")
        panels.append(Panel(t, rgba, colorbar=("viridis", 0.0, vmax, "proportion")))
        left = c * (cell_w + gap_x) / plot_w
        top = 1 - (r * (cell_h + gap_y) + gap_y - 14) / plot_h
        dom_x = [left, left + geom.width / plot_w]
        dom_y = [max(0.0, top - cell_h / plot_h), top]
        layout[f"xaxis{ax}"] = {"domain": dom_x, "range": [geom.x0, geom.x1], "visible": False,
                                **({} if i == 0 else {"matches": "x"})}
        layout[f"yaxis{ax}"] = {"domain": dom_y, "range": [geom.y1, geom.y0], "visible": False,
                                "scaleanchor": f"x{ax}", "scaleratio": 1,
                                **({} if i == 0 else {"matches": "y"})}
        if image is not None:
            layout["images"].append(_image(image["url"], image, 0.8, f"x{ax}", f"y{ax}"))
        layout["images"].append(_image(mr.raster_url(x, y, geom, rgba), geom, 1.0, f"x{ax}", f"y{ax}",
                                       layer="above"))
        layout["annotations"].append({"text": f"<b>{t}</b>", "x": dom_x[0], "y": dom_y[1] + 6 / plot_h,
                                      "xref": "paper", "yref": "paper", "xanchor": "left",
                                      "yanchor": "bottom", "showarrow": False, "font": {"size": 13}})
        if not shared:
            cb = _colorbar_trace("viridis", 0.0, vmax, "", geom.height)
            cb["marker"]["colorbar"].update(x=dom_x[1] + 4 / plot_w, y=dom_y[1], len=(dom_y[1] - dom_y[0]),
                                            lenmode="fraction", thickness=10, title={"text": ""})
            traces.append({**cb, "xaxis": f"x{ax}", "yaxis": f"y{ax}"})
        else:
            traces.append({"type": "scatter", "x": [None], "y": [None], "xaxis": f"x{ax}",
                           "yaxis": f"y{ax}", "hoverinfo": "skip", "showlegend": False})
    if shared and n:
        traces.append(_colorbar_trace("viridis", 0.0, vmax_all, "proportion", total_h))
    title = "All cell types"
    layout["meta"] = {"map": title, "render": "raster", "spots": len(x), "shared": bool(shared)}
    return SpotMap({"data": traces, "layout": layout}, title, x, y, panels, "raster", image, False,
                   columns, [None] * len(traces))


# ------------------------------------------------------------------ selections
def selection_mask(event, spot_map: SpotMap) -> np.ndarray | None:
    """Spots inside the lasso paths / boxes of a Plotly selection event (union), or the clicked
    points; None when nothing is selected."""
    from destvi_core.analysis.regions import spots_in_box, spots_in_polygon

    if event is None:
        return None
    sel = event.get("selection") if isinstance(event, dict) else getattr(event, "selection", None)
    if not sel:
        return None
    coords = np.c_[spot_map.x, spot_map.y]
    mask = np.zeros(spot_map.n_spots, bool)
    found = False
    for shape in sel.get("lasso") or []:
        if len(shape.get("x") or []) >= 3:
            mask |= spots_in_polygon(coords, shape["x"], shape["y"])
            found = True
    for shape in sel.get("box") or []:
        if len(shape.get("x") or []) == 2 and len(shape.get("y") or []) == 2:
            mask |= spots_in_box(coords, shape["x"], shape["y"])
            found = True
    if not found:
        for point in sel.get("points") or []:
            curve, index = point.get("curve_number"), point.get("point_index", point.get("point_number"))
            if curve is None or index is None or curve >= len(spot_map.trace_spots):
                continue
            spots = spot_map.trace_spots[curve]
            if spots is not None and 0 <= index < len(spots):
                mask[spots[index]] = True
                found = True
    return mask if found else None


def style(figure: dict, presentation: bool) -> dict:
    """Fonts and hover labels for a desk or a shared screen (returns a shallow copy)."""
    if not presentation:
        return figure
    layout = dict(figure["layout"])
    layout["font"] = {**layout.get("font", {}), "size": 18}
    if isinstance(layout.get("title"), dict):
        layout["title"] = {**layout["title"], "font": {"size": 24}}
    layout["hoverlabel"] = {"font": {"size": 18}}
    layout["legend"] = {**layout.get("legend", {}), "font": {"size": 18}}
    if layout.get("showlegend"):  # room for the larger legend, so the map keeps its size
        margin = dict(layout.get("margin", {}))
        extra = 80
        margin["r"] = margin.get("r", 0) + extra
        layout["margin"] = margin
        layout["width"] = layout.get("width", 0) + extra
    if "annotations" in layout:
        layout["annotations"] = [{**a, "font": {"size": 18}} for a in layout["annotations"]]
    return {"data": figure["data"], "layout": layout}
