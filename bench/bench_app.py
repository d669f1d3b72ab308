"""App latency benchmark: `streamlit run app.py` in headless Chromium (Playwright).

Run: ``python3 bench/bench_app.py [--moves 9] [--starts 3]`` (needs Playwright and /usr/bin/chromium).

1. Fills a temporary model cache (``DESTVI_STUDIO_CACHE``) with a first server run: demo data
   (1,000 spots) + "Train" with ``DESTVI_STUDIO_FAST=1`` (tiny epochs), like tests/test_browser.py.
   Its time to the first map (including training) is reported too, as "cold, trains".
2. First map, cached model: ``--starts`` fresh server processes; each time from ``Popen`` of
   ``streamlit run app.py`` to the first proportion map drawn (Plotly points or raster image
   visible on ``/proportions``; the app autoloads the demo and the cached model). Split into
   server-ready (``/_stcore/health``) and page-to-map. Target < 5 s.
3. Slider redraw on ``/thresholds`` (~1,000 spots): ``--moves`` alternating End / Home key
   presses on the first type's cut-off slider (max <-> 0); time from the key press to (i) the "N of M spots
   kept" caption showing the new count and (ii) the fragment run finished (no running status
   widget). Target < 300 ms. Note: Streamlit's slider sends its value to the server only after
   its own debounce, which is inside these numbers (what a user sees).

4. Lasso on ``/regions`` (same 1,000-spot server): ``--lassos`` lassos of growing radius on the
   map; time from releasing the mouse to the composition panel showing the new selection, and to
   the run finished. Target < 2 s at 100k spots.
5. 100,000 spots (``--large-spots``, 0 skips; a tiled demo): the demo's spots tiled side by side
   (``tiled_demo``), a model trained briefly on them (``--large-epochs``: app timing does not
   depend on accuracy) and saved to a folder with its proportions. A fresh server (not FAST) then
   loads the files and the model folder through the Data & model page, and we time: the first
   proportion map after clicking *Proportion maps* (target < 5 s), the threshold slider (target
   < 1 s) and the lasso -> composition panel (target < 2 s).

Prints ``uptime`` load before each part (the machine is shared) and a markdown table; results
are appended to ``bench/results/bench_app_<timestamp>.md``. Run it under the CPU lock:
``flock /tmp/cpu.lock python bench/bench_app.py``.
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
# a spatial map drawn in the page body (the sidebar holds hidden charts that preload the
# libraries): Plotly points (SVG circles or a WebGL canvas) or a raster image
MAP = ('[data-testid="stMain"] .js-plotly-plot .layer-below image, '
       '[data-testid="stMain"] .js-plotly-plot .scatterlayer .point, '
       '[data-testid="stMain"] .js-plotly-plot .gl-container canvas')
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


SELECTION_JS = """() => { const el = [...document.querySelectorAll('[data-testid="stMarkdownContainer"]')]
    .find(e => e.innerText.includes('current selection:')); return el ? el.innerText : null; }"""


def tiled_demo(n_spots: int, seed: int = 0):
    """The prepared demo's spots tiled side by side until ``n_spots`` (reference unchanged).

    Private stand-in for the engine's tiling helper (destvi_core.simulate, issue 11): each tile
    is a copy of the 1,000 demo spots shifted by the tissue width plus one spot spacing.
    """
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from destvi_core.cache import prepared_demo

    sc, st, *_ = prepared_demo(seed)
    tiles = -(-n_spots // st.n_obs)
    side = int(np.ceil(np.sqrt(tiles)))
    xy = np.asarray(st.obsm["spatial"], float)
    step = np.ptp(xy, axis=0) + 100.0
    coords, names, obs = [], [], []
    for t in range(tiles):
        r, c = divmod(t, side)
        coords.append(xy + step * [c, r])
        names.append([f"t{t:03d}_{n}" for n in st.obs_names])
        obs.append(st.obs.assign(tile=t))
    counts = sp.vstack([sp.csr_matrix(st.X)] * tiles).tocsr()[:n_spots]
    big = ad.AnnData(counts, obs=pd.concat(obs).iloc[:n_spots].set_axis(np.concatenate(names)[:n_spots]),
                     var=st.var.copy())
    big.obsm["spatial"] = np.vstack(coords)[:n_spots]
    return sc, big


def prepare_large(n_spots: int, epochs: int, folder: Path, out) -> tuple[Path, Path, Path]:
    """Write the tiled data and a briefly trained model folder; returns (sc, st, model) paths."""
    import torch

    from destvi_core.persistence import save_models
    from destvi_core.pipeline import TrainingParams, train_models

    torch.set_num_threads(2)
    t = time.perf_counter()
    sc, st = tiled_demo(n_spots)
    folder.mkdir(parents=True, exist_ok=True)
    sc_path, st_path, model = folder / "sc.h5ad", folder / "st.h5ad", folder / "model"
    sc.write_h5ad(sc_path)
    st.write_h5ad(st_path)
    out(f"tiled demo: {st.n_obs:,} spots x {st.n_vars:,} genes written in {time.perf_counter() - t:.1f}s")
    t = time.perf_counter()
    params = TrainingParams(sc_epochs=20, st_epochs=epochs, device="cpu")
    sc_model, st_model = train_models(sc, st, "cell_type", params)
    save_models(model, sc_model, st_model, extra_metadata={"params": params.to_dict(),
                                                          "note": "bench_app: brief training"})
    out(f"model: 20 + {epochs} epochs trained and saved in {time.perf_counter() - t:.1f}s")
    return sc_path, st_path, model


def slider_moves(page, moves: int, out) -> tuple[list[float], list[float]]:
    """Alternate End / Home on the first type's threshold slider; ms to caption / run end."""
    caption = page.get_by_text("spots kept").first
    caption.wait_for()
    wait_idle(page)
    page.wait_for_timeout(1000)
    slider = page.locator('[data-testid="stSlider"]').first
    thumb = slider.get_by_role("slider").first
    out(f"thresholds page: '{caption.inner_text()}'")
    captions_ms, idle_ms = [], []
    for k in range(moves):
        before = page.evaluate(CAPTION_JS)
        # alternate End / Home on the focused thumb: slider max (few spots kept) and 0 (all
        # kept); with a tiny model most other cut-offs keep the same spots
        key = "End" if k % 2 == 0 else "Home"
        thumb.focus()
        t = time.perf_counter()
        page.keyboard.press(key)
        try:
            page.wait_for_function(f"(before) => ({CAPTION_JS})() !== before",
                                   arg=before, timeout=15_000, polling="raf")
        except Exception:  # noqa: BLE001 - same count (e.g. all spots kept): skip
            out(f"move {k + 1}: caption did not change")
            wait_idle(page)
            continue
        c_ms = (time.perf_counter() - t) * 1000
        page.wait_for_function(
            """() => !document.querySelector('[data-testid="stStatusWidget"]')""", polling="raf")
        i_ms = (time.perf_counter() - t) * 1000
        after = page.evaluate(CAPTION_JS)
        out(f"move {k + 1}: '{before.split(' for ')[0]}' -> '{after.split(' for ')[0]}': caption "
            f"{c_ms:.0f} ms, run finished {i_ms:.0f} ms")
        captions_ms.append(c_ms)
        idle_ms.append(i_ms)
        page.wait_for_timeout(600)
    return captions_ms, idle_ms


