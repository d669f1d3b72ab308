"""Altair chart builders (pure: DataFrames in, charts out; no Streamlit calls).

Spot maps keep the tissue's aspect ratio, reverse the y axis (image convention), size the
markers from the spot spacing and carry a tooltip with every proportion. All charts can be
zoomed/panned unless a drag selection is needed.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import altair as alt

from .palette import color_scale_args

alt.data_transformers.disable_max_rows()

GREY = "#d0d0d0"


def safe_names(types: list[str]) -> dict[str, str]:
    """Map cell-type names to field names Vega-Lite accepts without escaping."""
    return {t: f"t{i}" for i, t in enumerate(types)}


def finish(chart: alt.TopLevelMixin, presentation: bool = False) -> alt.TopLevelMixin:
    """Fonts for a desk (default) or a shared screen (presentation)."""
    label, title, head = (18, 20, 24) if presentation else (12, 13, 15)
    return (chart.configure_axis(labelFontSize=label, titleFontSize=title, grid=False)
            .configure_legend(labelFontSize=label, titleFontSize=title, symbolSize=200 if presentation else 100)
            .configure_title(fontSize=head, anchor="start")
            .configure_header(labelFontSize=title, titleFontSize=title)
            .configure_view(strokeWidth=0))


# ------------------------------------------------------------------ spot maps
def _geometry(x: np.ndarray, y: np.ndarray, width: int, image: dict | None = None):
    """Scales, chart height and marker area (px²) for a tissue of spots."""
    if image is not None:
        x0, x1 = min(x.min(), image["x0"]), max(x.max(), image["x1"])
        y0, y1 = min(y.min(), image["y0"]), max(y.max(), image["y1"])
    else:
        x0, x1, y0, y1 = x.min(), x.max(), y.min(), y.max()
    spacing = _spacing(x, y)
    pad = spacing if image is None else 0.0
    x0, x1, y0, y1 = x0 - pad, x1 + pad, y0 - pad, y1 + pad
    rx, ry = max(x1 - x0, 1e-9), max(y1 - y0, 1e-9)
    height = int(np.clip(width * ry / rx, 120, 2.2 * width))
    px = min(width / rx, height / ry)
    size = float(np.clip((spacing * px * 0.92) ** 2 * 0.8, 6, 900))
    xs = alt.Scale(domain=[float(x0), float(x1)], nice=False, zero=False)
    ys = alt.Scale(domain=[float(y0), float(y1)], nice=False, zero=False, reverse=True)
    return xs, ys, height, size


def _spacing(x: np.ndarray, y: np.ndarray) -> float:
    """Median nearest-neighbour distance between spots."""
    if len(x) < 2:
        return 1.0
    from scipy.spatial import cKDTree

    pts = np.c_[x, y]
    d, _ = cKDTree(pts).query(pts[: min(len(pts), 500)], k=2)
    s = float(np.median(d[:, 1]))
    return s if s > 0 else 1.0


def _axes(xs, ys):
    none = alt.Axis(labels=False, ticks=False, title=None, domain=False)
    return alt.X("x:Q", scale=xs, axis=none), alt.Y("y:Q", scale=ys, axis=none)


def _tooltip(types: list[str], extra: list | None = None) -> list:
    names = safe_names(types)
    tips = [alt.Tooltip("spot:N", title="spot"), alt.Tooltip("dominant:N", title="dominant type")]
    tips += list(extra or [])
    tips += [alt.Tooltip(f"{names[t]}:Q", title=t, format=".2f") for t in types]
    return tips


def _prepared(spots: pd.DataFrame, types: list[str]) -> pd.DataFrame:
    keep = ["spot", "x", "y", "dominant", *types]
    return spots[[c for c in keep if c in spots]].rename(columns=safe_names(types))


def _image_layer(image: dict | None, xs, ys):
    if image is None:
        return None
    df = pd.DataFrame([image])
    return alt.Chart(df).mark_image(aspect=False, opacity=0.8).encode(
        x=alt.X("x0:Q", scale=xs), x2="x1:Q", y=alt.Y("y0:Q", scale=ys), y2="y1:Q", url="url:N")


def _with_image(points: alt.Chart, image: dict | None, xs, ys) -> alt.Chart:
    layer = _image_layer(image, xs, ys)
    return points if layer is None else alt.layer(layer, points)


def proportion_map(spots: pd.DataFrame, ct: str, types: list[str], vmax: float | None = None,
                   width: int = 420, image: dict | None = None, title: str | None = None,
                   legend: bool = True, zoom: bool | alt.Parameter = True) -> alt.Chart:
    """Spots coloured by one type's proportion (viridis, 0..vmax)."""
    data = _prepared(spots, types)
    field = safe_names(types)[ct]
    vmax = float(vmax if vmax is not None else max(spots[ct].max(), 1e-6))
    xs, ys, height, size = _geometry(spots["x"].to_numpy(), spots["y"].to_numpy(), width, image)
    x, y = _axes(xs, ys)
    points = alt.Chart(data).mark_circle(size=size, opacity=0.95).encode(
        x=x, y=y,
        color=alt.Color(f"{field}:Q", title="proportion",
                        scale=alt.Scale(scheme="viridis", domain=[0, vmax], clamp=True),
                        legend=alt.Legend(orient="right", gradientLength=min(height, 200)) if legend else None),
        tooltip=_tooltip(types))
    if zoom is True:
        zoom = alt.selection_interval(bind="scales")
    if zoom is not False:
        points = points.add_params(zoom)
    chart = _with_image(points, image, xs, ys)
    return chart.properties(width=width, height=height, title=title if title is not None else ct)


