"""Data & model: load the demo or user files (one or several sections), train as background
jobs (instant when cached) or load a saved model."""

import pandas as pd
import streamlit as st

from studio_ui import charts, jobs_panel, jobs_ui, loaders, project, state, ui
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


def pick_sections(sts: list, tag: str) -> str | None:
    """One spatial file may hold several sections in an obs column."""
    if len(sts) != 1:
        st.caption(f"{len(sts)} spatial files: one section each (named by file).")
        return None
    candidates = project.split_candidates(sts[0])
    if not candidates:
        return None
    choice = st.selectbox("Sections", ["one section"] + [f"split by obs['{c}']" for c in candidates],
                          key=f"split_{tag}", help="One file can hold several sections, named "
                          "in an obs column (e.g. library_id).")
    return None if choice == "one section" else candidates[[f"split by obs['{c}']" for c in
                                                             candidates].index(choice)]


def load(new_project) -> None:
    state.set_project(new_project)
    st.rerun()  # the sidebar (drawn before this page) shows the new data at once


if source == "Built-in demo":
    st.write("A simulated lymph node (8 immune and stromal cell types, 4,000 reference cells, "
             "1,000 spots) with known truth. A first model trains in the background and the "
             "maps appear within a minute; a longer-trained one replaces it when ready.")
    if st.button("▶ Use the demo", type="primary", key="use_demo"):
        with ui.user_errors("building the demo"):
            jobs_ui.warm_up_for_demo()
            demo = project.demo_project(0)
            state.set_project(demo)
            jobs_ui.start_demo(demo)
            st.rerun()
elif source == "Upload files":
    c1, c2 = st.columns(2)
    ref = c1.file_uploader("Reference (single-cell) .h5ad", key="up_ref")
    spa = c2.file_uploader("Spatial (Visium) .h5ad — one file per section", key="up_st",
                           accept_multiple_files=True)
    st.caption("A Visium folder (spaceranger output) cannot be uploaded — use *Files on this server*.")
    spa = [f for f in (spa if isinstance(spa, list) else [spa]) if f is not None] if spa else []
    if ref is not None and spa:
        with ui.user_errors("reading the uploads"):
            from destvi_core.sections import unique_names

            ref_b = ref.getvalue()
            k_ref = loaders.upload_key(ref_b)
            sc = loaders.read_upload(k_ref, ref.name, ref_b)
            names = unique_names([f.name for f in spa])
            payloads = [f.getvalue() for f in spa]
            k_sts = [loaders.upload_key(b) for b in payloads]
            sts = [loaders.read_upload(k, f.name, b) for k, f, b in zip(k_sts, spa, payloads)]
            keys = pick_keys(sc, sts[0], "up")
            split = pick_sections(sts, "up")
            if keys and st.button("Check and load", type="primary", key="load_up"):
                label = f"{ref.name} + " + (spa[0].name if len(spa) == 1 else f"{len(spa)} sections")
                load(project.prepare_project(k_ref, tuple(k_sts), tuple(names), *keys, split,
                                             label, sc, tuple(sts)))
else:
    c1, c2 = st.columns(2)
    ref_path = c1.text_input("Reference .h5ad path", key="path_ref")
    spa_text = c2.text_area("Spatial: .h5ad file or Visium folder (one per line for several "
                            "sections), or a folder of sections", key="path_st", height=80)
    if ref_path and spa_text.strip():
        with ui.user_errors("reading the files"):
            from destvi_core.sections import unique_names

            paths = project.spatial_paths(spa_text)
            names = unique_names(paths)
            s_ref = loaders.path_stamp(ref_path)
            stamps = [loaders.path_stamp(p) for p in paths]
            sc = loaders.read_path(ref_path, s_ref)
            sts = [loaders.read_path(p, s) for p, s in zip(paths, stamps)]
            keys = pick_keys(sc, sts[0], "path")
            split = pick_sections(sts, "path")
            if keys and st.button("Check and load", type="primary", key="load_path"):
                label = f"{ref_path} + " + (paths[0] if len(paths) == 1 else f"{len(paths)} sections")
                load(project.prepare_project(ref_path + s_ref, tuple(p + s for p, s in zip(paths, stamps)),
                                             tuple(names), *keys, split, label, sc, tuple(sts)))

loaded, data = state.project(), state.data()
if data is None:
    st.stop()

