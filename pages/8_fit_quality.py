"""Fit quality: how well the model explains each spot, and where the reference may lack a type."""

import numpy as np
import streamlit as st

from studio_ui import charts, fit_view, region_charts, region_loaders, region_ui, state, ui

ui.page_title("Fit quality")
st.caption("Can we trust this spot? The **deviance per count** measures how far the spot's counts "
           "are from what the model expects (0 = perfect); the **noise share** is the part of its "
           "expected counts given to the noise profile, which takes up what no reference cell type "
           "explains. Poorly explained spots that sit together point to a cell type the reference "
           "lacks.")
models, data, types, spots, image = ui.model_page(need_model=True)
table = fit_view.compute(models)
if table is None:
    st.stop()

n_mads, noise_cut = 3.0, 0.25
if not state.presentation():
    with st.expander("Flagging rule"):
        c1, c2 = st.columns(2)
        n_mads = c1.slider("Deviance: robust SDs above the median", 1.0, 6.0, 3.0, 0.5, key="fit_mads")
        noise_cut = c2.slider("Noise share above", 0.05, 0.9, 0.25, 0.05, key="fit_noise")
summary = region_loaders.fit_summary(models.key, float(n_mads), float(noise_cut), models, table)
st.markdown(fit_view.summary_line(summary))
(st.warning if summary.clustered else st.info)(summary.note, icon=":material/troubleshoot:")

dev = table["deviance_per_count"].to_numpy()
noise = table["noise_share"].to_numpy()
hi_dev = float(np.quantile(dev, 0.99))
left, right = st.columns(2)
with left:
    m1 = charts.value_map(spots, dev, "deviance per count", width=ui.width(440), image=image,
                          title="Deviance per count",
                          scheme="magma", types=types, vmax=hi_dev, select=True)
    ev1 = ui.show_chart(m1, key=region_ui.map_key("fit_dev"), on_select="rerun")
    ui.downloads(m1, spots[["spot", "x", "y"]].assign(**{"deviance per count": dev}), "fit_deviance", "fit_dev")
with right:
    m2 = charts.value_map(spots, noise, "noise share", width=ui.width(440), image=image,
                          title="Noise share", scheme="magma",
                          types=types, vmin=0.0, vmax=max(float(noise.max()), 1e-6), select=True)
    ev2 = ui.show_chart(m2, key=region_ui.map_key("fit_noise"), on_select="rerun")
    ui.downloads(m2, spots[["spot", "x", "y"]].assign(**{"noise share": noise}), "fit_noise_share", "fit_noise")

selection = region_ui.selection_from(ev1, m1)
if selection is None:
    selection = region_ui.selection_from(ev2, m2)
if not state.presentation():
    region_ui.selection_saver(selection, "fit_sel")
    if summary.n_flagged:
        st.button(f"Make a region of the {summary.n_flagged:,} flagged spots", key="fit_region",
                  on_click=region_ui.save_flagged, args=(summary.flagged,))

h1, h2 = st.columns(2)
with h1:
    hist = region_charts.noise_histogram(table, "deviance_per_count", summary.cut_deviance,
                                         "deviance per count", width=ui.width(380))
    ui.show_chart(hist, key="fit_hist_dev", height=region_charts.frame_height(hist))
with h2:
    hist2 = region_charts.noise_histogram(table, "noise_share", summary.cut_noise, "noise share",
                                          width=ui.width(380))
    ui.show_chart(hist2, key="fit_hist_noise", height=region_charts.frame_height(hist2))
st.caption(f"Spatial clustering (Moran's I on the spot graph): deviance {summary.moran_deviance:.2f}, "
           f"noise share {summary.moran_noise:.2f} (0 = scattered, 1 = smooth patches).")
out = table.rename_axis("spot").reset_index().assign(flagged=summary.flagged)
ui.csv_download(out, "fit_quality", "fit_csv", "⬇ Fit quality per spot (CSV)")
