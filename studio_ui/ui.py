"""Shared widgets: sidebar, error display, downloads, presentation mode, page guards."""

from __future__ import annotations

import io
from typing import NamedTuple
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pandas as pd
import streamlit as st

from destvi_core.errors import DestVIError, DestVIWarning

from . import charts, loaders, maps, state

DATA_PAGE = "pages/1_data_model.py"


# ------------------------------------------------------------------ page shell
def page_title(title: str) -> None:
    """Start a page: make sure it runs inside app.py's shell, then draw its title.

    Streamlit treats a ``pages/`` folder as a legacy multipage app until the entry script has
    called ``st.navigation`` once in the process, so on a freshly started server a deep link
    (e.g. ``/thresholds`` from a shared URL) would run the page file alone, without page config,
    sidebar or autoload. When app.py did not open this run, switch the legacy mode off and rerun
    through app.py (same URL, same page).
    """
    if not state.flag("in_shell"):
        from streamlit.runtime.pages_manager import PagesManager

        PagesManager.uses_pages_directory = False
        st.rerun()
    st.title(title)


# ------------------------------------------------------------------ errors
@contextmanager
def user_errors(action: str = "") -> Iterator[None]:
    """Show engine errors as ``st.error`` (with the fix) and DestVIWarnings as ``st.warning``.

    Unexpected exceptions are shown as a short error with the details folded away — never a
    red traceback. Streamlit's own control flow (rerun/stop) passes through.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DestVIWarning)
        try:
            yield
        except DestVIError as err:
            st.error(str(err), icon=":material/error:")
        except Exception as err:  # noqa: BLE001 - last line of defence for the user
            what = f" while {action}" if action else ""
            st.error(f"Something went wrong{what}: {err}. Fix: check the inputs; if it persists, "
                     "send the details below to the developers.", icon=":material/error:")
            with st.expander("Technical details"):
                st.code("".join(traceback.format_exception(err)), language=None)
    shown = set()
    for w in caught:
        msg = str(w.message)
        if issubclass(w.category, DestVIWarning) and msg not in shown:
            shown.add(msg)
            st.warning(msg, icon=":material/info:")


def show_messages(messages: list[str] | tuple[str, ...]) -> None:
    for msg in messages:
        st.warning(msg, icon=":material/info:")


# ------------------------------------------------------------------ layout helpers
def width(base: int) -> int:
    """Chart width, larger in presentation mode."""
    return int(base * 1.35) if state.presentation() else base


def show_chart(chart, key: str | None = None, **kwargs):
    """Draw an Altair chart or a spatial map (:class:`maps.SpotMap`) with the app's fonts, and
    return the selection state if any."""
    if isinstance(chart, maps.SpotMap):
        return show_map(chart, key=key, on_select=kwargs.get("on_select", "ignore"),
                        drag=kwargs.get("drag", "pan"))
    kwargs.setdefault("width", "content")  # keep the spec's width
    return st.altair_chart(charts.finish(chart, state.presentation()), key=key, **kwargs)


def show_map(spot_map: maps.SpotMap, key: str | None = None, on_select: str = "ignore",
             drag: str = "pan"):
    """Draw a spatial map (Plotly; WebGL or raster at scale). Selectable maps return the
    selection event (turn it into spots with :func:`maps.selection_mask`); ``drag="lasso"``
    makes a drag draw a lasso (the toolbar switches between pan, lasso and box)."""
    config = {"scrollZoom": True, "displaylogo": False, "doubleClick": "reset", "displayModeBar": True,
              "modeBarButtonsToRemove": ["toImage", "autoScale2d"]
              + ([] if spot_map.selectable else ["select2d", "lasso2d"])}
    figure = maps.style(spot_map.figure, state.presentation())
    if spot_map.selectable and drag in ("lasso", "select"):
        figure = {"data": figure["data"], "layout": {**figure["layout"], "dragmode": drag}}
    if spot_map.selectable and on_select != "ignore":
        return st.plotly_chart(figure, key=key, on_select=on_select, selection_mode=("lasso", "box"),
                               config=config, theme=None, width="content")
    st.plotly_chart(figure, key=key, config=config, theme=None, width="content")
    return None


def _chart_bytes(chart, fmt: str) -> Callable[[], bytes]:
    if isinstance(chart, maps.SpotMap):
        presentation = state.presentation()

        def render_map() -> bytes:
            from .map_export import render

            return render(chart, fmt, presentation)

        return render_map

    def render() -> bytes:
        buf = io.BytesIO() if fmt == "png" else io.StringIO()
        charts.finish(chart, state_presentation_snapshot).save(buf, format=fmt,
                                                               **({"scale_factor": 2} if fmt == "png" else {}))
        value = buf.getvalue()
        return value if isinstance(value, bytes) else value.encode()

    state_presentation_snapshot = state.presentation()
    return render


def downloads(chart, data: pd.DataFrame | None, stem: str, key: str) -> None:
    """Figure (PNG, SVG) and data (CSV) downloads; rendered only when clicked."""
    if state.presentation():
        return
    row = st.container(horizontal=True, gap="small")
    cols = [row, row, row]
    cols[0].download_button("⬇ PNG", _chart_bytes(chart, "png"), f"{stem}.png", "image/png",
                            key=f"dl_png_{key}", on_click="ignore")
    cols[1].download_button("⬇ SVG", _chart_bytes(chart, "svg"), f"{stem}.svg", "image/svg+xml",
                            key=f"dl_svg_{key}", on_click="ignore")
    if data is not None:
        cols[2].download_button("⬇ CSV", lambda: data.to_csv(index=False).encode(), f"{stem}.csv",
                                "text/csv", key=f"dl_csv_{key}", on_click="ignore")


def csv_download(data: pd.DataFrame, stem: str, key: str, label: str = "⬇ CSV",
                 index: bool = False) -> None:
    st.download_button(label, lambda: data.to_csv(index=index).encode(), f"{stem}.csv", "text/csv",
                       key=f"dl_{key}", on_click="ignore")


def presentation_css() -> None:
    if state.presentation():
        st.html("""<style>
        html, body, [class*="css"], .stMarkdown p, .stMarkdown li { font-size: 1.3rem !important; }
        h1 { font-size: 3rem !important; } h2 { font-size: 2.2rem !important; }
        h3 { font-size: 1.8rem !important; }
        [data-testid="stMetricValue"] { font-size: 2.6rem !important; }
        [data-testid="stWidgetLabel"] p { font-size: 1.2rem !important; }
        [data-baseweb="select"] div, [data-testid="stDataFrame"] { font-size: 1.15rem !important; }
        </style>""")


def preload_chart_library() -> None:
    """First run of a session: send a tiny hidden chart before any heavy work.

    The browser downloads a chart library (Plotly for the spatial maps) only when a first chart
    arrives; asking for it at the start of the run overlaps that download with the loading of
    data and model. Measured with bench/bench_app.py (vega, when maps were Altair charts):
    first proportion map 5.0 s -> 3.6 s from start.
    """
    if state.flag("charts_preloaded"):
        return
    state.set_flag("charts_preloaded", True)
    with st.sidebar.container(key="chart_preload"):
        st.html("<style>.st-key-chart_preload { position: absolute; opacity: 0; pointer-events: none; "
                "height: 1px; width: 40px; overflow: hidden; }</style>")
        # the first chart of most pages is a spatial map (Plotly): fetch that library first;
        # Altair's (vega) follows with the first curve or bar chart
        st.plotly_chart({"data": [{"type": "scatter", "x": [0], "y": [0]}],
                         "layout": {"width": 40, "height": 20, "margin": {"l": 0, "r": 0, "t": 0, "b": 0}}},
                        config={"staticPlot": True}, theme=None, width="content", key="plotly_preload")


# ------------------------------------------------------------------ guards and pickers
def require_models() -> state.LoadedModels:
    """The session's models, or a friendly pointer to the Data & model page (stops the page).

    While this section's model is still training, the page shows the live progress instead
    and draws itself as soon as the model is ready.
    """
    models = state.models()
    if models is None:
        from . import jobs_panel, jobs_ui

        data = state.data()
        if data is not None and any(j.active for j in jobs_ui.section_jobs(data)):
            st.info("The model of this section is training in the background; this page draws "
                    "itself as soon as it is ready.", icon=":material/hourglass_top:")
            jobs_panel.progress((data.key,), key="page", loss=False)
            st.stop()
        st.info("No model yet. Start with the built-in demo or your own data on the "
                "**Data & model** page.", icon=":material/arrow_back:")
        st.page_link(DATA_PAGE, label="Go to Data & model", icon=":material/folder_open:")
        st.stop()
    apply_url_thresholds(models)
    return models


class ModelPage(NamedTuple):
    """What every analysis page reads first: models, data, types, the spot table, histology."""

    models: state.LoadedModels
    data: state.LoadedData
    types: list[str]
    spots: pd.DataFrame
    image: dict | None


def ensure_loaded(models: state.LoadedModels) -> state.LoadedModels:
    """Load deferred models now (with a spinner); on failure show the error with its fix,
    forget the model and stop the page."""
    if not models.loaded:
        with st.spinner("Loading the model…"):
            try:
                models.load()
            except DestVIError as err:
                st.error(str(err), icon=":material/error:")
                state.set_models(None)
                st.stop()
    return models


def model_page(need_model: bool = False) -> ModelPage:
    """Inputs of an analysis page (stops the page with a pointer when no model is loaded).

    Maps and thresholds only need the proportions, which a cached model provides before its
    weights are loaded; pages that run the models themselves pass ``need_model=True``.
    """
    models = require_models()
    if need_model:
        ensure_loaded(models)
    data = state.data()
    return ModelPage(models, data, loaders.cell_types(models),
                     loaders.spot_table(models.key, models), loaders.histology(data.key, data))


def apply_url_thresholds(models: state.LoadedModels) -> None:
    thr = state.url_thresholds()
    if thr:
        types = loaders.cell_types(models)
        for ct, value in state.consume_url_thresholds().items():
            if ct in types:
                state.set_threshold(ct, value)


def type_picker(types: list[str], label: str = "Cell type", key: str = "page",
                container=st) -> str:
    """Cell-type selectbox shared by all pages (the choice follows the user across pages)."""
    current = state.cell_type(types)
    wkey = f"ct_pick_{key}"
    if st.session_state.get(wkey) not in types:
        st.session_state.pop(wkey, None)
    choice = container.selectbox(label, types, index=types.index(current), key=wkey)
    state.set_cell_type(choice)
    return choice


def current_thresholds(models: state.LoadedModels) -> dict[str, float]:
    """Session thresholds, with the automatic value (of the chosen kind) for untouched types."""
    return loaders.merged_thresholds(loaders.auto_thresholds(models.key, models),
                                     state.threshold_kind(), state.thresholds())


# ------------------------------------------------------------------ startup and sidebar
def autoload() -> None:
    """First run of a session: reopen the demo when the URL asks for it or a model is cached."""
    if state.flag("autoload_done") or state.data() is not None:
        return
    state.set_flag("autoload_done", True)
    try:
        from . import jobs_ui

        entries = loaders.cache_entries()
        wanted = state.url_data() == "demo"
        store, _ = loaders._registry()
        demo_jobs = any(j.active for j in jobs_ui.all_jobs())
        if not (wanted or store or len(entries) or demo_jobs):
            return
        data = loaders.demo_data(0)
        candidates = [loaders.preset_params("quick"), jobs_ui.first_look_params(),
                      loaders.training_params()]
        models = None
        for params in candidates:
            models = loaders.find_models(data, params)
            if models is not None:
                models = jobs_ui.attach_ensemble(models, data, params)
                break
        training = any(j.active for j in jobs_ui.section_jobs(data))
        if wanted or models is not None or training:
            state.set_data(data)
        if models is not None:
            state.set_models(models)
        if training:  # reattach: this session takes the refined model when its job ends
            jobs_ui.want(data, candidates[:2], 1)
    except Exception:  # noqa: BLE001 - autoload is a convenience; the Data page reports errors
        return


def warm_up() -> None:
    """After the page is drawn: load a deferred model in the background, so the next page that
    runs it (gamma, DE) finds it ready."""
    models = state.models()
    if models is not None:
        models.load_in_background()


def sidebar() -> None:
    from . import jobs_ui

    with st.sidebar:
        st.toggle("Presentation mode", key="presentation_toggle", value=state.presentation(),
                  help="Larger fonts and markers, fewer controls — for screen sharing.",
                  on_change=lambda: state.set_presentation(st.session_state["presentation_toggle"]))
        section_picker()
        data, models = state.data(), state.models()
        jobs_status()
        if data is None:
            st.caption("No data loaded.")
            return
        st.caption(f"**Data:** {data.source}  \n{data.st.n_obs:,} spots · {data.sc.n_obs:,} cells · "
                   f"{data.st.n_vars:,} genes")
        if models is None:
            training = any(j.active for j in jobs_ui.section_jobs(data))
            st.caption("**Model:** " + ("training in the background" if training
                                        else "not trained yet"))
            return
        ensemble = f" · {len(models.ensemble_seeds)} seeds" if models.ensemble_seeds else ""
        st.caption(f"**Model:** {models.origin}{ensemble}  \n`{models.key[:10]}`")
        if not state.presentation():
            export_button(models)


def section_picker() -> None:
    """The current section (drives every page) when several are loaded."""
    project = state.project()
    if project is None or len(project.sections) < 2:
        return
    names = project.names
    current = state.section() if state.section() in names else names[0]
    if st.session_state.get("section_pick") not in names:
        st.session_state.pop("section_pick", None)
    conditions = state.conditions()
    st.selectbox("Section", names, index=names.index(current), key="section_pick",
                 format_func=lambda n: f"{n} ({conditions[n]})" if conditions.get(n) else n,
                 on_change=lambda: state.set_section(st.session_state["section_pick"]),
                 help="Every page shows this section; the proportion page also compares them.")


def jobs_status() -> None:
    """How many trainings run and wait on this server (never starts the cluster)."""
    from . import jobs_ui

    jobs = jobs_ui.all_jobs()
    running = sum(j.state == "running" for j in jobs)
    queued = sum(j.state == "queued" for j in jobs)
    if running or queued:
        st.page_link("pages/9_jobs.py", label=f"Jobs: {running} running · {queued} queued",
                     icon=":material/work_history:")


def export_button(models: state.LoadedModels) -> None:
    """'Export everything': h5ad + CSVs + parameters JSON, zipped by the engine."""
    from . import export

    st.download_button("⬇ Export everything (.zip)", export.bundle_callable(models),
                       "destvi_analysis.zip", "application/zip", key="dl_bundle",
                       on_click="ignore", help="Proportions, thresholds, gamma, DE results, "
                       "parameters (h5ad + CSV + JSON).")