def small_multiples(spots: pd.DataFrame, types: list[str], shared: bool = True, width: int = 220,
                    columns: int = 4, image: dict | None = None) -> alt.ConcatChart:
    """One proportion map per type; one shared colour scale or one per type."""
    vmax_all = float(spots[types].to_numpy().max())
    zoom = alt.selection_interval(bind="scales", name="grid_zoom")  # linked zoom across panels
    charts = [proportion_map(spots, t, types, vmax=vmax_all if shared else None, width=width,
                             image=image, legend=True, zoom=zoom)
              for i, t in enumerate(types)]
    with warnings.catch_warnings():  # the shared zoom is deduplicated on purpose (linked zoom)
        warnings.filterwarnings("ignore", message="Automatically deduplicated")
        grid = alt.concat(*charts, columns=columns)
    return grid.resolve_scale(color="shared" if shared else "independent")


def dominant_map(spots: pd.DataFrame, types: list[str], width: int = 420,
                 image: dict | None = None) -> alt.Chart:
    """Each spot coloured by its most abundant type (fixed colours across the app)."""
    data = _prepared(spots, types)
    data["dominant_prop"] = spots["dominant_prop"].to_numpy()
    xs, ys, height, size = _geometry(spots["x"].to_numpy(), spots["y"].to_numpy(), width, image)
    x, y = _axes(xs, ys)
    sel = alt.selection_point(fields=["dominant"], bind="legend")
    points = alt.Chart(data).mark_circle(size=size).encode(
        x=x, y=y,
        color=alt.Color("dominant:N", title="dominant type", scale=alt.Scale(**color_scale_args(types))),
        opacity=alt.condition(sel, alt.value(0.95), alt.value(0.1)),
        tooltip=_tooltip(types, [alt.Tooltip("dominant_prop:Q", title="its proportion", format=".2f")]),
    ).add_params(sel, alt.selection_interval(bind="scales"))
    return _with_image(points, image, xs, ys).properties(width=width, height=height,
                                                         title="Dominant type per spot")


def kept_map(spots: pd.DataFrame, ct: str, types: list[str], threshold: float, width: int = 380,
             image: dict | None = None, title: str | None = None) -> alt.Chart:
    """Spots kept for ``ct`` (proportion > threshold) coloured by proportion; others grey."""
    data = _prepared(spots, types)
    field = safe_names(types)[ct]
    kept = spots[ct].to_numpy() > threshold
    xs, ys, height, size = _geometry(spots["x"].to_numpy(), spots["y"].to_numpy(), width, image)
    x, y = _axes(xs, ys)
    vmax = max(float(spots[ct].max()), 1e-6)
    grey = alt.Chart(data[~kept]).mark_circle(size=size, color=GREY, opacity=0.6).encode(
        x=x, y=y, tooltip=_tooltip(types))
    col = alt.Chart(data[kept]).mark_circle(size=size, opacity=0.95).encode(
        x=x, y=y, tooltip=_tooltip(types),
        color=alt.Color(f"{field}:Q", title="proportion",
                        scale=alt.Scale(scheme="viridis", domain=[0, vmax])))
    layers = [lyr for lyr in (_image_layer(image, xs, ys), grey, col) if lyr is not None]
    return alt.layer(*layers).add_params(alt.selection_interval(bind="scales")).properties(
        width=width, height=height, title=title or f"{ct}: {int(kept.sum())} of {len(kept)} spots kept")


