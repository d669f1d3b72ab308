"""What the AppTest modules share: a private cache and the test session's Dask cluster for the
app's jobs, waiting for those jobs, and reading what a page shows."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 240
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ENV = ("DESTVI_STUDIO_FAST", "DESTVI_STUDIO_CACHE", "DESTVI_STUDIO_SCHEDULER")


def app_environment(cache_dir: Path, scheduler_address: str):
    """Generator for a module fixture: tiny epochs, a private model cache and the test
    cluster for the app's jobs; restores the environment and closes the job managers."""
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ["DESTVI_STUDIO_FAST"] = "1"
    os.environ["DESTVI_STUDIO_CACHE"] = str(cache_dir)
    os.environ["DESTVI_STUDIO_SCHEDULER"] = scheduler_address
    yield
    from studio_ui import jobs_ui

    jobs_ui.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def wait_jobs(timeout: float = TIMEOUT) -> list:
    """Wait until no job of the app's server is queued or running; returns the jobs."""
    from studio_ui import jobs_ui

    end = time.monotonic() + timeout
    while time.monotonic() < end and any(j.active for j in jobs_ui.all_jobs()):
        time.sleep(0.2)
    jobs = jobs_ui.all_jobs()
    assert not any(j.active for j in jobs), [j.describe() for j in jobs]
    return jobs


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


def train_demo() -> AppTest:
    """A session where the demo was loaded and a tiny model trained as a job (and finished)."""
    at = new_app(autoload=False)
    at.run()
    at.button(key="use_demo").click().run()
    no_errors(at)
    at.button(key="train").click().run()
    no_errors(at)
    wait_jobs()
    at.run()
    no_errors(at)
    assert any("Model ready" in s.value for s in at.success)
    return at
