"""Gamma explorer: 2-D colour map of a type's cell state on the tissue and the reference cells,
top genes per axis and their pathway enrichment."""

import numpy as np
import pandas as pd
import streamlit as st

from destvi_core.analysis import colormap_legend
from studio_ui import charts, loaders, state, ui

ui.page_title("Gamma explorer")
st.caption("Each spot's continuous cell state (gamma) for one cell type, summarised by a "
           "spatially-weighted PCA: similar colours = similar states.")
models, data, types, spots, image = ui.model_page(need_model=True)

c1, c2, c3 = st.columns([2, 2, 2])
ct = ui.type_picker(types, key="gamma", container=c1)
thr = ui.current_thresholds(models)[ct]
c2.metric("Threshold used", f"{thr:.3f}", help="Set on the Thresholds page (spots above it are used).")
weighting = "outer"
if not state.presentation():
    weighting = c3.selectbox("Proportion weighting", ["outer", "scalar", "none"], key="g_weight",
                             help="outer: spots with more of the type count more (intended); "
                                  "scalar: as destvi_utils (bug-compatible); none: unweighted.")

with ui.user_errors("exploring gamma"):
    ex, msgs = loaders.gamma_exploration(models.key, ct, thr, weighting, models)
    ui.show_messages(msgs)
    ev = np.asarray(ex.pca.explained_variance, dtype=float)
    ax1, ax2 = f"sPC1 ({ev[0]:.0f}% var.)", f"sPC2 ({ev[-1]:.0f}% var.)"
    proj = ex.pca.spot_projection
    sel = pd.DataFrame({"spot": ex.spot_names, "x": spots["x"].to_numpy()[ex.spot_indices],
                        "y": spots["y"].to_numpy()[ex.spot_indices], "pc1": proj[:, 0],
                        "pc2": proj[:, -1], "color": ex.spot_colors,
                        "proportion": spots[ct].to_numpy()[ex.spot_indices]})
    cells = pd.DataFrame({"cell": np.asarray(data.sc.obs_names)[ex.cell_indices],
                          "pc1": ex.cell_projection[:, 0] if len(ex.cell_indices) else [],
                          "pc2": ex.cell_projection[:, -1] if len(ex.cell_indices) else [],
                          "color": ex.cell_colors})
    results = dict(state.flag("spca_results", {}) or {})
    results[ct] = (list(ex.spot_names), proj[:, :2], list(ex.spot_colors))
    state.set_flag("spca_results", results)

    st.markdown(f"**{len(sel)} spots** with {ct} above the threshold · **{len(cells)} reference cells**")
    w = ui.width(300)
    col1, col2, col3 = st.columns([4, 3, 3])
    with col1:
        tissue = charts.rgb_map(spots, sel, width=ui.width(380), image=image, title=f"{ct} state on the tissue")
        ui.show_chart(tissue, key="g_tissue")
        ui.downloads(tissue, sel, f"gamma_tissue_{ct}", "g_tissue")
    with col2:
        cell_chart = charts.pc_scatter(cells, f"Reference {ct} cells", ax1, ax2, width=w,
                                       size=60 if state.presentation() else 30,
                                       tooltip=["cell:N", "pc1:Q", "pc2:Q"])
        ui.show_chart(cell_chart, key="g_cells")
        ui.downloads(cell_chart, cells, f"gamma_cells_{ct}", "g_cells")
    with col3:
        legend = charts.colour_legend(colormap_legend(21), width=int(w * 0.6))
        ui.show_chart(legend, key="g_legend")
        spot_chart = charts.pc_scatter(sel, "Spots in sPC space", ax1, ax2, width=int(w * 0.8),
                                       size=60 if state.presentation() else 25, shape="cross",
                                       tooltip=["spot:N", "pc1:Q", "pc2:Q"])
        ui.show_chart(spot_chart, key="g_spots")

    st.subheader("Top genes per axis")
    genes = ex.genes
    if genes is None or len(genes) == 0:
        st.info("No genes to rank for this type (no reference cells).")
        st.stop()
    g1, g2, g3 = st.columns([1, 1, 1])
    axis = g1.selectbox("Axis", sorted(genes["axis"].unique()), key="g_axis")
    direction = g2.selectbox("Direction", ["positive", "negative"], key="g_dir")
    n_top = g3.slider("Genes", 5, int(genes.groupby(["axis", "direction"]).size().max()), 25, key="g_ntop")
    chosen = genes[(genes["axis"] == axis) & (genes["direction"] == direction)].nsmallest(n_top, "rank")
    wide = genes.pivot_table(index="rank", columns=["axis", "direction"], values="gene", aggfunc="first")
    wide.columns = [f"{a} {d}" for a, d in wide.columns]
    t1, t2 = st.columns([3, 2])
    t1.dataframe(wide.head(n_top), width="stretch")
    t2.dataframe(chosen[["rank", "gene", "correlation"]], hide_index=True, width="stretch")
    with t2:
        ui.csv_download(genes, f"axis_genes_{ct}", "g_genes", "⬇ All axis genes (CSV)")

    st.subheader(f"Pathway enrichment — {axis} {direction}")
    offline, offline_key = data.gene_sets, "data"
    if not state.presentation():
        with st.expander("Gene sets"):
            e1, e2 = st.columns(2)
            library = e1.text_input("Enrichr library (online)", "BioPlanet_2019", key="g_lib")
            organism = e2.selectbox("Organism", ["human", "mouse"], key="g_org")
            gmt = st.file_uploader("Offline gene sets (.gmt) — used when Enrichr is unreachable",
                                   type=["gmt", "txt"], key="g_gmt")
            if gmt is not None:
                import tempfile
                from pathlib import Path

                path = Path(tempfile.gettempdir()) / f"destvi_studio_{loaders.upload_key(gmt.getvalue())[:16]}.gmt"
                path.write_bytes(gmt.getvalue())
                offline, offline_key = str(path), path.name
    library = st.session_state.get("g_lib", "BioPlanet_2019")
    organism = st.session_state.get("g_org", "human")
    res = loaders.enrichment(tuple(chosen["gene"]), library, organism, offline_key, offline,
                             list(models.st_model.genes))
    st.caption(f"Source: **{res.source}**" + (f" — {res.message}" if res.message else ""))
    table = res.table
    if table is None or len(table) == 0:
        st.info("No gene set overlaps these genes.")
    else:
        enr = dict(state.flag("enrichment_results", {}) or {})
        enr[f"{ct}_{axis}_{direction}"] = table
        state.set_flag("enrichment_results", enr)
        b1, b2 = st.columns([3, 2])
        with b1:
            bars = charts.enrichment_bars(table, width=ui.width(460))
            ui.show_chart(bars, key="g_enr")
            ui.downloads(bars, table, f"enrichment_{ct}_{axis}_{direction}", "g_enr")
        b2.dataframe(table[["term", "overlap", "p_value", "adjusted_p_value", "genes"]],
                     hide_index=True, width="stretch",
                     column_config={"p_value": st.column_config.NumberColumn("p", format="%.2e"),
                                    "adjusted_p_value": st.column_config.NumberColumn("adj. p", format="%.2e")})