def value_map(spots: pd.DataFrame, values: np.ndarray, label: str, width: int = 420,
              image: dict | None = None, title: str | None = None, mask: np.ndarray | None = None,
              scheme: str = "magma") -> alt.Chart:
    """Spots coloured by any per-spot value (e.g. imputed expression); ``mask`` greys others."""
    data = spots[["spot", "x", "y"]].copy()
    data["value"] = np.asarray(values, dtype=float)
    mask = np.ones(len(data), bool) if mask is None else np.asarray(mask, bool)
    xs, ys, height, size = _geometry(data["x"].to_numpy(), data["y"].to_numpy(), width, image)
    x, y = _axes(xs, ys)
    tips = [alt.Tooltip("spot:N"), alt.Tooltip("value:Q", title=label, format=".3g")]
    grey = alt.Chart(data[~mask]).mark_circle(size=size, color=GREY, opacity=0.5).encode(x=x, y=y)
    col = alt.Chart(data[mask]).mark_circle(size=size, opacity=0.95).encode(
        x=x, y=y, tooltip=tips, color=alt.Color("value:Q", title="value", scale=alt.Scale(scheme=scheme)))
    layers = [lyr for lyr in (_image_layer(image, xs, ys), grey, col) if lyr is not None]
    return alt.layer(*layers).add_params(alt.selection_interval(bind="scales")).properties(
        width=width, height=height, title=title or label)


def group_map(spots: pd.DataFrame, group: np.ndarray, width: int = 420, image: dict | None = None,
              select: bool = True) -> alt.Chart:
    """Spots labelled by DE group ("group 1", "group 2", "not used"); drag to select a region."""
    data = spots[["spot", "x", "y"]].copy()
    data["group"] = np.asarray(group)
    xs, ys, height, size = _geometry(data["x"].to_numpy(), data["y"].to_numpy(), width, image)
    x, y = _axes(xs, ys)
    points = alt.Chart(data).mark_circle(size=size, opacity=0.9).encode(
        x=x, y=y, tooltip=["spot:N", "group:N"],
        color=alt.Color("group:N", title="group", scale=alt.Scale(
            domain=["group 1", "group 2", "not used"], range=["#D55E00", "#0072B2", GREY])))
    if select:
        points = points.add_params(alt.selection_interval(name="region", encodings=["x", "y"]))
    return _with_image(points, image, xs, ys).properties(width=width, height=height,
                                                         title="DE groups (drag to select a region)")


# ------------------------------------------------------------------ thresholds
def z_curve(curve: pd.DataFrame, primary: float, secondary: float, current: float,
            width: int = 380, height: int = 260, title: str | None = None) -> alt.LayerChart:
    """Spatial-autocorrelation Z against cut-off, automatic markers and the current value."""
    base = alt.Chart(curve).encode(x=alt.X("cutoff:Q", title="proportion cut-off"))
    raw = base.mark_circle(size=18, color="#999999").encode(
        y=alt.Y("z:Q", title="spatial autocorrelation Z"),
        tooltip=[alt.Tooltip("cutoff:Q", format=".3f"), alt.Tooltip("z:Q", format=".1f")])
    smooth = base.mark_line(color="#0072B2", strokeWidth=2.5).encode(y="z_smooth:Q")
    marks = pd.DataFrame({"value": [primary, secondary, current],
                          "marker": ["primary (auto)", "secondary (auto)", "current"]})
    rules = alt.Chart(marks).mark_rule(strokeWidth=2.5).encode(
        x="value:Q",
        color=alt.Color("marker:N", title=None, scale=alt.Scale(
            domain=list(marks["marker"]), range=["#D55E00", "#E69F00", "#000000"]),
            legend=alt.Legend(orient="right")),
        strokeDash=alt.StrokeDash("marker:N", scale=alt.Scale(
            domain=list(marks["marker"]), range=[[6, 4], [2, 2], [1, 0]]), legend=None),
        tooltip=["marker:N", alt.Tooltip("value:Q", format=".3f")])
    return alt.layer(raw, smooth, rules).properties(width=width, height=height,
                                                    title=title or "Z-score curve")


