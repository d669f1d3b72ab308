"""Page tests with streamlit.testing.v1.AppTest on the built-in demo (tiny training).

A module-scoped fixture trains the demo model once (DESTVI_STUDIO_FAST=1, see conftest.py) as a
job on the test session's local Dask cluster (2 single-thread workers); the model lives in the
cache and the process-wide registry, so later sessions get it instantly.
"""

from __future__ import annotations

import re
import time

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from _apptest import (TIMEOUT, app_environment, new_app, no_errors,  # noqa: E402,F401
                      texts, train_demo, wait_jobs)


@pytest.fixture(scope="module", autouse=True)
def fast_env(tmp_path_factory, scheduler_address):
    yield from app_environment(tmp_path_factory.mktemp("model_cache"), scheduler_address)


def charts(at: AppTest) -> list:
    """Charts drawn: Altair (vega-lite) and spatial maps (Plotly)."""
    return at.get("vega_lite_chart") + at.get("plotly_chart")


def map_spec(at: AppTest, title: str) -> str:
    """The Plotly spec of the spatial map called ``title`` (layout.meta.map)."""
    import json

    found = [c.proto.spec for c in at.get("plotly_chart")
             if (json.loads(c.proto.spec)["layout"].get("meta") or {}).get("map") == title]
    assert found, f"no map {title!r}"
    return found[0]


@pytest.fixture(scope="module")
def trained() -> AppTest:
    """A session where the demo was loaded and a tiny model trained (once per module)."""
    return train_demo()


def loaded(page: str | None = None, **query) -> AppTest:
    """A fresh session (autoloads the cached demo model), optionally on ``page``."""
    at = new_app(**query)
    at.run()
    if page:
        at.switch_page(page).run()
    return at


# ------------------------------------------------------------------ without a model
def test_fresh_start_offers_demo():
    at = new_app(autoload=False)
    at.run()
    no_errors(at)
    assert at.button(key="use_demo").label.startswith("▶ Use the demo")


@pytest.mark.parametrize("page", ["pages/2_proportions.py", "pages/3_thresholds.py",
                                  "pages/4_gamma.py", "pages/5_de.py", "pages/6_regions.py",
                                  "pages/7_colocalisation.py", "pages/8_fit_quality.py"])
def test_pages_without_model_point_to_data_page(page):
    at = new_app(autoload=False)
    at.run()
    at.switch_page(page).run()
    no_errors(at)
    assert "No model yet" in texts(at)


def test_bad_upload_shows_error():
    at = new_app(autoload=False)
    at.run()
    at.radio(key="data_source").set_value("Upload files").run()
    at.file_uploader(key="up_ref").set_value(("ref.h5ad", b"this is not hdf5", "application/octet-stream"))
    at.file_uploader(key="up_st").set_value(("st.h5ad", b"garbage", "application/octet-stream")).run()
    assert not at.exception
    assert at.error, "a bad upload must show st.error"
    assert "Fix:" in at.error[0].value


def test_wrong_extension_upload_shows_error():
    at = new_app(autoload=False)
    at.run()
    at.radio(key="data_source").set_value("Upload files").run()
    at.file_uploader(key="up_ref").set_value(("ref.csv", b"a,b\n1,2", "text/csv"))
    at.file_uploader(key="up_st").set_value(("st.csv", b"a,b\n1,2", "text/csv")).run()
    assert not at.exception
    assert at.error and ".h5ad" in at.error[0].value


# ------------------------------------------------------------------ with the demo model
def test_data_page_summary(trained):
    no_errors(trained)
    metrics = {m.label: m.value for m in trained.metric}
    assert metrics["Spots"] == "1,000"
    assert int(metrics["Cell types"]) >= 2
    assert "Device" in texts(trained)


def test_second_session_gets_model_instantly(trained):
    at = loaded()
    no_errors(at)
    assert any("Model ready" in s.value for s in at.success)


def test_proportions_page(trained):
    at = loaded("pages/2_proportions.py")
    no_errors(at)
    assert len(charts(at)) >= 4  # one type, dominant, small multiples, mean bars
    before = map_spec(at, "All cell types")
    at.radio(key="scale_mode").set_value("per type").run()
    no_errors(at)
    assert map_spec(at, "All cell types") != before
    types = at.selectbox(key="ct_pick_prop").options
    at.selectbox(key="ct_pick_prop").set_value(types[1]).run()
    no_errors(at)
    assert at.query_params.get("ct") in (types[1], [types[1]])


def _kept(at: AppTest, ct: str) -> int:
    match = re.search(r"\*\*(\d+) of \d+ spots kept\*\* for " + re.escape(ct), texts(at))
    assert match, texts(at)
    return int(match.group(1))


