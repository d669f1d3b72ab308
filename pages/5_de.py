"""DE volcano builder: two groups of spots → cell-type-specific DE → volcano, table, gene map."""

import numpy as np
import streamlit as st

from destvi_core.analysis import significance
from studio_ui import charts, groups, loaders, region_state, region_ui, state, ui

ui.page_title("DE volcano builder")
st.caption("Compare one cell type's imputed expression between two groups of spots "
           "(only spots that contain the type are used).")
models, data, types, spots, image = ui.model_page(need_model=True)
thresholds = ui.current_thresholds(models)

c1, c2 = st.columns([2, 3])
ct = ui.type_picker(types, key="de", container=c1)
c2.metric(f"Spots containing {ct}", int((spots[ct] > thresholds[ct]).sum()),
          help=f"Threshold {thresholds[ct]:.3f} (Thresholds page).")


def group_editor(name: str, label: str, default: str, column) -> str:
    """Widgets for one group; returns its spec string (also saved in the session / URL)."""
    spec = state.groups().get(name) or default
    options = [m for m in groups.MODES if name == "g2" or m != "rest"]
    mode = column.selectbox(label, options, index=options.index(groups.mode_of(spec, default)),
                            format_func=groups.MODES.get, key=f"{name}_mode")
    args = groups.parts(spec) if groups.mode_of(spec, default) == mode else []
    if mode == "threshold":
        other = column.selectbox("Cell type", types, key=f"{name}_thr_ct",
                                 index=types.index(args[0]) if args and args[0] in types
                                 else types.index(next((t for t in types if t != ct), ct)))
        spec = f"threshold:{other}"
    elif mode == "gamma":
        with ui.user_errors("reading the gamma axes"):
            ex, _ = loaders.gamma_exploration(models.key, ct, thresholds[ct], "outer", models)
            proj = ex.pca.spot_projection
            axis = column.radio("Axis", [0, 1], format_func=lambda a: f"sPC{a + 1}", horizontal=True,
                                key=f"{name}_axis", index=int(args[0]) if args else 0)
            lo_all, hi_all = float(proj[:, axis].min()), float(proj[:, axis].max())
            lo0 = float(args[1]) if len(args) > 2 else (lo_all + hi_all) / 2
            hi0 = float(args[2]) if len(args) > 2 else hi_all
            lo, hi = column.slider("Range", lo_all, hi_all, (max(lo_all, min(lo0, hi_all)),
                                                            max(lo_all, min(hi0, hi_all))),
                                   format="%.3g", key=f"{name}_range_{axis}")
            spec = f"gamma:{axis}:{lo:.4g}:{hi:.4g}"
    elif mode == "region":
        column.caption("Draw a box (or a lasso) on the map below.")
        spec = "region:" + ":".join(args) if args else "region"
    elif mode == "regionset":
        names = list(region_state.regions(len(spots)))
        if not names:
            column.info("No saved region yet: draw one on the map below, or on the Regions page.",
                        icon=":material/gesture:")
            spec = "regionset"
        else:
            pick = column.selectbox("Region", names, key=f"{name}_regionset",
                                    index=names.index(args[0]) if args and args[0] in names else 0)
            spec = f"regionset:{pick}"
    elif mode == "obs":
        cols = [c for c in data.st.obs.columns if data.st.obs[c].nunique() <= 50]
        if not cols:
            column.warning("The spatial data has no categorical annotation column.")
            spec = "obs"
        else:
            col = column.selectbox("Column", cols, key=f"{name}_obs_col",
                                   index=cols.index(args[0]) if args and args[0] in cols else 0)
            values = sorted(data.st.obs[col].astype(str).unique())
            val = column.selectbox("Value", values, key=f"{name}_obs_val_{col}",
                                   index=values.index(args[1]) if len(args) > 1 and args[1] in values else 0)
            spec = f"obs:{col}:{val}"
    else:
        spec = "rest"
    state.set_group(name, spec)
    return spec


