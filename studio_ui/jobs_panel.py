"""Drawing jobs: live progress (a fragment polling once a second while something runs), the
table of every job of the server, and cancel buttons. Reading only: the jobs themselves live
in :mod:`studio_ui.jobs_ui`'s job manager. (Imports no :mod:`studio_ui.ui`, which uses it.)"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from . import charts, jobs_ui, state

POLL_S = 1.0
STATE_ICONS = {"queued": "⏳", "running": "▶", "done": "✔", "failed": "✖", "cancelled": "■"}


def _jobs(data_keys: tuple[str, ...] | None) -> list:
    jobs = jobs_ui.all_jobs()
    if data_keys is None:
        return jobs
    out = []
    for job in jobs:
        if job.data_key in data_keys:
            out.append(job)
            if job.reference is not None and job.reference not in out:
                out.append(job.reference)
    return out


def job_table(jobs: list) -> pd.DataFrame:
    """One row per job: what, state, progress, loss, times, message."""
    rows = []
    for job in jobs:
        p = job.progress
        rows.append({
            "job": job.label, "section": job.section or "", "state": job.state,
            "progress": round(100 * job.fraction()),
            "model": jobs_ui_model_name(p.model) if p else "",
            "epoch": f"{p.epoch:,}/{p.n_epochs:,}" if p else "",
            "loss": round(float(p.loss.get("loss", float("nan"))), 1) if p else None,
            "elapsed (s)": round(job.elapsed_s), "left (s)": round(p.eta_s) if p and job.active
            else None, "message": job.message, "id": job.id})
    return pd.DataFrame(rows, columns=["job", "section", "state", "progress", "model", "epoch",
                                       "loss", "elapsed (s)", "left (s)", "message", "id"])


def jobs_ui_model_name(model: str) -> str:
    from destvi_core.jobs import MODEL_NAMES

    return MODEL_NAMES.get(model, model)


def _rerun_when_one_ends(jobs: list, key: str) -> None:
    """Rerun the whole app when a job that was active at the last poll has ended (so the
    session picks up its model)."""
    memory = f"_jobs_active_{key}"
    active = {j.id for j in jobs if j.active}
    before = set(st.session_state.get(memory, set()))
    st.session_state[memory] = active
    if before - active:
        st.rerun(scope="app")


def _draw_progress(jobs: list, key: str, loss: bool) -> None:
    for job in jobs:
        if job.active:
            st.progress(job.fraction(), text=f"{STATE_ICONS[job.state]} {job.describe()}")
    done = [j._ended or 0 for j in jobs if j.state == "done"]
    latest = max(done) if done else 0  # failures older than the last good model are history
    for job in jobs:
        if (job._ended or 0) < latest:
            continue
        if job.state == "failed":
            st.error(f"{job.label} failed: {job.message}", icon=":material/error:")
        elif job.state == "cancelled" and job.message:
            st.warning(f"{job.label}: {job.message}", icon=":material/stop_circle:")
    if loss:
        running = next((j for j in jobs if j.active and j.history), None)
        if running is not None:
            history = pd.DataFrame(running.history)
            frame = pd.DataFrame({"epoch": history["epoch"],
                                  "loss": [float(d.get("loss", float("nan"))) for d in history["loss"]],
                                  "model": history["model"].map(jobs_ui_model_name)})
            width = int(600 * (1.35 if state.presentation() else 1))
            st.altair_chart(charts.finish(charts.loss_chart(frame, width=width),
                                          state.presentation()), width="content",
                            key=f"live_loss_{key}")


@st.fragment(run_every=POLL_S)
def _live(data_keys: tuple[str, ...] | None, key: str, loss: bool) -> None:
    jobs = _jobs(data_keys)
    _draw_progress(jobs, key, loss)
    _rerun_when_one_ends(jobs, key)


def progress(data_keys: tuple[str, ...] | None, key: str, loss: bool = True,
             cancel: bool = True) -> list:
    """Live progress of the jobs of these sections (all jobs when None), a Cancel button for
    the active ones; the app reruns when one ends. Returns the jobs drawn."""
    jobs = _jobs(data_keys)
    if not jobs:
        return jobs
    active = [j for j in jobs if j.active]
    if cancel and active:
        st.button("■ Cancel training", key=f"cancel_{key}",
                  on_click=lambda: [j.cancel() for j in _jobs(data_keys) if j.active],
                  help="Queued jobs never start; running ones stop within a second. Finished "
                       "models are kept.")
    if active:
        _live(data_keys, key, loss)
    else:
        _draw_progress(jobs, key, False)
        _rerun_when_one_ends(jobs, key)
        if jobs_ui.sync_models():  # a job ended after this run's sync: show its model now
            st.rerun()
    return jobs


@st.fragment(run_every=POLL_S)
def _live_table(key: str) -> None:
    jobs = jobs_ui.all_jobs()
    _draw_table(jobs, key)
    _rerun_when_one_ends(jobs, key)


def _draw_table(jobs: list, key: str) -> None:
    table = job_table(jobs)
    st.dataframe(table.drop(columns=["id"]), hide_index=True, width="stretch",
                 column_config={"progress": st.column_config.ProgressColumn(
                     "progress", min_value=0, max_value=100, format="%d%%")})
    active = [j for j in jobs if j.active]
    if active and not state.presentation():
        cols = st.columns(min(4, len(active)) or 1)
        for i, job in enumerate(active[:12]):
            cols[i % len(cols)].button(f"■ Cancel {job.label}", key=f"cancel_job_{job.id}",
                                       on_click=job.cancel)


def table(key: str = "all") -> list:
    """Every job of the server, live while something runs."""
    jobs = jobs_ui.all_jobs()
    if not jobs:
        st.info("No training has been submitted on this server yet.", icon=":material/info:")
        return jobs
    if any(j.active for j in jobs):
        _live_table(key)
    else:
        _draw_table(jobs, key)
    return jobs
