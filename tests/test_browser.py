"""Real-browser test: `streamlit run app.py` driven by Playwright and the system Chromium.

Visits every page on the demo (tiny training), waits for real content, asserts visible text and
saves full-page screenshots to ``screenshots/`` (gitignored). Skips cleanly when Playwright or
Chromium is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

if not Path(CHROMIUM).exists():
    pytest.skip("system Chromium not found (apt-get install chromium)", allow_module_level=True)


def _children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc; [] elsewhere)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    env = dict(os.environ, DESTVI_STUDIO_FAST="1",
               DESTVI_STUDIO_CACHE=str(tmp_path_factory.mktemp("browser_cache")))
    log = open(tmp_path_factory.mktemp("log") / "streamlit.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            log.seek(0)
            pytest.fail("streamlit did not start:\n" + log.read()[-3000:])
        yield url
    finally:
        workers = _children(proc.pid)  # the local Dask cluster's worker processes
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        deadline = time.monotonic() + 15
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [w for w in workers if _alive(w)]
        for w in left:  # do not leave them behind, but fail the test
            os.kill(w, 9)
        assert not left, f"worker processes outlived the app: {left}"


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        yield pg
        context.close()
        browser.close()


def wait_idle(page, timeout: float = 120) -> None:
    """Wait until the script has finished (no 'Running…' status widget)."""
    page.wait_for_timeout(400)
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')""",
        timeout=timeout * 1000)
    page.wait_for_timeout(300)


def shot(page, name: str) -> Path:
    SHOTS.mkdir(exist_ok=True)
    path = SHOTS / f"{name}.png"
    # the app scrolls inside its main container: grow the viewport to the content height
    height = page.evaluate("""() => {
        const m = document.querySelector('[data-testid="stMain"]');
        return m ? m.scrollHeight : document.body.scrollHeight; }""")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(max(int(height), 1000), 7000)})
    page.wait_for_timeout(500)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    return path


def go(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    wait_idle(page)


def no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0


def test_every_page_in_a_browser(server, page):
    # the very first request to a fresh server is a deep link: it must still run inside app.py
    # (sidebar navigation, page config), not as a lone file of pages/
    page.goto(server + "/thresholds")
    page.get_by_text("No model yet").wait_for()
    wait_idle(page)
    assert page.get_by_test_id("stSidebarNav").is_visible()
    assert page.title() == "DestVI Studio"
    go(page, "Data & model")
    page.get_by_role("heading", name="Data & model").wait_for()
    page.get_by_role("button", name="▶ Use the demo").click()
    page.get_by_text("Loaded: built-in demo").wait_for(timeout=120_000)
    wait_idle(page)
    sidebar = page.get_by_test_id("stSidebar")
    assert "No data loaded." not in sidebar.inner_text()  # updated in the same click
    sidebar.get_by_text("Data: built-in demo").wait_for()
    page.get_by_role("button", name="▶ Train").click()  # a job on the server's own cluster
    page.get_by_text("Model ready").first.wait_for(timeout=240_000)
    wait_idle(page)
    no_exception(page)
    assert page.get_by_text("Genes shared").is_visible()
    shot(page, "1_data_model")

    go(page, "Proportion maps")
    page.get_by_text("Mean proportion per type").wait_for()
    charts = page.locator('[data-testid="stMain"] .vega-embed, [data-testid="stMain"] .js-plotly-plot')
    charts.first.wait_for()
    assert charts.count() >= 4  # one type and dominant (maps), all types, mean bars
    no_exception(page)
    shot(page, "2_proportions")

    go(page, "Thresholds")
    page.get_by_text("spots kept").first.wait_for()
    page.locator('[data-testid="stSlider"]').nth(1).wait_for()  # one slider per type
    no_exception(page)
    shot(page, "3_thresholds")

    go(page, "Gamma explorer")
    page.get_by_text("Top genes per axis").wait_for()
    page.get_by_text("Source:").wait_for()
    no_exception(page)
    shot(page, "4_gamma")

    go(page, "DE volcano")
    page.get_by_role("button", name="▶ Run DE").click()
    page.get_by_text("genes up in group 1").wait_for(timeout=120_000)
    wait_idle(page)
    no_exception(page)
    shot(page, "5_de")

    page.locator('[data-testid="stSidebar"] label').filter(has_text="Presentation mode").click()
    wait_idle(page)
    page.wait_for_function("() => window.location.search.includes('present=1')", timeout=10_000)
    shot(page, "5_de_presentation")

    # a colleague opening the shared link sees the same page and settings
    shared = page.url
    other = page.context.new_page()
    other.goto(shared)
    other.get_by_role("heading", name="DE volcano builder").wait_for()
    wait_idle(other)
    no_exception(other)
    other.close()


def lasso(page, locator, radius: float = 0.28, steps: int = 36) -> None:
    """Draw a closed lasso around the centre of a Plotly map (its drag layer)."""
    import math

    box = locator.locator(".nsewdrag").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    r = radius * min(box["width"], box["height"])
    page.mouse.move(cx + r, cy)
    page.mouse.down()
    for k in range(1, steps + 1):
        a = 2 * math.pi * k / steps
        page.mouse.move(cx + r * math.cos(a), cy + r * math.sin(a), steps=2)
    page.mouse.up()


def pick(page, label: str, option: str) -> None:
    """Choose ``option`` in the Streamlit selectbox labelled ``label``."""
    page.get_by_test_id("stSelectbox").filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page)


