"""Data & model: load the demo or user files, see what was loaded, train or load a model."""

import time

import pandas as pd
import streamlit as st

from destvi_core.errors import TrainingCancelled
from studio_ui import charts, loaders, state, ui
from studio_ui.palette import type_colors

ui.page_title("Data & model")

# ------------------------------------------------------------------ 1. data
st.header("1 · Data")
source = st.radio("Source", ["Built-in demo", "Upload files", "Files on this server"],
                  horizontal=True, key="data_source", label_visibility="collapsed")


def pick_keys(sc, stdata, tag: str):
    """Label column and count layers for a freshly read pair."""
    obs_cols = [c for c in sc.obs.columns]
    if not obs_cols:
        st.error("The reference has no annotation columns (obs is empty). Fix: add the cell-type "
                 "labels as a column of obs, e.g. obs['cell_type'].", icon=":material/error:")
        return None
    guess = next((c for c in ("cell_type", "celltype", "cell_types", "labels", "label") if c in obs_cols),
                 obs_cols[0])
    c1, c2, c3 = st.columns(3)
    labels_key = c1.selectbox("Cell-type labels (reference obs column)", obs_cols,
                              index=obs_cols.index(guess), key=f"labels_{tag}")
    layer_sc = c2.selectbox("Reference counts", ["X"] + list(sc.layers.keys()), key=f"lsc_{tag}",
                            index=(["X"] + list(sc.layers.keys())).index("counts") if "counts" in sc.layers else 0)
    layer_st = c3.selectbox("Spatial counts", ["X"] + list(stdata.layers.keys()), key=f"lst_{tag}",
                            index=(["X"] + list(stdata.layers.keys())).index("counts") if "counts" in stdata.layers else 0)
    return labels_key, None if layer_sc == "X" else layer_sc, None if layer_st == "X" else layer_st


if source == "Built-in demo":
    st.write("A simulated lymph node (8 immune and stromal cell types, 4,000 reference cells, "
             "1,000 spots) with known truth — ready in seconds.")
    if st.button("▶ Use the demo", type="primary", key="use_demo"):
        with ui.user_errors("building the demo"):
            state.set_data(loaders.demo_data(0))
elif source == "Upload files":
    c1, c2 = st.columns(2)
    ref = c1.file_uploader("Reference (single-cell) .h5ad", key="up_ref")
    spa = c2.file_uploader("Spatial (Visium) .h5ad", key="up_st")
    st.caption("A Visium folder (spaceranger output) cannot be uploaded — use *Files on this server*.")
    if ref is not None and spa is not None:
        with ui.user_errors("reading the uploads"):
            ref_b, spa_b = ref.getvalue(), spa.getvalue()
            k_ref, k_st = loaders.upload_key(ref_b), loaders.upload_key(spa_b)
            sc = loaders.read_upload(k_ref, ref.name, ref_b)
            stdata = loaders.read_upload(k_st, spa.name, spa_b)
            keys = pick_keys(sc, stdata, "up")
            if keys and st.button("Check and load", type="primary", key="load_up"):
                state.set_data(loaders.prepare(k_ref, k_st, *keys, f"{ref.name} + {spa.name}", sc, stdata))
else:
    c1, c2 = st.columns(2)
    ref_path = c1.text_input("Reference .h5ad path", key="path_ref")
    spa_path = c2.text_input("Spatial .h5ad path or Visium folder", key="path_st")
    if ref_path and spa_path:
        with ui.user_errors("reading the files"):
            s_ref, s_st = loaders.path_stamp(ref_path), loaders.path_stamp(spa_path)
            sc, stdata = loaders.read_path(ref_path, s_ref), loaders.read_path(spa_path, s_st)
            keys = pick_keys(sc, stdata, "path")
            if keys and st.button("Check and load", type="primary", key="load_path"):
                state.set_data(loaders.prepare(ref_path + s_ref, spa_path + s_st, *keys,
                                               f"{ref_path} + {spa_path}", sc, stdata))

data = state.data()
if data is None:
    st.stop()

report = data.report
st.subheader(f"Loaded: {data.source}")
counts = pd.Series(report.get("cell_type_counts") or
                   data.sc.obs[data.labels_key].value_counts().sort_index().to_dict(), name="cells")
m = st.columns(5)
m[0].metric("Reference cells", f"{report.get('n_cells', data.sc.n_obs):,}")
m[1].metric("Spots", f"{report.get('n_spots', data.st.n_obs):,}")
m[2].metric("Genes shared", f"{report.get('n_shared', data.st.n_vars):,}")
m[3].metric("Genes used", f"{report.get('n_used_genes', data.st.n_vars):,}",
            help="Shared genes, then the most variable ones of the reference.")
m[4].metric("Cell types", len(counts))
colors = type_colors(counts.index)
types_df = pd.DataFrame({"cell type": counts.index.astype(str), "cells": counts.to_numpy()})
types_df.insert(0, "colour", [colors[str(t)] for t in counts.index])
st.dataframe(types_df.style.map(lambda c: f"background-color: {c}; color: {c}", subset=["colour"]),
             hide_index=True, width="content",
             column_config={"colour": st.column_config.TextColumn("colour", width="small")})
if data.messages:
    st.markdown("**Messages from the checks**")
    ui.show_messages(data.messages)
else:
    st.success("All checks passed.", icon=":material/check_circle:")

# ------------------------------------------------------------------ 2. model
st.header("2 · Model")
default = loaders.training_params()
st.caption(f"Device: **{loaders.device_label(getattr(default, 'device', 'auto'))}**")
mode = st.radio("Model", ["Train (instant when cached)", "Load a saved model folder"],
                horizontal=True, key="model_mode", label_visibility="collapsed")

