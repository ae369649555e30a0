"""Following each tracked link of a real message in headless Chromium lands on the
original URL: a real uvicorn server for the redirect, a real one for the targets."""

from __future__ import annotations

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.browser import live_app
from tests.support.services import free_port

pytestmark = pytest.mark.browser


class _Landing(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = f"<!doctype html><title>landed</title><p id=path>{self.path}</p>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def landing_site():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Landing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def redirect_server(settings, monkeypatch):
    from mailer.core.config import get_settings

    port = free_port()
    monkeypatch.setenv("NEWSLETTER_BASE_URL", f"http://127.0.0.1:{port}")
    get_settings.cache_clear()
    try:
        with live_app(port) as url:
            yield url, get_settings()
    finally:
        get_settings.cache_clear()


def test_each_tracked_link_lands_on_its_original_url_in_chromium(engine, smtp_sink, redirect_server, browser):
    from tests.mailer.web.public.test_tracking import hrefs, html_of, send_issue

    base, settings = redirect_server
    with landing_site() as target:
        send_issue(engine, settings, smtp_sink, clicks=True, target=target)
        (received, *_) = smtp_sink.messages
        tracked = list(dict.fromkeys(u for u in hrefs(html_of(received.content)) if u.startswith(f"{base}/r/")))
        assert len(tracked) == 2
        page = browser.new_page()
        landed = []
        for url in tracked:
            page.goto(url)
            page.wait_for_selector("#path")
            landed.append(page.url)
        assert landed == [f"{target}/one?a=1&b=2", f"{target}/two"]
