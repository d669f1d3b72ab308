"""DestVI Studio — Streamlit entry point: page config, navigation, shared sidebar.

Run with ``streamlit run app.py``. Pages live in ``pages/`` (not ``pages/``: Streamlit would
also auto-discover that folder as a legacy multipage app) and only draw; the engine is
``destvi_core`` and every cached loader is in ``studio_ui.loaders``.
"""

import streamlit as st

from studio_ui import jobs_ui, state, ui

st.set_page_config(page_title="DestVI Studio", page_icon="🧬", layout="wide",
                   initial_sidebar_state="expanded")

state.read_url_once()
page = st.navigation([
    st.Page("pages/1_data_model.py", url_path="data", title="Data & model", icon=":material/folder_open:", default=True),
    st.Page("pages/2_proportions.py", url_path="proportions", title="Proportion maps", icon=":material/map:"),
    st.Page("pages/3_thresholds.py", url_path="thresholds", title="Thresholds", icon=":material/tune:"),
    st.Page("pages/4_gamma.py", url_path="gamma", title="Gamma explorer", icon=":material/palette:"),
    st.Page("pages/5_de.py", url_path="de", title="DE volcano", icon=":material/scatter_plot:"),
    st.Page("pages/6_regions.py", url_path="regions", title="Regions", icon=":material/gesture:"),
    st.Page("pages/7_colocalisation.py", url_path="colocalisation", title="Co-localisation", icon=":material/join_inner:"),
    st.Page("pages/8_fit_quality.py", url_path="fit", title="Fit quality", icon=":material/troubleshoot:"),
    st.Page("pages/9_jobs.py", url_path="jobs", title="Jobs", icon=":material/work_history:"),
])
ui.preload_chart_library()
ui.autoload()
news = jobs_ui.sync_models()  # models finished by background jobs since the last run
if news:
    st.toast(news, icon=":material/check_circle:")
ui.presentation_css()
ui.sidebar()
state.set_flag("in_shell", True)
try:
    page.run()
finally:
    state.set_flag("in_shell", False)
    state.write_url()
    ui.warm_up()