def test_threshold_slider_changes_kept_spots(trained):
    at = loaded("pages/3_thresholds.py")
    no_errors(at)
    sliders = [s for s in at.slider if s.key and s.key.startswith("thr_slider_")]
    assert len(sliders) >= 2
    ct = sliders[0].label.removeprefix("Cut-off for ")
    before = _kept(at, ct)
    sliders[0].set_value(min(sliders[0].max, sliders[0].value + 0.2)).run()
    no_errors(at)
    after = _kept(at, ct)
    assert after < before
    assert "thr" in at.query_params
    at.button(key="thr_reset").click().run()
    no_errors(at)
    assert _kept(at, ct) == before


def test_threshold_kind_switch(trained):
    at = loaded("pages/3_thresholds.py")
    at.radio(key="thr_kind").set_value("primary").run()
    no_errors(at)
    assert at.query_params.get("kind") in ("primary", ["primary"])


def test_gamma_page(trained):
    at = loaded("pages/4_gamma.py")
    no_errors(at)
    assert "spots" in texts(at)
    assert "Source:" in texts(at)
    assert len(charts(at)) >= 4


def test_de_page_produces_table(trained):
    at = loaded("pages/5_de.py")
    no_errors(at)
    at.button(key="de_run").click().run()
    no_errors(at)
    tables = [d.value for d in at.dataframe]
    assert any("log2fc" in t.columns and len(t) > 10 for t in tables)
    assert any("Volcano" in str(c.proto.spec) for c in charts(at))
    n_before = re.search(r"\*\*(\d+)\*\* genes up in group 1", texts(at)).group(1)
    at.slider(key="de_fc").set_value(0.0)
    at.select_slider(key="de_p").set_value(0.1).run()
    no_errors(at)
    n_after = re.search(r"\*\*(\d+)\*\* genes up in group 1", texts(at)).group(1)
    assert int(n_after) >= int(n_before)


def test_query_params_restore_view(trained):
    probe = loaded("pages/2_proportions.py")
    types = probe.selectbox(key="ct_pick_prop").options
    at = loaded("pages/2_proportions.py", ct=types[2], data="demo", present="1")
    no_errors(at)
    assert at.selectbox(key="ct_pick_prop").value == types[2]
    assert at.toggle(key="presentation_toggle").value is True


def test_presentation_mode_hides_downloads(trained):
    at = loaded("pages/2_proportions.py")
    n_normal = len(at.get("download_button"))
    at.toggle(key="presentation_toggle").set_value(True).run()
    no_errors(at)
    assert len(at.get("download_button")) < n_normal


def test_export_everything_bundle(trained):
    """The sidebar's "Export everything" zip: captures this session's thresholds when drawn;
    the heavy work runs only when the download is requested."""
    import io
    import json
    import zipfile

    import streamlit as st

    from studio_ui import export

    models = trained.session_state["studio.models"]
    first = models.cell_types[0]
    st.session_state["studio.data"] = trained.session_state["studio.data"]
    st.session_state["studio.models"] = models
    st.session_state["studio.threshold_kind"] = "primary"
    st.session_state["studio.thresholds"] = {first: 0.5}
    build = export.bundle_callable(models)
    st.session_state["studio.thresholds"] = {first: 0.9}  # later changes are not in this zip
    with zipfile.ZipFile(io.BytesIO(build())) as zf:
        names = set(zf.namelist())
        params = json.loads(zf.read("parameters.json"))["parameters"]
        proportions = zf.read("proportions.csv").decode()
    assert {"results.h5ad", "proportions.csv", "thresholds.csv", "parameters.json"} <= names
    assert params["threshold_kind"] == "primary" and params["thresholds"][first] == 0.5
    assert set(params["thresholds"]) == set(models.cell_types)  # automatic values for the rest
    assert params["model_key"] == models.key
    assert proportions.count("\n") == 1001  # header + 1,000 spots


# ------------------------------------------------------------------ jobs, sections, seeds
def sidebar_text(at: AppTest) -> str:
    return "\n".join(str(c.value) for c in at.sidebar.caption)


def test_use_demo_fills_the_sidebar_at_once(trained):
    at = new_app(autoload=False)
    at.run()
    assert "No data loaded." in sidebar_text(at)
    at.button(key="use_demo").click().run()
    no_errors(at)
    assert "No data loaded." not in sidebar_text(at)
    assert "**Data:** built-in demo" in sidebar_text(at)
    assert "**Model:** cache" in sidebar_text(at) or "**Model:** trained" in sidebar_text(at)