g1c, g2c = st.columns(2)
spec1 = group_editor("g1", "Group 1", "gamma", g1c)
spec2 = group_editor("g2", "Group 2", "rest", g2c)

mask1 = mask2 = None
with ui.user_errors("building the groups"):
    mask1, desc1 = groups.build_mask(spec1, models, data, ct, thresholds)
    mask2, desc2 = groups.build_mask(spec2, models, data, ct, thresholds)
    present = spots[ct].to_numpy() > thresholds[ct]
    m2 = ~mask1 if mask2 is None else mask2
    n1, n2 = int((mask1 & present).sum()), int((m2 & present).sum())
    g1c.markdown(f"**Group 1:** {desc1} → **{n1} spots** with {ct}")
    g2c.markdown(f"**Group 2:** {desc2} → **{n2} spots** with {ct}")

labels = np.full(len(spots), "not used", dtype=object)
if mask1 is not None:
    present = spots[ct].to_numpy() > thresholds[ct]
    labels[(mask2 if mask2 is not None else ~mask1) & present] = "group 2"
    labels[mask1 & present] = "group 1"
drawing = [g for g, sp in (("g1", spec1), ("g2", spec2)) if groups.mode_of(sp, "") in ("region", "regionset")]
gmap = charts.group_map(spots, labels, width=ui.width(420), image=image, select=bool(drawing))
box_mode = any(groups.mode_of(sp, "") == "region" for sp in (spec1, spec2))
event = ui.show_chart(gmap, key=region_ui.map_key("de_groups"), on_select="rerun" if drawing else "ignore",
                      drag="select" if box_mode else "lasso")
if drawing and event is not None:
    target = drawing[0]
    selection = (event.get("selection") or {})
    boxes, lassos = selection.get("box") or [], selection.get("lasso") or []
    new = None
    if lassos:  # a free-hand region: saved as a region and used as the group
        mask = region_ui.selection_from(event, gmap)
        if mask is not None and mask.any():
            with ui.user_errors("saving the drawn region"):
                name = region_state.add_region(groups.free_name(region_state.regions()), mask)
                new = f"regionset:{name}"
                region_ui.clear_selection()
    elif boxes and len(boxes[0].get("x") or []) == 2:
        b = boxes[0]
        new = "region:" + ":".join(f"{v:.1f}" for v in (*b["x"], *b["y"]))
    if new and state.groups().get(target) != new:
        state.set_group(target, new)
        st.session_state.pop(f"{target}_mode", None)  # show the new group type in the editor
        st.rerun()

r1, r2, _ = st.columns([1, 1, 3])
n_samples = r1.number_input("Samples per spot", 2, 100, 10, key="de_ns",
                            help="Draws of imputed expression per spot for the KS test.")
run = r2.button("▶ Run DE", type="primary", key="de_run", disabled=mask1 is None)
if run and mask1 is not None:
    gkey = loaders.mask_key(mask1, mask2)
    with ui.user_errors("running the DE test"):
        with st.status(f"Testing {len(models.st_model.genes):,} genes for {ct}…", expanded=False) as status:
            bar = st.progress(0.1, text="Sampling imputed expression…")
            res = loaders.de_result(models.key, ct, gkey, thresholds[ct], int(n_samples), models, mask1, mask2)
            bar.progress(1.0, text="Done")
            status.update(label=f"DE done: {res.n_group1} vs {res.n_group2} spots", state="complete")
        state.set_flag("de_last", {"key": (models.key, ct, gkey, thresholds[ct], int(n_samples)),
                                   "result": res, "ct": ct, "g1": desc1, "g2": desc2})
        named = dict(state.flag("de_results", {}) or {})
        named[f"{ct}_{spec1}_vs_{spec2}".replace(":", "-")] = res.table
        state.set_flag("de_results", named)