def lassos(page, n: int, out) -> tuple[list[float], list[float]]:
    """Lassos of growing radius on the Regions map; ms from mouse-up to the composition panel
    showing the new selection, and to the run finished."""
    import math

    plot = page.locator('[data-testid="stMain"] .js-plotly-plot').first
    plot.wait_for()
    wait_idle(page)
    page.wait_for_timeout(1000)
    box = plot.locator(".nsewdrag").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    panel_ms, idle_ms = [], []
    for k in range(n):
        r = (0.12 + 0.3 * k / max(n - 1, 1)) * min(box["width"], box["height"])
        before = page.evaluate(SELECTION_JS)
        # start outside the previous selection (a drag inside it would move it)
        page.mouse.move(cx + r, cy)
        page.mouse.down()
        for j in range(1, 41):
            a = 2 * math.pi * j / 40
            page.mouse.move(cx + r * math.cos(a), cy + r * math.sin(a), steps=2)
        t = time.perf_counter()
        page.mouse.up()
        page.wait_for_function(f"(before) => {{ const now = ({SELECTION_JS})(); "
                               "return now !== null && now !== before; }",
                               arg=before, timeout=60_000, polling="raf")
        p_ms = (time.perf_counter() - t) * 1000
        page.wait_for_function(
            """() => !document.querySelector('[data-testid="stStatusWidget"]')""", polling="raf")
        i_ms = (time.perf_counter() - t) * 1000
        out(f"lasso {k + 1}: '{page.evaluate(SELECTION_JS).splitlines()[0]}': panel {p_ms:.0f} ms, "
            f"run finished {i_ms:.0f} ms")
        panel_ms.append(p_ms)
        idle_ms.append(i_ms)
        page.wait_for_timeout(800)
    return panel_ms, idle_ms