def _job_rows(at: AppTest):
    tables = [d.value for d in at.dataframe if "state" in d.value.columns]
    assert tables, "no job table"
    return tables[0]


def test_a_job_outlives_its_session_and_is_cancelled_from_another(trained):
    """Session 1 starts a long training and goes away; a new session (a reload) lists it on
    the Jobs page, follows its progress on the Data page, and cancels it."""
    from studio_ui import jobs_ui

    first = loaded()
    first.number_input(key="st_ep_quick").set_value(5000)
    first.number_input(key="seed").set_value(77)
    first.button(key="train").click().run()
    no_errors(first)
    job = next(j for j in jobs_ui.all_jobs() if j.kind == "spatial" and j.seed == 77)
    del first  # the browser tab is closed
    end = time.monotonic() + TIMEOUT
    while job.progress is None and job.active and time.monotonic() < end:
        time.sleep(0.2)
    assert job.state == "running", job.describe()

    second = loaded()  # a new session, as after a reload
    no_errors(second)
    assert second.get("progress"), "the Data page shows the running job"
    assert "Jobs: 1 running" in " ".join(str(p.proto) for p in second.sidebar.get("page_link"))
    second.switch_page("pages/9_jobs.py").run()
    no_errors(second)
    rows = _job_rows(second)
    assert rows.loc[rows["job"] == job.label, "state"].tolist() == ["running"]
    second.button(key=f"cancel_job_{job.id}").click().run()
    assert job.wait(60) == "cancelled"
    second.run()
    no_errors(second)
    rows = _job_rows(second)
    assert rows.loc[rows["job"] == job.label, "state"].tolist() == ["cancelled"]


@pytest.fixture(scope="module")
def section_files(tmp_path_factory):
    """Four tiny sections (two control, two treated) and their reference, as files."""
    import numpy as np

    from conftest import TINY_SIM
    from destvi_core.simulate import simulate_destvi

    sim = simulate_destvi(**TINY_SIM)
    for key in [k for k in sim.st.obsm if k.startswith("true_")]:
        del sim.st.obsm[key]
    sim.st.uns.pop("simulation", None)
    root = tmp_path_factory.mktemp("sections")
    (root / "spatial").mkdir()
    sim.sc.write_h5ad(root / "sc.h5ad")
    for i, idx in enumerate(np.array_split(np.arange(sim.st.n_obs), 4)):
        part = sim.st[idx].copy()
        part.obs["condition"] = "control" if i < 2 else "treated"
        part.write_h5ad(root / "spatial" / f"S{i}.h5ad")
    whole = sim.st.copy()
    whole.obs["sample"] = np.repeat(["a/1", "b 2", "c"], 50)
    whole.write_h5ad(root / "whole.h5ad")
    return root


def test_one_file_split_into_sections_by_an_obs_column(section_files):
    at = new_app(autoload=False)
    at.run()
    at.radio(key="data_source").set_value("Files on this server").run()
    at.text_input(key="path_ref").set_value(str(section_files / "sc.h5ad"))
    at.text_area(key="path_st").set_value(str(section_files / "whole.h5ad")).run()
    no_errors(at)
    at.selectbox(key="split_path").set_value("split by obs['sample']").run()
    at.button(key="load_path").click().run()
    no_errors(at)
    assert any("3 sections" in h.value for h in at.subheader)
    assert at.sidebar.selectbox(key="section_pick").options == ["a_1", "b_2", "c"]
    assert {m.label: m.value for m in at.metric}["Spots"] == "50"


def test_sections_train_from_one_reference_and_compare_conditions(trained, section_files):
    at = new_app(autoload=False)
    at.run()
    at.radio(key="data_source").set_value("Files on this server").run()
    at.text_input(key="path_ref").set_value(str(section_files / "sc.h5ad"))
    at.text_area(key="path_st").set_value(str(section_files / "spatial")).run()
    no_errors(at)
    at.button(key="load_path").click().run()
    no_errors(at)
    assert any("4 sections" in h.value for h in at.subheader)
    assert at.sidebar.selectbox(key="section_pick").options == [
        "S0 (control)", "S1 (control)", "S2 (treated)", "S3 (treated)"]
    at.button(key="train").click().run()
    no_errors(at)
    wait_jobs()
    at.run()
    no_errors(at)
    assert any("Model ready" in s.value for s in at.success)
    at.switch_page("pages/2_proportions.py").run()
    no_errors(at)
    assert "Sections side by side" in [h.value for h in at.subheader]
    assert any("section" in str(c.proto.spec) and "stack" in str(c.proto.spec) for c in charts(at))
    result = next(d.value for d in at.dataframe if "p-value" in d.value.columns)
    assert len(result) == 4 and result["p-value"].notna().all()  # 2 vs 2 sections: Welch
    assert "2 sections of control vs 2 sections of treated" in texts(at)
    before = at.session_state["studio.data"].key
    at.sidebar.selectbox(key="section_pick").set_value("S3").run()
    no_errors(at)
    assert at.session_state["studio.data"].section == "S3"
    assert at.session_state["studio.data"].key != before
    assert at.session_state["studio.models"].data_key == at.session_state["studio.data"].key
    assert "sec" in at.query_params


