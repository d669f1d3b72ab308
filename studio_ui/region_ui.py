"""Region widgets shared by the pages: save a selection, manage regions, compare two regions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from destvi_core.errors import DestVIError

from . import maps, region_charts, region_loaders, region_state, state, ui
from .palette import type_colors

SELECTION = "current selection"
REST = "rest of the tissue"


def map_key(base: str) -> str:
    """Key of a selectable map; changes after a region is saved, which clears the selection."""
    return f"{base}_{state.flag('selection_nonce', 0)}"


def clear_selection() -> None:
    state.set_flag("selection_nonce", int(state.flag("selection_nonce", 0)) + 1)
    state.set_flag("selection_mask", None)


def selection_from(event, spot_map: maps.SpotMap) -> np.ndarray | None:
    """The spots of a map's lasso/box selection, remembered for the other widgets of the page."""
    mask = maps.selection_mask(event, spot_map)
    state.set_flag("selection_mask", mask)
    return mask


def selection_saver(mask: np.ndarray | None, key: str) -> None:
    """'N spots selected' + a name + *Save as region* (the region list and the link follow)."""
    _show_region_message()
    if mask is None:
        st.caption("Draw with the **lasso** or **box** tool of the map (top right of the map) to "
                   "select spots; hold Shift to add to the selection, double-click to clear it.")
        return
    n = int(mask.sum())
    default = f"region {len(region_state.regions()) + 1}"
    name_key = f"{key}_name_{state.flag('selection_nonce', 0)}"
    with st.container(border=True):
        st.markdown(f"**{n:,} spots selected**")
        c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
        c1.text_input("Name of the new region", value=default, key=name_key)
        c2.button("Save as region", key=f"{key}_save", type="primary", disabled=n == 0,
                  on_click=save_region, args=(name_key, mask))


def save_region(name_key: str, mask: np.ndarray) -> None:
    """Button callback: store the selection as a region and clear the selection."""
    try:
        name = region_state.add_region(st.session_state.get(name_key, ""), mask)
    except DestVIError as err:
        state.set_flag("region_message", ("error", str(err)))
        return
    clear_selection()
    state.set_flag("region_message", ("success", f"Region '{name}' saved ({int(mask.sum()):,} spots)."))


def save_flagged(flagged: np.ndarray) -> None:
    """Button callback of the Fit quality page: the flagged spots become a region."""
    from .groups import free_name

    save_region_named(free_name(region_state.regions(), "poorly fit spots"), flagged)


def save_region_named(name: str, mask: np.ndarray) -> None:
    try:
        name = region_state.add_region(name, mask)
    except DestVIError as err:
        state.set_flag("region_message", ("error", str(err)))
        return
    state.set_flag("region_message", ("success", f"Region '{name}' saved ({int(mask.sum()):,} spots): "
                                                 "compare it on the Regions or DE page."))


def _show_region_message() -> None:
    message = state.flag("region_message")
    if message:
        state.set_flag("region_message", None)
        kind, text = message
        (st.error if kind == "error" else st.success)(text, icon=":material/error:" if kind == "error"
                                                       else ":material/check_circle:")


def region_colors() -> dict[str, str]:
    return {name: region_state.region_color(name) for name in region_state.regions()}


def region_label_array(n_spots: int) -> np.ndarray:
    """Per-spot label for a map coloured by region (last region wins where they overlap)."""
    labels = np.full(n_spots, "no region", dtype=object)
    for name, mask in region_state.regions().items():
        labels[np.asarray(mask, bool)] = name
    return labels


def regions_manager(spots: pd.DataFrame) -> None:
    """The list of regions with rename / delete and a CSV of spot membership."""
    regs = region_state.regions()
    if not regs:
        st.info("No region yet. Select spots on a map and save them as a region.", icon=":material/gesture:")
        return
    table = pd.DataFrame({"region": list(regs), "spots": [int(np.asarray(m).sum()) for m in regs.values()],
                          "colour": [region_state.region_color(n) for n in regs]})
    st.dataframe(table.style.map(lambda c: f"background-color: {c}; color: {c}", subset=["colour"]),
                 hide_index=True, width="stretch")
    if state.presentation():
        return
    with st.expander("Rename or delete a region"):
        pick = st.selectbox("Region", list(regs), key="reg_pick")
        c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
        c1.text_input("New name", value=pick, key=f"reg_new_{pick}")
        c2.button("Rename", key="reg_rename", on_click=_rename, args=(pick, f"reg_new_{pick}"))
        st.button(f"🗑 Delete '{pick}'", key="reg_delete", on_click=region_state.delete_region, args=(pick,))
    ui.csv_download(membership_table(spots), "regions", "regions_csv", "⬇ Regions (CSV)")


def _rename(old: str, name_key: str) -> None:
    try:
        new = region_state.rename_region(old, st.session_state.get(name_key, old))
    except DestVIError as err:
        state.set_flag("region_message", ("error", str(err)))
        return
    st.session_state.pop("reg_pick", None)
    state.set_flag("region_message", ("success", f"Renamed '{old}' to '{new}'."))


def membership_table(spots: pd.DataFrame) -> pd.DataFrame:
    """``spot, x, y`` and one True/False column per region."""
    out = spots[["spot", "x", "y"]].copy()
    for name, mask in region_state.regions().items():
        out[name] = np.asarray(mask, bool)
    return out


