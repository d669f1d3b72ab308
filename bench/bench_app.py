"""App latency benchmark: `streamlit run app.py` in headless Chromium (Playwright).

Run: ``python3 bench/bench_app.py [--moves 9] [--starts 3]`` (needs Playwright and /usr/bin/chromium).

1. Fills a temporary model cache (``DESTVI_STUDIO_CACHE``) with a first server run: demo data
   (1,000 spots) + "Train" with ``DESTVI_STUDIO_FAST=1`` (tiny epochs), like tests/test_browser.py.
   Its time to the first map (including training) is reported too, as "cold, trains".
2. First map, cached model: ``--starts`` fresh server processes; each time from ``Popen`` of
   ``streamlit run app.py`` to the first proportion map drawn (a ``.vega-embed`` canvas/svg
   visible on ``/proportions``; the app autoloads the demo and the cached model). Split into
   server-ready (``/_stcore/health``) and page-to-map. Target < 5 s.
3. Slider redraw on ``/thresholds`` (~1,000 spots): ``--moves`` alternating End / Home key
   presses on the first type's cut-off slider (max <-> 0); time from the key press to (i) the "N of M spots
   kept" caption showing the new count and (ii) the fragment run finished (no running status
   widget). Target < 300 ms. Note: Streamlit's slider sends its value to the server only after
   its own debounce, which is inside these numbers (what a user sees).

Prints ``uptime`` load before each part (the machine is shared) and a markdown table; results
are appended to ``bench/results/bench_app_<timestamp>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
# a chart in the page body (the sidebar holds a hidden 1-px chart that preloads the library)
MAP = '[data-testid="stMain"] .vega-embed canvas, [data-testid="stMain"] .vega-embed svg'
# text of the first type's "N of M spots kept" caption (same reader before and after a move)
CAPTION_JS = """() => { const el = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
    .find(e => e.innerText.includes('spots kept')); return el ? el.innerText : null; }"""


class _SkipFill(Exception):
    pass


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, cache: str, log_dir: Path, fast: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, DESTVI_STUDIO_CACHE=cache)
        if fast:
            env["DESTVI_STUDIO_FAST"] = "1"
        self.log = open(log_dir / f"streamlit_{self.port}.log", "w+")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(self.port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120) -> float:
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            try:
                if urllib.request.urlopen(self.url + "/_stcore/health", timeout=1).read() == b"ok":
                    return time.perf_counter() - self.t0
            except OSError:
                time.sleep(0.05)
        self.log.seek(0)
        raise RuntimeError("streamlit did not start:\n" + self.log.read()[-3000:])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def wait_idle(page, timeout: float = 120) -> None:
    page.wait_for_timeout(200)
    page.wait_for_function("""() => !document.querySelector('[data-testid="stStatusWidget"]')""",
                           timeout=timeout * 1000)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moves", type=int, default=9, help="slider moves to time")
    ap.add_argument("--starts", type=int, default=3, help="fresh server starts to time")
    ap.add_argument("--cache", default=None,
                    help="reuse a model cache folder filled by an earlier run (skips part 1)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        print(f"Chromium not found at {CHROMIUM}")
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    md = RESULTS / f"bench_app_{stamp}.md"

    def out(s: str) -> None:
        print(s, flush=True)
        with md.open("a") as f:
            f.write(s + "\n")

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown")
    import streamlit

    out(f"# bench_app {dt.datetime.now():%Y-%m-%d %H:%M}\n\nmachine: nproc={os.cpu_count()}, "
        f"CPU {cpu}, streamlit {streamlit.__version__}, Chromium {CHROMIUM}\n")
    rows: list[list[str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="destvi_bench_app_"))
    cache = args.cache or str(tmp / "cache")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)

        def new_page():
            ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
            pg = ctx.new_page()
            pg.set_default_timeout(240_000)
            return ctx, pg

        # ------------------------------------------------------------ 1. fill the cache
        out(f"load before cache fill: `{uptime()}`")
        srv = None if args.cache else Server(cache, tmp)
        try:
            if srv is None:
                raise _SkipFill
            ready = srv.wait_ready()
            ctx, page = new_page()
            page.goto(srv.url)  # the default page lives at "/" ("/data" shows "Page not found")
            page.get_by_role("button", name="▶ Use the demo").click()
            page.get_by_text("Loaded: built-in demo").wait_for()
            wait_idle(page)
            t = time.perf_counter()
            page.get_by_role("button", name="▶ Train").click()
            page.get_by_text("Model ready").wait_for()
            train_s = time.perf_counter() - t
            t = time.perf_counter()
            page.goto(srv.url + "/proportions")
            page.locator(MAP).first.wait_for(state="visible")
            cold_map = time.perf_counter() - t
            out(f"cache filled: server ready {ready:.2f}s, Train click -> 'Model ready' "
                f"{train_s:.2f}s (DESTVI_STUDIO_FAST=1), then /proportions map {cold_map:.2f}s")
            rows.append(["cache fill: Train (FAST) -> Model ready", f"{train_s:.2f} s", "", ""])
            ctx.close()
        except _SkipFill:
            out(f"cache fill skipped: reusing {cache}")
        finally:
            if srv is not None:
                srv.stop()

        # ------------------------------------------------------------ 2. first map, cached
        out(f"\nload before first-map runs: `{uptime()}`")
        firsts, readys, pages = [], [], []
        for i in range(args.starts):  # --starts 0 skips part 2
            srv = Server(cache, tmp)
            try:
                ready = srv.wait_ready()
                ctx, page = new_page()
                t = time.perf_counter()
                page.goto(srv.url + "/proportions")
                page.locator(MAP).first.wait_for(state="visible")
                total = time.perf_counter() - srv.t0
                page_s = time.perf_counter() - t
                n_maps = page.locator('[data-testid="stMain"] .vega-embed').count()
                ok = page.get_by_text("Proportion maps").first.is_visible()
                out(f"start {i + 1}: server ready {ready:.2f}s, page -> first map {page_s:.2f}s, "
                    f"total {total:.2f}s ({n_maps} charts so far, title visible={ok})")
                firsts.append(total)
                readys.append(ready)
                pages.append(page_s)
                if i == 0:
                    page.screenshot(path=str(tmp / "first_map.png"))
                ctx.close()
            finally:
                srv.stop()
        if firsts:
            rows += [["first proportion map, fresh server + cached model (total)",
                      f"{statistics.median(firsts):.2f} s",
                      f"{min(firsts):.2f}–{max(firsts):.2f} s (n={len(firsts)})", "< 5 s"],
                     ["  of which server start -> /_stcore/health ok",
                      f"{statistics.median(readys):.2f} s", "", ""],
                     ["  of which page.goto -> first map visible",
                      f"{statistics.median(pages):.2f} s", "", ""]]

        # ------------------------------------------------------------ 3. slider redraw
        out(f"\nload before slider runs: `{uptime()}`")
        srv = Server(cache, tmp)
        try:
            srv.wait_ready()
            ctx, page = new_page()
            page.goto(srv.url + "/thresholds")
            caption = page.get_by_text("spots kept").first
            caption.wait_for()
            wait_idle(page)
            page.locator(MAP).first.wait_for(state="visible")
            page.wait_for_timeout(1000)
            slider = page.locator('[data-testid="stSlider"]').first
            thumb = slider.get_by_role("slider").first
            box = slider.bounding_box()
            tb = thumb.bounding_box()
            y = tb["y"] + tb["height"] / 2
            x0, width = box["x"] + 8, box["width"] - 16
            spots_total = caption.inner_text()
            out(f"thresholds page: '{spots_total}'")
            fractions = [0.15, 0.6, 0.3, 0.8, 0.05, 0.5, 0.25, 0.7, 0.4, 0.9, 0.1, 0.65]
            captions_ms, idle_ms = [], []
            for k in range(args.moves):
                before = page.evaluate(CAPTION_JS)
                # alternate End / Home on the focused thumb: slider max (few spots kept) and 0
                # (all kept); clicks on the track also work but with the tiny FAST model most
                # cut-offs keep the same spots, so the caption would not change
                key = "End" if k % 2 == 0 else "Home"
                thumb.focus()
                t = time.perf_counter()
                page.keyboard.press(key)
                try:
                    page.wait_for_function(f"(before) => ({CAPTION_JS})() !== before",
                                           arg=before, timeout=15_000, polling="raf")
                except Exception:  # noqa: BLE001 - same count (e.g. all spots kept): skip
                    out(f"move {k + 1}: caption did not change (value {slider.inner_text().split(chr(10))[1:2]})")
                    wait_idle(page)
                    continue
                c_ms = (time.perf_counter() - t) * 1000
                page.wait_for_function(
                    """() => !document.querySelector('[data-testid="stStatusWidget"]')""",
                    polling="raf")
                i_ms = (time.perf_counter() - t) * 1000
                after = page.evaluate(CAPTION_JS)
                out(f"move {k + 1}: value {slider.inner_text().split(chr(10))[1:2]}, "
                    f"'{before.split(' for ')[0]}' -> '{after.split(' for ')[0]}': caption "
                    f"{c_ms:.0f} ms, run finished {i_ms:.0f} ms")
                captions_ms.append(c_ms)
                idle_ms.append(i_ms)
                page.wait_for_timeout(600)
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(tmp / "thresholds.png"))
            ctx.close()
        finally:
            srv.stop()
        if captions_ms:
            rows.append(["slider move -> kept-spots caption updated (Thresholds, 1,000 spots)",
                         f"{statistics.median(captions_ms):.0f} ms",
                         f"{min(captions_ms):.0f}–{max(captions_ms):.0f} ms (n={len(captions_ms)})",
                         "< 300 ms"])
            rows.append(["slider move -> fragment run finished",
                         f"{statistics.median(idle_ms):.0f} ms",
                         f"{min(idle_ms):.0f}–{max(idle_ms):.0f} ms", ""])
        browser.close()
    out(f"\nload at end: `{uptime()}`\n")
    out("| measurement | median | range | target |\n|---|---|---|---|")
    for r in rows:
        out("| " + " | ".join(r) + " |")
    out(f"\nscreenshots: {tmp}/first_map.png, {tmp}/thresholds.png; saved {md.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
