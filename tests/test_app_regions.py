"""AppTest of the region views (Regions, Co-localisation, Fit quality) and of regions flowing
through the link, the DE groups and the export, on the built-in demo (tiny training).

Lasso drawing itself needs a browser (tests/test_browser.py); here regions arrive the way a
shared link brings them (``reg`` query parameter) or through the page's own buttons.
"""

from __future__ import annotations

import io
import json
import zipfile
from urllib.parse import quote

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from _apptest import (TIMEOUT, app_environment, new_app, no_errors,  # noqa: E402,F401
                      texts, train_demo, wait_jobs)


N_SPOTS = 1000  # the demo


@pytest.fixture(scope="module", autouse=True)
def fast_env(tmp_path_factory, scheduler_address):
    yield from app_environment(tmp_path_factory.mktemp("model_cache"), scheduler_address)


def map_titles(at: AppTest) -> list[str]:
    return [(json.loads(c.proto.spec)["layout"].get("meta") or {}).get("map") for c in at.get("plotly_chart")]


@pytest.fixture(scope="module")
def trained() -> AppTest:
    """A session where the demo was loaded and a tiny model trained (once per module)."""
    return train_demo()


def loaded(page: str, **query) -> AppTest:
    at = new_app(**query)
    at.run()
    at.switch_page(page).run()
    return at


def _region_items(at: AppTest) -> dict:
    """``{name: (mask, text)}`` of the regions of the session's loaded data."""
    by_data = at.session_state["studio.regions_by_data"]
    return by_data[at.session_state["studio.data"].key]["items"]


def reg_param(**regions: np.ndarray) -> str:
    from destvi_core.analysis import encode_mask

    return ";".join(f"{quote(name, safe='')}~{encode_mask(mask)}" for name, mask in regions.items())


TOP = np.arange(N_SPOTS) < 300
BOTTOM = np.arange(N_SPOTS) >= 700


def test_regions_from_link_listed_and_compared(trained):
    at = loaded("pages/6_regions.py", data="demo", reg=reg_param(**{"top rows": TOP, "bottom": BOTTOM}))
    no_errors(at)
    table = [d.value for d in at.dataframe if "region" in d.value.columns][0]
    assert table["region"].tolist() == ["top rows", "bottom"] and table["spots"].tolist() == [300, 300]
    assert "Dominant type per spot" in map_titles(at)
    # composition: region A = first saved region, against the rest of the tissue
    assert "**top rows**: 300 spots · **rest of the tissue**: 700 spots" in texts(at)
    comp = [d.value for d in at.dataframe if "AUC" in d.value.columns][0]
    assert len(comp) == 8 and comp["adjusted p"].between(0, 1).all()
    assert any("spots above threshold" in c for c in comp.columns)
    at.selectbox(key="comp_b").set_value("bottom").run()
    no_errors(at)
    assert "**top rows**: 300 spots · **bottom**: 300 spots" in texts(at)
    assert len(at.get("vega_lite_chart")) >= 2  # stacked bars + differences
    assert at.query_params["reg"] in (reg_param(**{"top rows": TOP, "bottom": BOTTOM}),
                                      [reg_param(**{"top rows": TOP, "bottom": BOTTOM})])
    at.selectbox(key="reg_colour").set_value("regions").run()
    no_errors(at)
    assert "Regions" in map_titles(at)


def test_rename_and_delete_region_update_de_group(trained):
    at = loaded("pages/6_regions.py", data="demo", reg=reg_param(top=TOP), g1="regionset:top")
    at.selectbox(key="reg_pick").set_value("top")
    at.text_input(key="reg_new_top").set_value("upper edge")
    at.button(key="reg_rename").click().run()
    no_errors(at)
    assert list(_region_items(at)) == ["upper edge"]
    assert at.session_state["studio.groups"]["g1"] == "regionset:upper edge"
    at.switch_page("pages/5_de.py").run()
    no_errors(at)
    assert "region 'upper edge' (300 spots)" in texts(at)
    at.switch_page("pages/6_regions.py").run()
    at.button(key="reg_delete").click().run()
    no_errors(at)
    assert "No region yet" in texts(at)
    at.switch_page("pages/5_de.py").run()
    assert at.error and "no region is chosen" in at.error[0].value and "Fix:" in at.error[0].value


