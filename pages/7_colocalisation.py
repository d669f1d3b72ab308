"""Co-localisation: where two or three cell types meet (blended map) and which types are neighbours."""

import numpy as np
import streamlit as st

from destvi_core.analysis import blend_colors, blend_legend, strongest_pairs
from studio_ui import maps, region_charts, region_loaders, region_ui, state, ui

ui.page_title("Co-localisation")
st.caption("Which cell types fill the same neighbourhoods? The score of a pair is the correlation "
           "of one type's proportion in a spot with the other's in the neighbouring spots (the "
           "spatial graph of the automatic thresholds); the map blends two or three types' "
           "proportions, one primary colour each.")
models, data, types, spots, image = ui.model_page()
scores, within = region_loaders.cooccurrence(models.key, models)
pairs = strongest_pairs(scores, within)

top = pairs.iloc[0] if len(pairs) else None
default = [top["type_a"], top["type_b"]] if top is not None else types[:2]
picked = st.multiselect("Cell types to blend (2 or 3)", types, default=default, max_selections=3,
                        key="coloc_types")
if len(picked) < 2:
    st.info("Pick two or three cell types.", icon=":material/info:")
else:
    values = spots[picked].to_numpy()
    colors = blend_colors(values)
    primaries = {2: ["#ff00ff", "#00ff00"], 3: ["#ff0000", "#00ff00", "#0000ff"]}[len(picked)]
    names = " + ".join(picked)
    left, right = st.columns([3, 1]) if not state.presentation() else st.columns([5, 2])
    with left:
        blend = maps.colour_map(spots, colors, f"{names}: blended proportions", width=ui.width(520),
                                image=image, types=types, select=True,
                                key=list(zip(picked, primaries)), background="#3c3c3c")
        event = ui.show_chart(blend, key=region_ui.map_key("coloc_map"), on_select="rerun")
        table = spots[["spot", "x", "y", *picked]].assign(color=maps.hex_colors(colors))
        ui.downloads(blend, table, f"blend_{'_'.join(picked)}", "coloc_map")
    with right:
        key = region_charts.blend_key(blend_legend(len(picked), 11 if len(picked) == 2 else 9), picked,
                                      width=ui.width(190))
        ui.show_chart(key, key="coloc_key", height=region_charts.frame_height(key, 70))
        st.caption("Black: none of them · a primary colour: that type alone · mixed colours: the "
                   "types share the spot · white: all at their highest (each type is scaled to "
                   "its 99th percentile).")
        both = np.all(values > np.array([ui.current_thresholds(models)[t] for t in picked]), axis=1)
        st.metric("Spots containing all of them", f"{int(both.sum()):,}",
                  help="Above each type's threshold (Thresholds page).")
    selection = region_ui.selection_from(event, blend)
    if not state.presentation():
        region_ui.selection_saver(selection, "coloc_sel")

st.subheader("Co-occurrence of every pair of types")
h1, h2 = st.columns([3, 2])
with h1:
    heat = region_charts.cooccurrence_heatmap(scores, width=ui.width(380))
    ui.show_chart(heat, key="coloc_heat", height=region_charts.frame_height(heat, 150))
    ui.downloads(heat, scores.rename_axis("cell type").reset_index(), "cooccurrence_scores", "coloc_heat")
with h2:
    st.markdown("**Strongest neighbours**")
    shown = pairs.head(10).rename(columns={"type_a": "type", "type_b": "with",
                                           "neighbour_score": "neighbour score", "within_spot": "same spot"})
    st.dataframe(shown.round(3), hide_index=True, width="stretch")
    st.caption("Neighbour score: bivariate Moran's I (about −1..1; the diagonal of the matrix is "
               "each type's own clustering). Same spot: correlation within spots. Proportions sum "
               "to one, so unrelated types score slightly below zero.")
    ui.csv_download(pairs, "cooccurrence_pairs", "coloc_pairs", "⬇ All pairs (CSV)")