if mode.startswith("Train"):
    overrides = {}
    presets = {"Quick look (100 + 300 epochs)": "quick", "Tutorial (300 + 2,500 epochs)": "tutorial"}
    is_demo = data.source.startswith("built-in demo")
    choice = st.selectbox("Training length", list(presets), index=0 if is_demo else 1, key="preset",
                          help="Quick is enough for the demo and for a first look; the tutorial's "
                               "epochs are the reference setting for final results.")
    chosen = loaders.preset_params(presets[choice])
    with st.expander("Training settings", expanded=False):
        c1, c2, c3 = st.columns(3)
        overrides["sc_epochs"] = c1.number_input("Reference epochs (CondSCVI)", 1, 5000,
                                                 int(chosen.sc_epochs), key=f"sc_ep_{presets[choice]}")
        overrides["st_epochs"] = c2.number_input("Spatial epochs (DestVI)", 1, 20000,
                                                 int(chosen.st_epochs), key=f"st_ep_{presets[choice]}")
        overrides["seed"] = c3.number_input("Seed", 0, 10**6, int(getattr(default, "seed", 0)), key="seed")
    params = loaders.preset_params(presets[choice], **overrides)
    st_epochs = loaders.spatial_epochs(data, params)
    if st_epochs > params.st_epochs:
        st.caption(f"Small slide: DestVI runs {st_epochs:,} epochs (at least "
                   f"{params.st_min_steps:,} optimisation steps) instead of {params.st_epochs:,}.")
    b1, b2, _ = st.columns([1, 1, 4])
    train_clicked = b1.button("▶ Train", type="primary", key="train")
    b2.button("■ Cancel", key="cancel", disabled=not train_clicked,
                               on_click=lambda: state.set_flag("cancel_requested", True))
    if state.flag("training") and not train_clicked:
        # the previous run was interrupted (Cancel, or another widget changed during training)
        state.set_flag("training", False)
        state.set_flag("cancel_requested", False)
        st.warning("Training cancelled — nothing was saved"
                   + ("; the previous model is kept." if state.models() else "."), icon=":material/stop_circle:")
    if train_clicked:
        state.set_flag("training", True)
        state.set_flag("cancel_requested", False)
        bar = st.progress(0.0, text="Starting…")
        chart_slot = st.empty()
        rows: list[dict] = []
        last = {"t": 0.0}
        names = {"condscvi": "reference (CondSCVI)", "destvi": "spatial (DestVI)"}
        total = int(params.sc_epochs) + st_epochs

        def on_progress(p) -> None:
            loss = p.loss.get("loss", sum(v for k, v in p.loss.items() if k != "kl_weight"))
            rows.append({"model": names.get(p.model, p.model), "epoch": p.epoch, "loss": float(loss)})
            now = time.perf_counter()
            if now - last["t"] < 0.25 and p.epoch != p.n_epochs:
                return
            last["t"] = now
            done = p.epoch + (int(getattr(params, "sc_epochs", 0)) if p.model == "destvi" else 0)
            bar.progress(min(done / total, 1.0),
                         text=f"{names.get(p.model, p.model)} · epoch {p.epoch}/{p.n_epochs} · "
                              f"loss {loss:,.1f} · about {p.eta_s:,.0f} s left for this model")
            chart_slot.altair_chart(charts.finish(charts.loss_chart(pd.DataFrame(rows), width=ui.width(600)),
                                                  state.presentation()), width="content")

        with ui.user_errors("training"):
            try:
                t0 = time.perf_counter()
                models = loaders.find_models(data, params, disk=False) or loaders.train(data, params, callback=on_progress,
                                       should_stop=lambda: bool(state.flag("cancel_requested")))
                state.set_models(models)
                bar.progress(1.0, text=f"Done in {time.perf_counter() - t0:,.1f} s")
            except TrainingCancelled:
                st.warning("Training cancelled — nothing was saved"
                           + ("; the previous model is kept." if state.models() else "."), icon=":material/stop_circle:")
        # not in a `finally`: when Cancel interrupts the run, the flag must survive into the rerun
        state.set_flag("training", False)
else:
    folder = st.text_input("Saved model folder (on this server)", key="model_folder")
    if folder and st.button("Load model", type="primary", key="load_model"):
        with ui.user_errors("loading the model"):
            state.set_models(loaders.load_folder(data, folder))

models = state.models()
if models is None:
    st.info("No model yet for these data.", icon=":material/info:")
    st.stop()

st.success(f"Model ready ({models.origin}).", icon=":material/check_circle:")
hist = []
with ui.user_errors("reading the training history"):
    labels = {"condscvi": "reference (CondSCVI)", "destvi": "spatial (DestVI)"}
    for name, records in models.training_histories().items():
        h = pd.DataFrame(records)
        if {"epoch", "loss"} <= set(h.columns):
            hist.append(h[["epoch", "loss"]].assign(model=labels[name]))
if hist:
    loss_df = pd.concat(hist, ignore_index=True)
    chart = charts.loss_chart(loss_df, width=ui.width(600))
    ui.show_chart(chart, key="loss_final")
    ui.downloads(chart, loss_df, "training_loss", "loss")
st.page_link("pages/2_proportions.py", label="See the proportion maps →", icon=":material/map:")
from studio_ui.fit_view import fit_quality_summary  # noqa: E402
fit_quality_summary(models)

if not state.presentation():
    with st.expander("Save this model to a folder"):
        out = st.text_input("Folder", key="save_folder")
        if out and st.button("Save", key="save_model"):
            with ui.user_errors("saving the model"):
                from destvi_core.persistence import save_models

                ui.ensure_loaded(models)
                path = save_models(out, models.sc_model, models.st_model,
                                   extra_metadata={"params": models.params, "source": data.source})
                st.success(f"Saved to {path}")