def median_row(label: str, values: list[float], unit: str, target: str) -> list[str]:
    if unit == "ms":
        return [label, f"{statistics.median(values):.0f} ms",
                f"{min(values):.0f}–{max(values):.0f} ms (n={len(values)})", target]
    return [label, f"{statistics.median(values):.2f} s",
            f"{min(values):.2f}–{max(values):.2f} s (n={len(values)})", target]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moves", type=int, default=9, help="slider moves to time")
    ap.add_argument("--starts", type=int, default=3, help="fresh server starts to time")
    ap.add_argument("--cache", default=None,
                    help="reuse a model cache folder filled by an earlier run (skips part 1)")
    ap.add_argument("--lassos", type=int, default=3, help="lassos to time (1,000 and large)")
    ap.add_argument("--large-spots", type=int, default=100_000, help="tiled demo size (0 skips)")
    ap.add_argument("--large-epochs", type=int, default=1, help="DestVI epochs of the large model")
    ap.add_argument("--large-moves", type=int, default=5, help="slider moves on the large model")
    ap.add_argument("--large-dir", default=None,
                    help="reuse the tiled data + model written by an earlier run (folder)")
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
                n_maps = page.locator('[data-testid="stMain"] .js-plotly-plot').count()
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
            page.get_by_text("spots kept").first.wait_for()
            wait_idle(page)
            page.locator(MAP).first.wait_for(state="visible")
            captions_ms, idle_ms = slider_moves(page, args.moves, out)
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(tmp / "thresholds.png"))
            out(f"\nload before lasso runs (1,000 spots): `{uptime()}`")
            page.goto(srv.url + "/regions")
            lasso_ms, lasso_idle = lassos(page, args.lassos, out) if args.lassos else ([], [])
            page.screenshot(path=str(tmp / "regions.png"))
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
        if lasso_ms:
            rows.append(median_row("lasso -> composition panel updated (Regions, 1,000 spots)",
                                   lasso_ms, "ms", "< 2 s"))
            rows.append(median_row("lasso -> run finished", lasso_idle, "ms", ""))

        # ------------------------------------------------------------ 5. 100,000 spots
        if args.large_spots:
            large_rows(args, browser, new_page, tmp, rows, out)
        browser.close()
    out(f"\nload at end: `{uptime()}`\n")
    out("| measurement | median | range | target |\n|---|---|---|---|")
    for r in rows:
        out("| " + " | ".join(r) + " |")
    out(f"\nscreenshots: {tmp}/*.png; saved {md.relative_to(ROOT)}")
    return 0


