"""Altair chart builders (pure: DataFrames in, charts out; no Streamlit calls).

Curves, bars, scatter plots of small tables. Spatial maps of spots live in :mod:`studio_ui.maps`
(Plotly: WebGL or rasterised at scale) and are re-exported here under their old names. All
charts can be zoomed/panned unless a drag selection is needed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import altair as alt

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
# Spatial maps are Plotly figures that scale to 100,000+ spots: see studio_ui/maps.py. The names
# stay importable from here for existing callers (same signatures).
from .maps import (dominant_map, group_map, kept_map, proportion_map, rgb_map,  # noqa: E402,F401
                   small_multiples, value_map)


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