def composition_panel(models, spots: pd.DataFrame, types: list[str], thresholds: dict[str, float],
                      selection: np.ndarray | None, key: str = "comp") -> None:
    """Compare two regions (or a region and the rest): stacked bars, differences with a test,
    spots above each type's threshold; chart and CSV downloads."""
    regs = region_state.regions()
    options_a = ([SELECTION] if selection is not None and selection.any() else []) + list(regs)
    if not options_a:
        st.info("Select spots on the map (or save a region) to see their composition.", icon=":material/info:")
        return
    c1, c2, c3 = st.columns([2, 2, 2])
    digest = None if selection is None else region_loaders.mask_digest(selection)
    if digest is not None and digest != state.flag("comp_selection"):
        state.set_flag("comp_a", SELECTION)  # a new lasso: show its composition at once
    state.set_flag("comp_selection", digest)
    default_a = state.flag("comp_a")
    a = c1.selectbox("Region A", options_a, key=f"{key}_a_{len(options_a)}_{digest}",
                     index=options_a.index(default_a) if default_a in options_a else 0)
    state.set_flag("comp_a", a)
    options_b = [REST] + [r for r in regs if r != a]
    b = c2.selectbox("compared with", options_b, key=f"{key}_b")
    test = c3.radio("Test across spots", ["Mann-Whitney", "permutation"], horizontal=True, key=f"{key}_test",
                    help="Two-sided, per cell type, BH-adjusted over types. Neighbouring spots are "
                         "not independent: p-values of contiguous regions are optimistic; read them "
                         "with the AUC and the difference.")
    mask_a = selection if a == SELECTION else np.asarray(regs[a], bool)
    mask_b = None if b == REST else np.asarray(regs[b], bool)
    with ui.user_errors("comparing the regions"):
        res = region_loaders.composition(
            models.key, region_loaders.mask_digest(mask_a), region_loaders.mask_digest(mask_b),
            "mannwhitney" if test == "Mann-Whitney" else "permutation",
            tuple(sorted((k, float(v)) for k, v in thresholds.items())), a, b, models, mask_a, mask_b)
        _draw_comparison(res, types, key)


def _draw_comparison(res, types: list[str], key: str) -> None:
    colors = type_colors(types)
    colors = {t: colors[t] for t in types}
    shared = f" · {res.n_shared:,} spots in both left out" if res.n_shared else ""
    st.markdown(f"**{res.label_a}**: {res.n_a:,} spots · **{res.label_b}**: {res.n_b:,} spots{shared}")
    t = res.table
    # called out in words: significant and at least one percentage point apart (many spots make
    # tiny, meaningless shifts significant; the table below lists every type)
    sig = t.index[(t["padj"] < 0.05) & (t["difference"].abs() >= 0.01)].tolist()
    if sig:
        up = [c for c in sig if t.loc[c, "difference"] > 0]
        down = [c for c in sig if t.loc[c, "difference"] < 0]
        words = []
        if up:
            words.append(f"more **{', '.join(up)}**")
        if down:
            words.append(f"less **{', '.join(down)}**")
        st.markdown(f"{res.label_a} has " + " and ".join(words) + f" than {res.label_b} "
                    "(adjusted p < 0.05 and at least 1 percentage point).")
    else:
        st.markdown(f"No cell type differs between {res.label_a} and {res.label_b} by at least "
                    "1 percentage point with adjusted p < 0.05.")
    left, right = st.columns(2)
    with left:
        scale = ui.width(100) / 100  # larger in presentation mode, like the fonts
        bars = region_charts.composition_bars(res.long_means(), colors, width=ui.width(440), scale=scale)
        legend_rows = -(-len(types) // 3)
        ui.show_chart(bars, key=f"{key}_bars",
                      height=region_charts.frame_height(bars, int((110 + 24 * legend_rows) * scale)))
        ui.downloads(bars, res.long_means(), "region_composition", f"{key}_bars")
    with right:
        diff = region_charts.difference_bars(t, colors, res.label_a, res.label_b, width=ui.width(400),
                                             scale=ui.width(100) / 100)
        ui.show_chart(diff, key=f"{key}_diff", height=region_charts.frame_height(diff, ui.width(90)))
        st.caption("\\* adjusted p < 0.05, \\*\\* < 0.01, \\*\\*\\* < 0.001 (n.s.: not significant); "
                   "hover a bar for the means, the AUC and the adjusted p.")
        ui.downloads(diff, table_for_csv(res), "region_difference", f"{key}_diff")
    st.dataframe(table_for_csv(res), hide_index=True, width="stretch",
                 column_config={"p": st.column_config.NumberColumn(format="%.2e"),
                                "adjusted p": st.column_config.NumberColumn(format="%.2e")})


def table_for_csv(res) -> pd.DataFrame:
    t = res.table
    out = pd.DataFrame({
        "cell type": t.index,
        f"mean in {res.label_a}": t["mean_a"].round(4).to_numpy(),
        f"mean in {res.label_b}": t["mean_b"].round(4).to_numpy(),
        "difference": t["difference"].round(4).to_numpy(),
        "AUC": t["auc"].round(3).to_numpy(),
        "p": t["pval"].to_numpy(),
        "adjusted p": t["padj"].to_numpy(),
    })
    if t["above_a"].notna().any():
        out[f"spots above threshold in {res.label_a}"] = t["above_a"].astype("Int64").to_numpy()
        out[f"spots above threshold in {res.label_b}"] = t["above_b"].astype("Int64").to_numpy()
    out["test"] = res.test
    return out
