"""Thresholds: one slider per type starting at the automatic cut-off; map + Z curve redraw live."""

import json

import pandas as pd
import streamlit as st

from studio_ui import charts, loaders, state, ui

ui.page_title("Thresholds")
st.caption("DestVI proportions are never exactly zero: a cut-off per cell type decides which spots "
           "contain it. The automatic cut-off is read from the spatial-autocorrelation (Z) curve.")
models, data, types, spots, image = ui.model_page()
auto = loaders.auto_thresholds(models.key, models)


def auto_value(ct: str) -> float:
    kind = state.threshold_kind()
    return float((auto.primary if kind == "primary" else auto.secondary)[ct])


def slider_key(i: int) -> str:
    return f"thr_slider_{models.key[:8]}_{i}"


def reset_all() -> None:
    state.clear_thresholds()
    for i, ct in enumerate(types):
        st.session_state[slider_key(i)] = round(auto_value(ct), 4)


def on_kind() -> None:
    state.set_threshold_kind(st.session_state["thr_kind"])
    reset_all()


c1, c2, c3 = st.columns([2, 1, 3])
c1.radio("Automatic threshold", ["primary", "secondary"], horizontal=True, key="thr_kind",
         index=["primary", "secondary"].index(state.threshold_kind()), on_change=on_kind,
         help="primary: steepest loss of spatial autocorrelation; secondary: first inflection "
              "point of the smoothed curve (the DestVI tutorial's choice).")
c2.button("↺ Reset to automatic", on_click=reset_all, key="thr_reset")
focus_only = state.presentation() or c3.toggle("Only the selected cell type", key="thr_focus")
focus = ui.type_picker(types, key="thr") if focus_only else None

for ct, note in getattr(auto, "notes", {}).items():
    st.info(f"{ct}: {note}", icon=":material/info:")


@st.fragment
def type_row(i: int, ct: str) -> None:
    """Slider, kept-spots map and Z curve of one type (reruns alone when its slider moves)."""
    key = slider_key(i)
    current = state.thresholds().get(ct, auto_value(ct))
    if key not in st.session_state:
        st.session_state[key] = round(float(current), 4)
    top = max(float(spots[ct].max()), 1e-3)
    st.markdown(f"#### {ct}")
    value = st.slider(f"Cut-off for {ct}", 0.0, round(top + 0.0005, 4), step=0.001, format="%.3f",
                      key=key, on_change=lambda: state.set_threshold(ct, st.session_state[key]))
    kept = int((spots[ct] > value).sum())
    st.caption(f"**{kept} of {len(spots)} spots kept** for {ct} · automatic: "
               f"{auto.primary[ct]:.3f} (primary), {auto.secondary[ct]:.3f} (secondary)")
    left, right = st.columns(2)
    with left:
        m = charts.kept_map(spots, ct, types, value, width=ui.width(360), image=image)
        ui.show_chart(m, key=f"kept_{i}")
    with right:
        curve = auto.curves[ct]
        z_height = ui.width(240)
        z = charts.z_curve(curve, auto.primary[ct], auto.secondary[ct], value,
                           width=ui.width(300), height=z_height)
        # layered charts get a clipped automatic height: give the frame room for title and axes
        ui.show_chart(z, key=f"z_{i}", height=z_height + 90)
    ui.downloads(m, spots.loc[spots[ct] > value, ["spot", "x", "y", ct]], f"kept_spots_{ct}", f"kept{i}")
    state.write_url()


for i, ct in enumerate(types):
    if focus is None or ct == focus:
        with st.container(border=True):
            type_row(i, ct)

st.subheader("Summary")
thr = ui.current_thresholds(models)
summary = pd.DataFrame({
    "cell type": types,
    "threshold": [round(thr[t], 4) for t in types],
    "automatic (primary)": [round(auto.primary[t], 4) for t in types],
    "automatic (secondary)": [round(auto.secondary[t], 4) for t in types],
    "spots kept": [int((spots[t] > thr[t]).sum()) for t in types],
    "changed by hand": [t in state.thresholds() for t in types],
})
st.dataframe(summary, hide_index=True, width="stretch")
d1, d2, _ = st.columns([1, 1, 4])
with d1:
    ui.csv_download(summary, "thresholds", "thr_csv", "⬇ Thresholds (CSV)")
d2.download_button("⬇ Thresholds (JSON)",
                   json.dumps({"kind": state.threshold_kind(), "thresholds": thr}, indent=2),
                   "thresholds.json", "application/json", key="thr_json", on_click="ignore")