def test_bad_region_link_is_reported_not_raised(trained):
    at = loaded("pages/6_regions.py", data="demo", reg="top~r0.zzzz")
    assert not at.exception
    assert any("not restored" in w.value for w in at.warning)


def _link_script():
    """Run by AppTest.from_function: regions in, the ``reg`` link value out."""
    import streamlit as st

    from studio_ui import region_state, state

    state.set_data(state.LoadedData("data-key", "test", None, None, "cell_type", {}))
    if st.session_state.get("regions_in"):
        for name, mask in st.session_state["regions_in"].items():
            region_state.add_region(name, mask)
    st.session_state["value"] = state._get("regions_url")  # what the link will carry


def test_long_region_link_spills_to_a_file():
    rng = np.random.default_rng(0)
    many = {f"random {i}": rng.random(N_SPOTS) < 0.5 for i in range(12)}  # ~2,300 characters
    at = AppTest.from_function(_link_script)
    at.session_state["regions_in"] = many
    at.run()
    token = at.session_state["value"]
    assert token.startswith("@") and len(token) == 17  # too long for a URL: a content hash
    # a fresh session opening the link gets the regions back from the stored file
    again = loaded("pages/6_regions.py", data="demo", reg=token)
    no_errors(again)
    restored = _region_items(again)
    assert list(restored) == list(many)
    assert all((restored[k][0] == v).all() for k, v in many.items())
    short = AppTest.from_function(_link_script)
    short.session_state["regions_in"] = {"top rows": TOP}
    short.run()
    assert short.session_state["value"] == reg_param(**{"top rows": TOP})  # short: inline


def test_de_group_from_saved_region(trained):
    at = loaded("pages/5_de.py", data="demo", reg=reg_param(top=TOP), g1="regionset:top")
    no_errors(at)
    assert at.selectbox(key="g1_mode").value == "regionset"
    assert "**Group 1:** region 'top' (300 spots)" in texts(at)
    at.button(key="de_run").click().run()
    no_errors(at)
    assert any("log2fc" in d.value.columns for d in at.dataframe)


def test_colocalisation_page(trained):
    at = loaded("pages/7_colocalisation.py", data="demo")
    no_errors(at)
    pairs = [d.value for d in at.dataframe if "neighbour score" in d.value.columns][0]
    assert len(pairs) == 10 and pairs["neighbour score"].is_monotonic_decreasing
    assert any(t and t.endswith("blended proportions") for t in map_titles(at))
    types = at.multiselect(key="coloc_types").options
    at.multiselect(key="coloc_types").set_value(types[:3]).run()
    no_errors(at)
    assert f"{' + '.join(types[:3])}: blended proportions" in map_titles(at)
    assert any("Colour key (mix)" in c.proto.spec for c in at.get("vega_lite_chart"))
    at.multiselect(key="coloc_types").set_value(types[:1]).run()
    assert "Pick two or three" in texts(at)


def test_fit_quality_page_and_data_page_summary(trained):
    at = loaded("pages/1_data_model.py", data="demo")
    no_errors(at)
    assert at.button(key="fit_summary_compute")  # not computed on its own
    at.switch_page("pages/8_fit_quality.py").run()
    no_errors(at)
    assert "Median deviance per count" in texts(at)
    assert {"Deviance per count", "Noise share"} <= set(map_titles(at))
    flagged = [b for b in at.button if b.key == "fit_region"]
    if flagged:  # the tiny model may or may not flag spots
        flagged[0].click().run()
        no_errors(at)
        assert any(n.startswith("poorly fit spots") for n in _region_items(at))
    at.switch_page("pages/1_data_model.py").run()
    no_errors(at)
    assert "Median deviance per count" in texts(at)  # computed once, shown on the Data page


def test_export_everything_has_regions(trained):
    import streamlit as st

    from studio_ui import export

    at = loaded("pages/6_regions.py", data="demo", reg=reg_param(top=TOP))
    st.session_state["studio.data"] = at.session_state["studio.data"]
    st.session_state["studio.models"] = models = at.session_state["studio.models"]
    st.session_state["studio.regions_by_data"] = at.session_state["studio.regions_by_data"]
    with zipfile.ZipFile(io.BytesIO(export.bundle_callable(models)())) as zf:
        regions = zf.read("regions.csv").decode().splitlines()
        params = json.loads(zf.read("parameters.json"))
    assert regions[0] == "spot,top" and sum(line.endswith("True") for line in regions) == 300
    assert "top" in params["regions"]