last = state.flag("de_last")
if last is None or last["result"] is None or last["key"][0] != models.key:
    st.info("Choose the groups, then **Run DE**.", icon=":material/info:")
    st.stop()


@st.fragment
def results_view(last: dict) -> None:
    """Cut-offs recolour the volcano without recomputing; a clicked gene is mapped."""
    res, rct = last["result"], last["ct"]
    st.subheader(f"{rct}: {last['g1']} vs {last['g2']}")
    st.caption(f"{res.n_group1} vs {res.n_group2} spots · fold-change cut-off from a Gaussian "
               f"mixture: {res.fc_cutoff:.2f}")
    table = res.table.rename_axis("gene").reset_index()
    f1, f2 = st.columns(2)
    p_cut = f1.select_slider("Adjusted p cut-off", [1e-10, 1e-6, 1e-4, 1e-3, 0.01, 0.05, 0.1],
                             value=0.05, key="de_p")
    top_fc = float(max(np.abs(table["log2fc"]).max(), 0.1))
    fc_cut = f2.slider("|log2 fold change| cut-off", 0.0, round(top_fc, 2),
                       round(min(float(res.fc_cutoff), top_fc), 2), step=0.01, key="de_fc")
    sig = significance(res.table, padj_max=p_cut, lfc_min=fc_cut).to_numpy()
    table["status"] = np.where(~sig, "not significant",
                               np.where(table["log2fc"] > 0, "up in group 1", "up in group 2"))
    ordered = table.sort_values("ks_score", ascending=False)
    picked = st.session_state.get("de_gene_clicked")
    vol = charts.volcano(table, p_cut, fc_cut=fc_cut, width=ui.width(520), height=ui.width(400),
                         point=90 if state.presentation() else 40, highlight=picked)
    # side by side at a desk; stacked in presentation mode (bigger charts)
    left, right = (st.container(), st.container()) if state.presentation() else st.columns([3, 2])
    with left:
        ev = ui.show_chart(vol, key="de_volcano", on_select="rerun")
        sel = (ev.get("selection") or {}).get("gene_pick") if ev is not None else None
        if sel:
            gene = sel[0].get("gene")
            if gene and gene != picked:
                st.session_state["de_gene_clicked"] = gene
                st.rerun(scope="fragment")
        ui.downloads(vol, table, f"de_{rct}", "volcano")
        n_up1, n_up2 = int((table["status"] == "up in group 1").sum()), int((table["status"] == "up in group 2").sum())
        st.markdown(f"**{n_up1}** genes up in group 1 · **{n_up2}** up in group 2 (click a point to map it)")
    with right:
        genes = list(ordered["gene"])
        default = picked if picked in genes else genes[0]
        gene = st.selectbox("Gene to map", genes, index=genes.index(default), key=f"de_gene_{default}")
        expr = loaders.imputed_expression(models.key, rct, gene, models)
        present = spots[rct].to_numpy() > thresholds[rct]
        gm = charts.value_map(spots, expr, f"{gene} in {rct}", width=ui.width(360), image=image,
                              mask=present, title=f"Imputed {gene} in {rct}")
        ui.show_chart(gm, key="de_gene_map")
        gdf = spots[["spot", "x", "y"]].assign(expression=expr, contains=present)
        ui.downloads(gm, gdf, f"imputed_{gene}_{rct}", "gene_map")
    st.dataframe(ordered[["gene", "log2fc", "ks_score", "pval", "padj", "status"]], hide_index=True,
                 width="stretch", height=320,
                 column_config={"pval": st.column_config.NumberColumn("p", format="%.2e"),
                                "padj": st.column_config.NumberColumn("adj. p", format="%.2e"),
                                "log2fc": st.column_config.NumberColumn("log2FC", format="%.2f"),
                                "ks_score": st.column_config.NumberColumn("KS score", format="%.3f")})
    ui.csv_download(ordered, f"de_results_{rct}", "de_table", "⬇ DE table (CSV)")


results_view(last)
