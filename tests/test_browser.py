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
    page.get_by_text("Model ready").wait_for(timeout=240_000)
    wait_idle(page)
    no_exception(page)
    assert page.get_by_text("Genes shared").is_visible()
    shot(page, "1_data_model")

    go(page, "Proportion maps")
    page.get_by_text("Mean proportion per type").wait_for()
    page.locator(".vega-embed").first.wait_for()
    assert page.locator(".vega-embed").count() >= 4
    no_exception(page)
    shot(page, "2_proportions")

    go(page, "Thresholds")
    page.get_by_text("spots kept").first.wait_for()
    assert page.locator('[data-testid="stSlider"]').count() >= 2
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