report = data.report
many = len(loaded.sections) > 1
st.subheader(f"Loaded: {loaded.source}" + (f" — {len(loaded.sections)} sections" if many else ""))
if many:
    conditions = state.conditions()
    table = pd.DataFrame({"section": loaded.names,
                          "spots": [loaded.sections[n].st.n_obs for n in loaded.names],
                          "condition": [conditions.get(n, "") for n in loaded.names]})
    edited = st.data_editor(table, hide_index=True, key="conditions_editor", width="content",
                            disabled=["section", "spots"],
                            column_config={"condition": st.column_config.TextColumn(
                                "condition", help="e.g. control / treated: the proportion page "
                                "compares conditions")})
    state.set_conditions(dict(zip(edited["section"], edited["condition"].fillna(""))))
    st.caption(f"Genes in the reference and every section: {report.get('n_shared', 0):,}. "
               f"Showing section **{state.section()}** — pick another in the sidebar.")
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
manager = jobs_ui.job_manager()
default = loaders.training_params()
st.caption(f"Device: **{loaders.device_label(getattr(default, 'device', 'auto'))}** · trainings "
           f"run as background jobs on the {manager.describe_cluster()}: leave the page or reload, "
           "they keep going (see **Jobs**).")
mode = st.radio("Model", ["Train (instant when cached)", "Load a saved model folder"],
                horizontal=True, key="model_mode", label_visibility="collapsed")
section_keys = tuple(d.key for d in loaded.sections.values())

if mode.startswith("Train"):
    overrides = {}
    presets = {"Automatic (steps scaled to the slide)": "default",
               "Quick look (100 + 300 epochs)": "quick", "Tutorial (300 + 2,500 epochs)": "tutorial"}
    choice = st.selectbox("Training length", list(presets), index=1 if data.is_demo else 0,
                          key="preset", help="Automatic: the tutorial's epochs bounded to 5,000-"
                          "20,000 spatial optimisation steps, so small slides get enough steps and "
                          "Visium HD slides no more than they need (README, 'Schedule in steps'). "
                          "Quick is enough for the demo and for a first look; the tutorial's "
                          "epochs are the scvi-tools setting.")
    chosen = loaders.preset_params(presets[choice])
    with st.expander("Training settings", expanded=False):
        c1, c2, c3, c4 = st.columns(4)
        overrides["sc_epochs"] = c1.number_input(
            "Reference epochs (CondSCVI)", 1, 5000, chosen.sc_epochs, key=f"sc_ep_{presets[choice]}",
            placeholder="automatic", help="Empty: chosen from the number of optimisation steps")
        overrides["st_epochs"] = c2.number_input(
            "Spatial epochs (DestVI)", 1, 20000, chosen.st_epochs, key=f"st_ep_{presets[choice]}",
            placeholder="automatic", help="Empty: chosen from the number of optimisation steps")
        overrides["seed"] = c3.number_input("Seed", 0, 10**6, int(getattr(default, "seed", 0)), key="seed")
        n_seeds = int(c4.number_input("Seeds (ensemble)", 1, jobs_ui.MAX_ENSEMBLE, 1, key="n_seeds",
                                      help="Train the spatial model with several seeds in parallel "
                                           "jobs (one reference): the proportion maps then show, "
                                           "per spot, how much the seeds disagree."))
    params = loaders.preset_params(presets[choice], **overrides)
    names = loaded.names
    if many:
        names = st.multiselect("Sections to train", loaded.names, default=loaded.names,
                               key="train_sections") or loaded.names
    with ui.user_errors("planning the training"):
        st.caption("Schedule: " + loaders.training_plan(data, params, manager.local_worker_threads()))
    n_jobs = len(names) * n_seeds
    if n_jobs > 1:
        st.caption(f"One reference model, then {n_jobs} spatial models "
                   f"({len(names)} section{'s' * (len(names) > 1)} x {n_seeds} seed"
                   f"{'s' * (n_seeds > 1)}), in parallel where workers allow.")
    if st.button("▶ Train", type="primary", key="train"):
        with ui.user_errors("submitting the training"):
            jobs_ui.submit(loaded, params, names, n_seeds)
            jobs_ui.sync_models()
            st.rerun()
    jobs_panel.progress(section_keys, key="data")
else:
    folder = st.text_input("Saved model folder (on this server)", key="model_folder")
    if folder and st.button("Load model", type="primary", key="load_model"):
        with ui.user_errors("loading the model"):
            jobs_ui.want(data, [], 1)  # stop waiting for trainings of this section
            state.set_models(loaders.load_folder(data, folder))

models = state.models()
if models is None:
    if jobs_ui.active_jobs(loaded):
        st.info("Training in the background — the maps open as soon as a first model is ready.",
                icon=":material/hourglass_top:")
    else:
        st.info("No model yet for these data.", icon=":material/info:")
    st.stop()

ensemble = f" · ensemble of {len(models.ensemble_seeds)} seeds" if models.ensemble_seeds else ""
st.success(f"Model ready ({models.origin}){ensemble}.", icon=":material/check_circle:")
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
