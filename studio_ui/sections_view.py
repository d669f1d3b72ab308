"""Views across seeds and sections, drawn at the end of the proportion page.

* **Seed ensemble**: a map of the spread (standard deviation across seeds) of the chosen
  type's proportion, and per type how much the seeds disagree.
* **Sections side by side**: the mean composition of every trained section as stacked bars
  (the app's fixed cell-type colours) and, when sections carry conditions, a per-type test
  between two conditions on the per-section means (:mod:`destvi_core.analysis.sections`).
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from . import charts, state, ui
from .palette import color_scale_args

CONDITION_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]


def render(models: state.LoadedModels, spots: pd.DataFrame, types: list[str],
           image: dict | None) -> None:
    """Everything below the proportion maps (nothing when there is one section, one seed)."""
    if models.proportion_sd() is not None:
        ensemble_spread(models, spots, types, image)
    project = state.project()
    if project is not None and len(project.sections) > 1:
        sections_side_by_side(project)


# ------------------------------------------------------------------ seed ensemble
def spread_table(spots: pd.DataFrame, types: list[str]) -> pd.DataFrame:
    """Per type: mean and 95th percentile of the spread, share of spots where it exceeds 0.05."""
    rows = []
    for ct in types:
        sd = spots[f"sd:{ct}"].to_numpy(np.float64)
        rows.append({"cell type": ct, "mean sd": round(float(sd.mean()), 4),
                     "95th percentile sd": round(float(np.quantile(sd, 0.95)), 4),
                     "spots with sd > 0.05": f"{(sd > 0.05).mean():.0%}"})
    return pd.DataFrame(rows)


def ensemble_spread(models: state.LoadedModels, spots: pd.DataFrame, types: list[str],
                    image: dict | None) -> None:
    n = len(models.ensemble_seeds)
    st.subheader(f"How much {n} seeds agree")
    st.caption(f"The spatial model was trained {n} times with different seeds on the same "
               "reference. Per spot, the standard deviation (sd) of a proportion across the "
               "seeds says how much it owes to chance: trust spots with a large sd less. Every "
               "map's hover shows it too.")
    ct = state.cell_type(types)
    left, right = st.columns(2)
    with left:
        chart = charts.value_map(spots, spots[f"sd:{ct}"].to_numpy(), f"sd of {ct}",
                                 width=ui.width(440), image=image,
                                 title=f"{ct}: spread across {n} seeds (sd)")
        ui.show_chart(chart, key="map_sd")
        ui.downloads(chart, spots[["spot", "x", "y", ct, f"sd:{ct}"]], f"proportion_sd_{ct}", "sd")
    with right:
        table = spread_table(spots, types)
        st.dataframe(table, hide_index=True, width="stretch")
        ui.csv_download(spots[["spot", *[f"sd:{t}" for t in types]]], "proportion_sd_all_types",
                        "sd_all")


# ------------------------------------------------------------------ sections
def section_proportions(project) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Proportions of the sections with a model in this session, and the names without."""
    have, missing = {}, []
    for name, data in project.sections.items():
        models = state.models_for(data.key)
        if models is None:
            missing.append(name)
        else:
            have[name] = models.proportions()
    return have, missing


def composition_chart(composition: pd.DataFrame, conditions: dict[str, str],
                      width: int) -> alt.Chart:
    """Stacked bars: one bar per section, one segment per type (fixed colours)."""
    long = composition.reset_index().melt(id_vars="section", var_name="cell type",
                                          value_name="mean proportion")
    long["condition"] = long["section"].map(lambda s: conditions.get(s, "—"))
    order = sorted(composition.index, key=lambda s: (conditions.get(s, "~"), list(
        composition.index).index(s)))
    types = list(composition.columns)
    return alt.Chart(long).mark_bar().encode(
        x=alt.X("section:N", sort=order, title="section"),
        y=alt.Y("mean proportion:Q", stack="normalize", title="mean proportion",
                axis=alt.Axis(format="%")),
        color=alt.Color("cell type:N", scale=alt.Scale(**color_scale_args(types)),
                        title="cell type"),
        order=alt.Order("cell type:N"),
        tooltip=["section:N", "condition:N", "cell type:N",
                 alt.Tooltip("mean proportion:Q", format=".3f")],
    ).properties(width=width, height=300, title="Mean composition per section")


def comparison_chart(composition: pd.DataFrame, conditions: dict[str, str], a: str, b: str,
                     types: list[str], width: int) -> alt.Chart:
    """Per type, each section's mean proportion, grouped by condition."""
    long = composition.loc[[s for s in composition.index if conditions.get(s) in (a, b)]]
    long = long[types].reset_index().melt(id_vars="section", var_name="cell type",
                                          value_name="mean proportion")
    long["condition"] = long["section"].map(conditions)
    return alt.Chart(long).mark_circle(size=90, opacity=0.85).encode(
        x=alt.X("cell type:N", sort=types, title=None),
        xOffset=alt.XOffset("condition:N", sort=[a, b]),
        y=alt.Y("mean proportion:Q", title="mean proportion in the section"),
        color=alt.Color("condition:N", sort=[a, b], scale=alt.Scale(
            domain=[a, b], range=CONDITION_COLOURS[:2]), title="condition"),
        tooltip=["section:N", "condition:N", "cell type:N",
                 alt.Tooltip("mean proportion:Q", format=".3f")],
    ).properties(width=width, height=280, title=f"Per-section means: {a} vs {b}")


def sections_side_by_side(project) -> None:
    from destvi_core.analysis.sections import TESTS, compare_conditions, section_composition

    st.subheader("Sections side by side")
    props, missing = section_proportions(project)
    if missing:
        st.caption("Not trained yet (train them on the Data & model page): "
                   + ", ".join(missing))
    if len(props) < 2:
        st.info("Train at least two sections to compare them.", icon=":material/info:")
        return
    composition = section_composition(props)
    conditions = {s: c for s, c in state.conditions().items() if s in props}
    chart = composition_chart(composition, conditions, ui.width(max(320, 60 * len(props))))
    ui.show_chart(chart, key="sections_bars")
    ui.downloads(chart, composition.reset_index().round(5), "composition_per_section",
                 "sections")
    labels = sorted(set(conditions.values()))
    if len(labels) < 2:
        st.caption("Give the sections a condition (e.g. control / treated) on the Data & model "
                   "page to compare conditions.")
        return
    st.markdown("**Between conditions**")
    c1, c2, c3 = st.columns([1, 1, 2])
    a = c1.selectbox("Condition A", labels, index=0, key="cond_a")
    b = c2.selectbox("Condition B", labels, index=1 if len(labels) > 1 else 0, key="cond_b")
    test = c3.radio("Test on the per-section means", list(TESTS), format_func=TESTS.get,
                    horizontal=True, key="cond_test")
    with ui.user_errors("comparing the conditions"):
        result = compare_conditions(composition, conditions, a, b, test)
        st.caption(result.note)
        table = result.table.rename(columns={"mean_a": f"mean in {a}", "mean_b": f"mean in {b}",
                                             "difference": f"{b} − {a}", "pvalue": "p-value",
                                             "padj": "BH-adjusted p"})
        left, right = st.columns([3, 2])
        left.dataframe(table.round(4), hide_index=True, width="stretch")
        ui.csv_download(result.table, f"conditions_{a}_vs_{b}", "cond_csv")
        with right:
            top = list(result.table["cell_type"][:8])
            chart = comparison_chart(composition, conditions, a, b, top, ui.width(420))
            ui.show_chart(chart, key="cond_points")