def test_lasso_region_feeds_composition_and_de(server, page):
    """Draw a lasso on the Regions page: the composition panel follows, the selection is saved
    as a named region that travels in the link and becomes a DE group."""
    go(page, "Data & model")
    if not page.get_by_text("Model ready").count():  # this test run alone
        page.get_by_role("button", name="▶ Use the demo").click()
        page.get_by_text("Loaded: built-in demo").wait_for(timeout=120_000)
        wait_idle(page)
        page.get_by_role("button", name="▶ Train").click()
        page.get_by_text("Model ready").first.wait_for(timeout=240_000)
        wait_idle(page)
    if "present=1" in page.url:  # the previous test ends in presentation mode
        page.locator('[data-testid="stSidebar"] label').filter(has_text="Presentation mode").click()
        wait_idle(page)
        page.wait_for_function("() => !window.location.search.includes('present=1')", timeout=10_000)
    go(page, "Regions")
    region_map = page.locator('[data-testid="stMain"] .js-plotly-plot').first
    region_map.wait_for()
    page.wait_for_timeout(1000)
    lasso(page, region_map)
    page.get_by_text("spots selected").wait_for(timeout=60_000)
    wait_idle(page)
    selected = int(page.get_by_text("spots selected").inner_text().split()[0].replace(",", ""))
    assert 100 < selected < 900  # a disc in the middle of the 1,000-spot demo
    panel = page.get_by_text("current selection:", exact=False).first
    panel.wait_for()
    assert f"current selection: {selected:,} spots" in panel.inner_text().replace("**", "")
    assert page.get_by_text("Composition of each region").count() or page.locator(
        '[data-testid="stMain"] .vega-embed').count() >= 2
    no_exception(page)
    name = page.get_by_label("Name of the new region")
    name.fill("browser lasso")
    page.get_by_role("button", name="Save as region").click()
    page.get_by_text("Region 'browser lasso' saved").wait_for()
    wait_idle(page)
    page.wait_for_function("() => window.location.search.includes('reg=browser')", timeout=10_000)
    no_exception(page)
    shot(page, "6_regions")

    go(page, "DE volcano")
    pick(page, "Group 1", "A saved region (lasso or box)")
    page.get_by_text(f"region 'browser lasso' ({selected:,} spots)").first.wait_for()
    no_exception(page)
    shot(page, "5_de_region_group")

    go(page, "Co-localisation")
    page.get_by_text("Strongest neighbours").wait_for()
    page.locator('[data-testid="stMain"] .js-plotly-plot').first.wait_for()
    no_exception(page)
    shot(page, "7_colocalisation")

    go(page, "Fit quality")
    page.get_by_text("Median deviance per count").wait_for(timeout=120_000)
    no_exception(page)
    shot(page, "8_fit_quality")

    go(page, "Regions")
    page.locator('[data-testid="stMain"] .js-plotly-plot').first.wait_for()
    if "present=1" not in page.url:
        page.locator('[data-testid="stSidebar"] label').filter(has_text="Presentation mode").click()
        wait_idle(page)
    page.wait_for_timeout(800)
    assert page.get_by_role("button", name="⬇ PNG").count() == 0  # downloads hidden
    shot(page, "6_regions_presentation")