# ------------------------------------------------------------------ training
def loss_chart(history: pd.DataFrame, width: int = 600, height: int = 220) -> alt.Chart:
    """Loss per epoch, one line per model (columns ``model, epoch, loss``)."""
    return alt.Chart(history).mark_line(point=len(history) < 60).encode(
        x=alt.X("epoch:Q"), y=alt.Y("loss:Q", scale=alt.Scale(zero=False, type="symlog")),
        color=alt.Color("model:N", title=None, scale=alt.Scale(
            domain=["reference (CondSCVI)", "spatial (DestVI)"], range=["#0072B2", "#D55E00"])),
        tooltip=["model:N", "epoch:Q", alt.Tooltip("loss:Q", format=".4g")],
    ).properties(width=width, height=height, title="Training loss")


# ------------------------------------------------------------------ gamma
def rgb_map(spots: pd.DataFrame, selected: pd.DataFrame, width: int = 380,
            image: dict | None = None, title: str = "Tissue") -> alt.LayerChart:
    """All spots faint, selected spots in their 2-D colour-map colour (column ``color``)."""
    xs, ys, height, size = _geometry(spots["x"].to_numpy(), spots["y"].to_numpy(), width, image)
    x, y = _axes(xs, ys)
    grey = alt.Chart(spots[["spot", "x", "y"]]).mark_circle(size=size, color=GREY, opacity=0.35).encode(x=x, y=y)
    col = alt.Chart(selected).mark_circle(size=size, opacity=1).encode(
        x=x, y=y, color=alt.Color("color:N", scale=None),
        tooltip=["spot:N", alt.Tooltip("pc1:Q", title="sPC1", format=".2f"),
                 alt.Tooltip("pc2:Q", title="sPC2", format=".2f"),
                 alt.Tooltip("proportion:Q", format=".2f")])
    layers = [lyr for lyr in (_image_layer(image, xs, ys), grey, col) if lyr is not None]
    return alt.layer(*layers).add_params(alt.selection_interval(bind="scales")).properties(
        width=width, height=height, title=title)


def pc_scatter(df: pd.DataFrame, title: str, xlabel: str = "sPC1", ylabel: str = "sPC2",
               width: int = 300, size: float = 30, shape: str = "circle",
               tooltip: list | None = None) -> alt.Chart:
    """Points in sPC space coloured by their 2-D colour (column ``color``)."""
    return alt.Chart(df).mark_point(filled=True, size=size, shape=shape, opacity=0.85).encode(
        x=alt.X("pc1:Q", title=xlabel), y=alt.Y("pc2:Q", title=ylabel),
        color=alt.Color("color:N", scale=None), tooltip=tooltip or ["pc1:Q", "pc2:Q"],
    ).add_params(alt.selection_interval(bind="scales")).properties(width=width, height=width, title=title)


def colour_legend(grid: pd.DataFrame, width: int = 200) -> alt.Chart:
    """The 2-D colour map as a grid of squares (columns ``u, v, color``)."""
    return alt.Chart(grid).mark_rect().encode(
        x=alt.X("u:O", title="sPC1 →", axis=alt.Axis(labels=False, ticks=False)),
        y=alt.Y("v:O", title="sPC2 →", sort="descending", axis=alt.Axis(labels=False, ticks=False)),
        color=alt.Color("color:N", scale=None),
    ).properties(width=width, height=width, title="Colour key")


