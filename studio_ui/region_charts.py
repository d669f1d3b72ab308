"""Altair charts of the region views: composition bars, differences, co-occurrence, blend keys.

Pure (tables in, charts out). Small tables only (one row per cell type or pair), so Altair with
vl-convert downloads stays fast at any number of spots.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd


def frame_height(chart, extra: int = 90) -> int:
    """Height to give Streamlit's frame for a chart: its plot height plus title, axes and
    legend (layered and legend-heavy charts are otherwise clipped to a sliver)."""
    spec = chart.to_dict()
    return int(spec.get("height", 200)) + extra


def _type_scale(colors: dict[str, str]) -> alt.Scale:
    return alt.Scale(domain=list(colors), range=list(colors.values()))


def composition_bars(long_means: pd.DataFrame, colors: dict[str, str], width: int = 460,
                     scale: float = 1.0) -> alt.Chart:
    """Mean proportion per type in each region, stacked (columns ``region, cell type, mean proportion``)."""
    order = {t: i for i, t in enumerate(colors)}
    data = long_means.assign(order=long_means["cell type"].map(order))
    regions = list(dict.fromkeys(long_means["region"]))
    return alt.Chart(data).mark_bar().encode(
        y=alt.Y("region:N", sort=regions, title=None, axis=alt.Axis(labelLimit=220)),
        x=alt.X("mean proportion:Q", stack="zero", title="mean proportion",
                scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("cell type:N", scale=_type_scale(colors),
                        legend=alt.Legend(orient="bottom", columns=3, labelLimit=200, title=None)),
        order=alt.Order("order:Q"),
        tooltip=["region:N", "cell type:N", alt.Tooltip("mean proportion:Q", format=".3f")],
    ).properties(width=width, height=int(max(90, 46 * len(regions)) * scale), title="Mean composition")


def significance_label(padj: float) -> str:
    if not np.isfinite(padj):
        return ""
    return "***" if padj < 1e-3 else "**" if padj < 1e-2 else "*" if padj < 0.05 else "n.s."


def difference_bars(table: pd.DataFrame, colors: dict[str, str], label_a: str, label_b: str,
                    width: int = 460, scale: float = 1.0) -> alt.LayerChart:
    """Difference of mean proportion (A - B) per type with BH-adjusted significance stars."""
    d = table.reset_index().rename(columns={"index": "cell type"})
    d["cell type"] = d["cell type"].astype(str)
    d["stars"] = [significance_label(p) for p in d["padj"]]
    d["anchor"] = np.where(d["difference"] >= 0, d["difference"], d["difference"])
    span = float(max(d["difference"].abs().max(), 1e-3))
    base = alt.Chart(d).encode(y=alt.Y("cell type:N", sort=list(colors), title=None,
                                       axis=alt.Axis(labelLimit=240)))
    bars = base.mark_bar().encode(
        x=alt.X("difference:Q", title=f"{label_a} − {label_b} (mean proportion)",
                scale=alt.Scale(domain=[-span * 1.25, span * 1.25])),
        color=alt.Color("cell type:N", scale=_type_scale(colors), legend=None),
        tooltip=["cell type:N", alt.Tooltip("mean_a:Q", title=label_a, format=".3f"),
                 alt.Tooltip("mean_b:Q", title=label_b, format=".3f"),
                 alt.Tooltip("difference:Q", format="+.3f"), alt.Tooltip("auc:Q", title="AUC", format=".2f"),
                 alt.Tooltip("padj:Q", title="adjusted p", format=".2e")])
    stars = base.mark_text(align="left", dx=4, fontSize=13).encode(
        x=alt.X("anchor:Q"), text="stars:N")
    stars_neg = base.transform_filter("datum.difference < 0").mark_text(align="right", dx=-4, fontSize=13).encode(
        x="anchor:Q", text="stars:N")
    rule = alt.Chart(pd.DataFrame({"x": [0]})).mark_rule(color="#555").encode(x="x:Q")
    return alt.layer(bars, stars.transform_filter("datum.difference >= 0"), stars_neg, rule).properties(
        width=width, height=int(max(140, 26 * len(d)) * scale),
        title="Difference per type")


def cooccurrence_heatmap(scores: pd.DataFrame, width: int = 420) -> alt.LayerChart:
    """Symmetric co-occurrence matrix. The colour scale is set by the pairs; the diagonal (each
    type's own spatial autocorrelation, a different and larger quantity) is shown in grey."""
    types = list(scores.index)
    long = scores.rename_axis("type a").reset_index().melt("type a", var_name="type b", value_name="score")
    long["self"] = long["type a"] == long["type b"]
    values = scores.to_numpy()
    off = values[~np.eye(len(types), dtype=bool)]
    lim = float(max(np.abs(off).max() if off.size else 0.0, 1e-6))
    base = alt.Chart(long).encode(
        x=alt.X("type b:N", sort=types, title=None, axis=alt.Axis(labelAngle=-40, labelLimit=160,
                                                                   labelOverlap=False)),
        y=alt.Y("type a:N", sort=types, title=None, axis=alt.Axis(labelLimit=200, labelOverlap=False)))
    rect = base.transform_filter("!datum.self").mark_rect().encode(
        color=alt.Color("score:Q", title="score", scale=alt.Scale(scheme="redblue", reverse=True,
                                                                   domain=[-lim, lim], clamp=True)),
        tooltip=["type a:N", "type b:N", alt.Tooltip("score:Q", format=".2f")])
    diag = base.transform_filter("datum.self").mark_rect(color="#e6e6e6").encode(
        tooltip=["type a:N", alt.Tooltip("score:Q", title="own clustering (Moran's I)", format=".2f")])
    text = base.mark_text(fontSize=11).encode(
        text=alt.Text("score:Q", format=".2f"),
        color=alt.condition(f"!datum.self && abs(datum.score) > {0.6 * lim}", alt.value("white"),
                            alt.value("black")))
    side = max(width, 34 * len(types))
    return alt.layer(rect, diag, text).properties(width=side, height=side, title="Co-occurrence score")


def blend_key(legend: pd.DataFrame, names: list[str], width: int = 200) -> alt.LayerChart:
    """The blend colour key: a square for two types, a triangle for three."""
    if len(names) == 2:
        steps = int(round(np.sqrt(len(legend))))
        d = legend.assign(u=(legend["a"] * (steps - 1)).round().astype(int),
                          v=(legend["b"] * (steps - 1)).round().astype(int))
        return alt.Chart(d).mark_rect().encode(
            x=alt.X("u:O", title=f"{names[0]} →", axis=alt.Axis(labels=False, ticks=False)),
            y=alt.Y("v:O", title=f"{names[1]} →", sort="descending", axis=alt.Axis(labels=False, ticks=False)),
            color=alt.Color("color:N", scale=None),
            tooltip=[alt.Tooltip("a:Q", title=names[0]), alt.Tooltip("b:Q", title=names[1])],
        ).properties(width=width, height=width, title="Colour key")
    size = width * 0.9
    pts = alt.Chart(legend).mark_point(filled=True, shape="triangle-up", size=(size / 11) ** 2 * 0.9,
                                       opacity=1).encode(
        x=alt.X("x:Q", axis=None, scale=alt.Scale(domain=[-0.15, 1.15])),
        y=alt.Y("y:Q", axis=None, scale=alt.Scale(domain=[-0.2, 1.0])),
        color=alt.Color("color:N", scale=None),
        tooltip=[alt.Tooltip("a:Q", title=names[0]), alt.Tooltip("b:Q", title=names[1]),
                 alt.Tooltip("c:Q", title=names[2])])
    corners = pd.DataFrame({"x": [0.0, 1.0, 0.5], "y": [-0.09, -0.09, 0.93], "name": names,
                            "align": ["left", "right", "center"]})
    labels = [alt.Chart(corners.iloc[[i]]).mark_text(fontSize=12, fontWeight="bold", align=a).encode(
        x="x:Q", y="y:Q", text="name:N") for i, a in enumerate(["left", "right", "center"])]
    return alt.layer(pts, *labels).properties(width=width, height=width * 0.95, title="Colour key (mix)")


def noise_histogram(table: pd.DataFrame, column: str, cut: float, label: str, width: int = 380) -> alt.LayerChart:
    """Histogram of a fit-quality column with its flagging cut-off."""
    hist = alt.Chart(table[[column]]).mark_bar(color="#7f7f7f").encode(
        x=alt.X(f"{column}:Q", bin=alt.Bin(maxbins=50), title=label), y=alt.Y("count():Q", title="spots"))
    rule = alt.Chart(pd.DataFrame({"cut": [cut]})).mark_rule(color="#D55E00", strokeWidth=2.5,
                                                              strokeDash=[6, 4]).encode(x="cut:Q")
    return alt.layer(hist, rule).properties(width=width, height=180, title=f"{label} (cut-off dashed)")