def large_rows(args, browser, new_page, tmp: Path, rows: list, out) -> None:
    """Part 5: the tiled demo through the Data & model page, then maps, slider and lasso."""
    out(f"\nload before the large data: `{uptime()}`")
    folder = Path(args.large_dir) if args.large_dir else tmp / "large"
    if (folder / "model" / "metadata.json").exists():
        sc_path, st_path, model = folder / "sc.h5ad", folder / "st.h5ad", folder / "model"
        out(f"reusing {folder}")
    else:
        sc_path, st_path, model = prepare_large(args.large_spots, args.large_epochs, folder, out)
    srv = Server(str(tmp / "cache_large"), tmp, fast=False)
    try:
        srv.wait_ready()
        ctx, page = new_page()
        page.goto(srv.url)
        page.get_by_role("heading", name="Data & model").wait_for()
        wait_idle(page)
        page.get_by_text("Files on this server").click()
        wait_idle(page)
        t = time.perf_counter()
        page.get_by_label("Reference .h5ad path").fill(str(sc_path))
        page.keyboard.press("Enter")
        wait_idle(page)
        page.get_by_label("Spatial .h5ad path or Visium folder").fill(str(st_path))
        page.keyboard.press("Enter")
        page.get_by_role("button", name="Check and load").click()
        page.get_by_text("Loaded:").wait_for(timeout=600_000)
        wait_idle(page, 600)
        load_s = time.perf_counter() - t
        page.get_by_text("Load a saved model folder").click()
        wait_idle(page)
        page.get_by_label("Saved model folder (on this server)").fill(str(model))
        page.keyboard.press("Enter")
        t = time.perf_counter()
        page.get_by_role("button", name="Load model").click()
        page.get_by_text("Model ready").wait_for(timeout=600_000)
        wait_idle(page, 600)
        model_s = time.perf_counter() - t
        spots = page.get_by_test_id("stMetric").filter(has_text="Spots").inner_text().split()[-1]
        out(f"large data: {spots} spots read and checked in {load_s:.1f}s; model folder loaded in {model_s:.1f}s")
        rows.append(["large: files read + checked (Data page)", f"{load_s:.1f} s", "n=1", ""])
        rows.append(["large: model folder loaded", f"{model_s:.1f} s", "n=1", ""])

        firsts, fulls = [], []
        for i in range(3):  # first visit, then two returns (cached spot table and pixels)
            page.get_by_test_id("stSidebarNav").get_by_text("Data & model", exact=True).click()
            wait_idle(page)
            t = time.perf_counter()
            page.get_by_test_id("stSidebarNav").get_by_text("Proportion maps", exact=True).click()
            page.locator(MAP).first.wait_for(state="visible", timeout=120_000)
            first = time.perf_counter() - t
            wait_idle(page, 300)
            full = time.perf_counter() - t
            out(f"proportion maps visit {i + 1}: first map {first:.2f}s, page finished {full:.2f}s")
            firsts.append(first)
            fulls.append(full)
            if i == 0:
                page.screenshot(path=str(tmp / "large_proportions.png"), full_page=True)
        rows.append([f"large ({spots} spots): click Proportion maps -> first map (first visit)",
                     f"{firsts[0]:.2f} s", f"returns: {', '.join(f'{v:.2f}' for v in firsts[1:])} s", "< 5 s"])
        rows.append(["large: whole Proportion maps page (maps, 8-type grid, bars), first visit",
                     f"{fulls[0]:.2f} s", f"returns: {', '.join(f'{v:.2f}' for v in fulls[1:])} s", ""])

        out(f"\nload before large slider runs: `{uptime()}`")
        t = time.perf_counter()
        page.get_by_test_id("stSidebarNav").get_by_text("Thresholds", exact=True).click()
        page.get_by_text("spots kept").first.wait_for(timeout=600_000)
        wait_idle(page, 600)
        out(f"thresholds page (automatic thresholds of every type + maps) in {time.perf_counter() - t:.1f}s")
        captions_ms, idle_ms = slider_moves(page, args.large_moves, out)
        if captions_ms:
            rows.append(median_row(f"large: slider move -> kept-spots caption ({spots} spots)",
                                   captions_ms, "ms", "< 1 s"))
            rows.append(median_row("large: slider move -> map redrawn (run finished)", idle_ms, "ms", "< 1 s"))

        out(f"\nload before large lasso runs: `{uptime()}`")
        page.get_by_test_id("stSidebarNav").get_by_text("Regions", exact=True).click()
        wait_idle(page, 300)
        panel_ms, lasso_idle = lassos(page, args.lassos, out)
        page.screenshot(path=str(tmp / "large_regions.png"), full_page=True)
        if panel_ms:
            rows.append(median_row(f"large: lasso -> composition panel updated ({spots} spots)",
                                   panel_ms, "ms", "< 2 s"))
            rows.append(median_row("large: lasso -> run finished", lasso_idle, "ms", ""))
        assert page.locator('[data-testid="stException"]').count() == 0
        ctx.close()
    finally:
        srv.stop()


if __name__ == "__main__":
    raise SystemExit(main())