def test_seed_ensemble_shows_the_spread(trained):
    at = loaded()
    at.number_input(key="n_seeds").set_value(3)
    at.button(key="train").click().run()
    no_errors(at)
    wait_jobs()
    at.run()
    no_errors(at)
    assert any("ensemble of 3 seeds" in s.value for s in at.success)
    models = at.session_state["studio.models"]
    assert models.ensemble_seeds == (0, 1, 2)
    sd = models.proportion_sd()
    assert sd.shape == (1000, len(models.cell_types)) and (sd.to_numpy() > 0).any()
    at.switch_page("pages/2_proportions.py").run()
    no_errors(at)
    assert "How much 3 seeds agree" in [h.value for h in at.subheader]
    from studio_ui import loaders

    spots = loaders.spot_table(models.key, models)
    assert [c for c in spots.columns if c.startswith("sd:")] == [f"sd:{t}" for t in models.cell_types]


# ------------------------------------------------------------------ a model from the disk cache
def _forget_models_in_memory():
    from studio_ui import loaders

    store, lock = loaders._registry()
    with lock:
        store.clear()


def test_cached_model_data_page_shows_history_from_metadata(trained):
    _forget_models_in_memory()
    at = new_app()
    at.run()
    no_errors(at)
    assert any("Model ready (cache)" in s.value for s in at.success)
    assert at.session_state["studio.models"]._saved_histories["destvi"]  # read without torch
    assert any("loss" in c.proto.spec for c in charts(at))  # the loss curve is drawn


def test_cached_model_draws_maps_before_loading_then_loads_for_gamma(trained):
    _forget_models_in_memory()
    at = loaded("pages/2_proportions.py")
    no_errors(at)
    models = at.session_state["studio.models"]
    assert models.origin == "cache" and models.saved_proportions is not None
    assert len(charts(at)) >= 4
    at.switch_page("pages/4_gamma.py").run()
    no_errors(at)
    assert at.session_state["studio.models"].loaded
    assert "Top genes per axis" in [h.value for h in at.subheader]


def test_damaged_cache_entry_shows_error_with_fix(trained):
    from destvi_core.cache import ModelCache

    for key in ModelCache().keys():
        weights = ModelCache().path(key) / "destvi.pt"
        weights.write_bytes(weights.read_bytes()[:100])
    _forget_models_in_memory()
    at = new_app()
    at.switch_page("pages/2_proportions.py").run()  # a deep link, as a shared URL would be
    no_errors(at)  # the maps come from the saved proportions
    assert len(charts(at)) >= 4
    models = at.session_state["studio.models"]
    models._lock.acquire()  # wait for the background load started after the run, if any
    models._lock.release()
    at.switch_page("pages/5_de.py").run()
    assert not at.exception
    assert at.error and "Fix:" in at.error[0].value and "train again" in at.error[0].value
    at.switch_page("pages/1_data_model.py").run()
    assert not at.exception
    assert any(b.key == "train" for b in at.button)  # the user can retrain right there


def test_training_form_params_match_the_preset_autoload_looks_for(monkeypatch):
    """The Data page builds parameters from the chosen preset plus the form's epochs and seed;
    untouched, they must equal the preset itself, or a model trained in the app would never be
    found again by autoload (same cache key)."""
    from destvi_core.pipeline import preset
    from studio_ui import loaders

    monkeypatch.delenv("DESTVI_STUDIO_FAST", raising=False)
    for name in ("quick", "tutorial"):
        p = preset(name)
        form = loaders.preset_params(name, sc_epochs=p.sc_epochs, st_epochs=p.st_epochs, seed=0)
        assert form == p
        assert loaders.model_key(_FakeData(), form) == loaders.model_key(_FakeData(), p)
    from destvi_core.pipeline import spatial_schedule

    quick = loaders.preset_params("quick", st_epochs=7)
    assert spatial_schedule(96, quick)[0] == 7  # given epochs: no step floor on a small slide


class _FakeData:
    key = "data-key"