def enrichment_bars(df: pd.DataFrame, width: int = 520, top: int = 15) -> alt.Chart:
    """Horizontal bars of −log10 adjusted p (engine columns ``term, adjusted_p_value, overlap``)."""
    d = df.rename(columns={"adjusted_p_value": "adj_p"}).nsmallest(top, "adj_p").copy()
    d["neglog10"] = -np.log10(np.clip(d["adj_p"].astype(float), 1e-300, 1))
    d["significant"] = np.where(d["adj_p"] < 0.05, "adj. p < 0.05", "not significant")
    tips = ["term:N", alt.Tooltip("adj_p:Q", title="adjusted p", format=".2e")]
    if "overlap" in d:
        tips.append("overlap:N")
    return alt.Chart(d).mark_bar().encode(
        x=alt.X("neglog10:Q", title="−log10 adjusted p"),
        y=alt.Y("term:N", sort="-x", title=None, axis=alt.Axis(labelLimit=320)),
        color=alt.Color("significant:N", title=None, scale=alt.Scale(
            domain=["adj. p < 0.05", "not significant"], range=["#0072B2", "#bbbbbb"])),
        tooltip=tips).properties(width=width, height=max(120, 22 * len(d)), title="Pathway enrichment")


# ------------------------------------------------------------------ DE
STATUS = ["up in group 1", "up in group 2", "not significant"]


def volcano(de: pd.DataFrame, p_cut: float, width: int = 560, height: int = 420,
            point: float = 40, fc_cut: float | None = None,
            highlight: str | None = None) -> alt.LayerChart:
    """Volcano (log2fc vs −log10 adjusted p); click a gene to select it (param ``gene_pick``).

    ``de`` has columns ``gene, log2fc, padj, ks_score, status`` (status from the engine's
    significance at the current cut-offs; see :data:`STATUS`).
    """
    d = de[["gene", "log2fc", "padj", "ks_score", "status"]].copy()
    d["neglog10p"] = -np.log10(np.clip(d["padj"].astype(float), 1e-300, 1))
    pick = alt.selection_point(name="gene_pick", fields=["gene"], on="click", clear="dblclick")
    tips = ["gene:N", alt.Tooltip("log2fc:Q", title="log2FC", format=".2f"),
            alt.Tooltip("padj:Q", title="adjusted p", format=".2e"),
            alt.Tooltip("ks_score:Q", title="KS score", format=".3f")]
    pts = alt.Chart(d).mark_circle(size=point).encode(
        x=alt.X("log2fc:Q", title="log2 fold change (group 1 / group 2)"),
        y=alt.Y("neglog10p:Q", title="−log10 adjusted p"),
        color=alt.Color("status:N", title=None, scale=alt.Scale(
            domain=STATUS, range=["#D55E00", "#0072B2", "#bbbbbb"]), legend=alt.Legend(orient="bottom")),
        opacity=alt.condition(pick, alt.value(0.9), alt.value(0.35)),
        tooltip=tips).add_params(pick, alt.selection_interval(bind="scales"))
    layers = [pts, alt.Chart(pd.DataFrame({"y": [-np.log10(max(p_cut, 1e-300))]}))
              .mark_rule(strokeDash=[5, 4], color="#555").encode(y="y:Q")]
    if fc_cut is not None:
        layers.append(alt.Chart(pd.DataFrame({"x": [-fc_cut, fc_cut]}))
                      .mark_rule(strokeDash=[5, 4], color="#555").encode(x="x:Q"))
    if highlight is not None and highlight in set(d["gene"]):
        h = d[d["gene"] == highlight]
        layers.append(alt.Chart(h).mark_point(size=point * 5, color="black", strokeWidth=2).encode(
            x="log2fc:Q", y="neglog10p:Q"))
        layers.append(alt.Chart(h).mark_text(dy=-16, fontWeight="bold", fontSize=14).encode(
            x="log2fc:Q", y="neglog10p:Q", text="gene:N"))
    return alt.layer(*layers).properties(width=width, height=height, title="Volcano")


def mean_bars(table: pd.DataFrame, colors: dict[str, str], width: int = 420) -> alt.Chart:
    """Mean proportion per type (columns ``cell type, mean proportion``) in the type colours."""
    return alt.Chart(table).mark_bar().encode(
        x=alt.X("mean proportion:Q"),
        y=alt.Y("cell type:N", sort="-x", title=None, axis=alt.Axis(labelOverlap=False, labelLimit=240)),
        color=alt.Color("cell type:N", legend=None, scale=alt.Scale(
            domain=list(colors), range=list(colors.values()))),
        tooltip=["cell type:N", alt.Tooltip("mean proportion:Q", format=".3f")],
    ).properties(width=width, height=max(140, 30 * len(table)), title="Mean proportion")
