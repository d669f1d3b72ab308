"""Jobs: every training of this server (running, queued, finished), where they run, cancel."""

import streamlit as st

from studio_ui import jobs_panel, jobs_ui, state, ui

ui.page_title("Jobs")
st.caption("Trainings run as background jobs on a Dask cluster: they go on when you leave a "
           "page, reload or close the browser, and every session of this server sees them. "
           "Concurrent trainings queue instead of sharing the cores.")
manager = jobs_ui.job_manager()
where = manager.describe_cluster()
link = manager.dashboard_link()
st.markdown(f"**Where jobs run:** {where}" + (f" · [Dask dashboard]({link})" if link else ""))

jobs_panel.table("jobs_page")

if not state.presentation():
    with st.expander("Run the jobs on another Dask cluster"):
        st.caption("The address of a running Dask scheduler, e.g. one started on your SLURM "
                   "cluster with dask-jobqueue (README, \"Clusters\"). Its workers need this "
                   "environment. Empty: the local cluster of this machine. Jobs already "
                   "submitted stay where they are.")
        address = st.text_input("Scheduler address", value=jobs_ui.scheduler_choice() or "",
                                placeholder="tcp://host:8786", key="scheduler_address")
        if st.button("Use this cluster", key="scheduler_connect"):
            with ui.user_errors("connecting to the cluster"):
                jobs_ui.set_scheduler(address.strip() or None)
                st.rerun()
