"""A real headless Chromium (Debian's, driven by Playwright; never a downloaded browser)
and a real uvicorn server for it to talk to. Both are stopped by their fixtures."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import chromium_path, free_port, need

# Without the background-networking flags Chromium keeps trying to reach Google's hosts,
# which this machine's closed network refuses. IsolateSandboxedIframes off: Chromium 156
# puts a sandbox="" iframe (the editor's preview) in a process of its own, which learns
# its size from the page asynchronously. On CI (not reproduced here) the preview's text
# stayed "hidden" to Playwright for 15 s, most likely that frame without its size yet.
# In the page's process the frame is laid out with the page.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic",
                 "--disable-features=IsolateSandboxedIframes"]


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def browser(request):
    """Headless Chromium. When the test fails, every page it left open is saved as a
    screenshot in test-artifacts/ (named after the test) to show what the browser saw."""
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("playwright is not installed (pip install -e .[test])")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                _screenshots(launched, request.node.name)
        finally:
            launched.close()


def _screenshots(launched, test_name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in test_name)
    for i, page in enumerate(p for context in launched.contexts for p in context.pages):
        try:
            page.screenshot(path=str(ARTIFACTS / f"failed-{safe}-{i}.png"), full_page=True)
        except Exception:  # a crashed page: nothing to show
            pass


@contextlib.contextmanager
def live_app(port: int | None = None, timeout: float = 15) -> Iterator[str]:
    """The FastAPI app served by uvicorn in a thread on a free port; yields its URL."""
    import uvicorn

    from mailer.web.app import create_app

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
