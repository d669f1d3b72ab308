"""Fit-quality widgets: the computation with progress, and the short summary of the Data page."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from destvi_core.errors import DestVIError

from . import region_loaders, state, ui

FIT_PAGE = "pages/8_fit_quality.py"


def compute(models: state.LoadedModels) -> pd.DataFrame | None:
    """The fit-quality table, computing it now (progress bar) if needed; None on error."""
    ready = region_loaders.fit_quality_ready(models)
    if ready is not None:
        return ready
    ui.ensure_loaded(models)
    bar = st.progress(0.0, text="Scoring how well the model explains each spot…")

    def progress(done: int, total: int) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"Fit quality: {done:,} of {total:,} spots")

    try:
        with ui.user_errors("computing the fit quality"):
            return region_loaders.fit_quality(models, progress=progress)
    finally:
        bar.empty()
    return None


def summary_line(summary) -> str:
    return (f"Median deviance per count **{summary.median_deviance:.3f}** · median noise share "
            f"**{summary.median_noise:.1%}** · **{summary.n_flagged:,}** spots flagged")


def fit_quality_summary(models: state.LoadedModels | None) -> None:
    """Data & model page: a short summary of the fit quality (never computes on its own: the
    first computation loads the model and runs it over every spot, so it waits for a click)."""
    if models is None:
        return
    st.subheader("Fit quality")
    table = region_loaders.fit_quality_ready(models)
    if table is None and state.flag("fit_requested") == models.key:
        table = compute(models)
    if table is None:
        c1, c2 = st.columns([2, 3], vertical_alignment="center")
        c1.button("Check the fit of every spot", key="fit_summary_compute",
                  on_click=state.set_flag, args=("fit_requested", models.key))
        c2.caption("How well the model explains each spot, and whether poorly explained spots "
                   "cluster (a cell type the reference may lack).")
    if table is None:
        return
    try:
        summary = region_loaders.fit_summary(models.key, 3.0, 0.25, models, table)
    except DestVIError as err:
        st.error(str(err), icon=":material/error:")
        return
    st.markdown(summary_line(summary))
    (st.warning if summary.clustered else st.caption)(summary.note)
    st.page_link(FIT_PAGE, label="See the fit-quality maps →", icon=":material/troubleshoot:")
