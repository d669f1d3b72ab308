"""Page tests with streamlit.testing.v1.AppTest on the built-in demo (tiny training).

A module-scoped fixture trains the demo model once (DESTVI_STUDIO_FAST=1, see conftest.py); the
model lives in the process-wide registry, so later sessions get it instantly.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 240
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="module", autouse=True)
def fast_env(tmp_path_factory):
    """Tiny epochs and a private model cache for this module only (restored afterwards)."""
    saved = {k: os.environ.get(k) for k in ("DESTVI_STUDIO_FAST", "DESTVI_STUDIO_CACHE")}
    os.environ["DESTVI_STUDIO_FAST"] = "1"
    os.environ["DESTVI_STUDIO_CACHE"] = str(tmp_path_factory.mktemp("model_cache"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def new_app(autoload: bool = True, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    if not autoload:
        at.session_state["studio.flag.autoload_done"] = True
    return at


def no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [x.value for x in at.info] + [x.value for x in at.warning] + [x.value for x in at.success]
    return "\n".join(str(p) for p in parts)


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
    at = new_app(autoload=False)
    at.run()
    at.button(key="use_demo").click().run()
    no_errors(at)
    at.button(key="train").click().run()
    no_errors(at)
    assert any("Model ready" in s.value for s in at.success)
    return at


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
                                  "pages/4_gamma.py", "pages/5_de.py"])
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
    assert loaders.preset_params("quick", st_epochs=7).st_min_steps == 0  # quick: no step floor


class _FakeData:
    key = "data-key"
