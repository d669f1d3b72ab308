"""Proportion maps: one type, all types (small multiples), dominant type, mean proportions."""

import pandas as pd
import streamlit as st

from studio_ui import charts, region_loaders, region_ui, state, ui
from studio_ui.palette import type_colors

ui.page_title("Proportion maps")
models, data, types, spots, image = ui.model_page()

c1, c2 = st.columns([2, 3])
ct = ui.type_picker(types, key="prop", container=c1)
show_image = image is not None and c2.toggle("Show histology image", value=True, key="show_img")
img = image if show_image else None

left, right = st.columns(2)
with left:
    chart = charts.proportion_map(spots, ct, types, width=ui.width(440), image=img,
                                  title=f"{ct} proportion", select=True)
    event_one = ui.show_chart(chart, key=region_ui.map_key("map_one"), on_select="rerun")
    ui.downloads(chart, spots[["spot", "x", "y", ct]], f"proportion_{ct}", "one")
with right:
    dom = region_loaders.cached_map(
        "dominant", (models.key, ui.width(440), img is not None and data.key),
        lambda: charts.dominant_map(spots, types, width=ui.width(440), image=img, select=True))
    event_dom = ui.show_chart(dom, key=region_ui.map_key("map_dom"), on_select="rerun")
    ui.downloads(dom, spots[["spot", "x", "y", "dominant", "dominant_prop"]], "dominant_type", "dom")
st.caption("Hover a spot for all its proportions · scroll to zoom, drag to pan, double-click to "
           "reset · lasso or box (map toolbar) to select spots and save them as a region.")
selection = region_ui.selection_from(event_one, chart)
if selection is None:
    selection = region_ui.selection_from(event_dom, dom)
if not state.presentation():
    region_ui.selection_saver(selection, "prop_sel")

st.subheader("All cell types")
shared = st.radio("Colour scale", ["shared", "per type"], horizontal=True, key="scale_mode") == "shared"
columns = 3 if state.presentation() else 4
grid = region_loaders.cached_map(
    "grid", (models.key, shared, ui.width(230), columns, img is not None and data.key),
    lambda: charts.small_multiples(spots, types, shared=shared, width=ui.width(230), columns=columns,
                                   image=img))
ui.show_chart(grid, key="map_grid")
ui.downloads(grid, spots[["spot", "x", "y", *types]], "proportions_all_types", "grid")

st.subheader("Mean proportion per type")
colors = type_colors(types)
means = spots[types].mean().sort_values(ascending=False)
table = pd.DataFrame({"cell type": means.index, "mean proportion": means.to_numpy().round(3),
                      "dominant in (spots)": [int((spots["dominant"] == t).sum()) for t in means.index]})
bars = charts.mean_bars(table, colors, width=ui.width(440))
t1, t2 = st.columns([2, 3])
t1.dataframe(table, hide_index=True, width="stretch")
with t2:
    ui.show_chart(bars, key="mean_bars")
ui.downloads(bars, table, "mean_proportions", "means")

from studio_ui import sections_view  # noqa: E402  seed-ensemble spread, sections side by side
sections_view.render(models, spots, types, img)
