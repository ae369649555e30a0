"""Drive one editor action through each of the three adapters: the ``newsletter``
command (a real process), the admin API and the dashboard (the real app). Each call
gives back an ``Outcome``: did it succeed, and if not, the one-line reason the adapter
showed, so a test can check that all three agree."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi.testclient import TestClient

from tests.support.cli import cli
from tests.support.web import csrf_of

ADAPTERS = ("cli", "api", "dashboard")
_ALERT = re.compile(r'<p class="error" role="alert" id="error">(.*?)</p>', re.S)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    error: str = ""  # the refusal as the user saw it (CLI: stderr without "error: ")
    status: int = 0  # exit code or HTTP status


def from_cli(*args) -> Outcome:
    result = cli(*args)
    if result.returncode == 0:
        return Outcome(True, status=0)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return Outcome(False, lines[0].removeprefix("error: "), result.returncode)


def from_api(response) -> Outcome:
    if response.status_code < 400:
        return Outcome(True, status=response.status_code)
    return Outcome(False, response.json()["detail"], response.status_code)


def from_page(response) -> Outcome:
    if response.status_code < 400:
        return Outcome(True, status=response.status_code)
    found = _ALERT.search(response.text)
    assert found, response.text[-2000:]
    return Outcome(False, html.unescape(found.group(1)), response.status_code)


class Adapters:
    """The three ways in, over the same database."""

    def __init__(self, api: TestClient, dashboard: TestClient, folder: Path):
        self.api, self.dashboard, self.folder = api, dashboard, folder
        self._csrf: str | None = None

    @property
    def csrf(self) -> str:
        if self._csrf is None:
            self._csrf = csrf_of(self.dashboard.get("/admin").text)
        return self._csrf

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path

    def post_page(self, path: str, **fields) -> Outcome:
        return from_page(self.dashboard.post(path, data={"csrf_token": self.csrf, **fields}, follow_redirects=False))

    def upload_page(self, path: str, files: dict, **fields) -> Outcome:
        return from_page(self.dashboard.post(path, data={"csrf_token": self.csrf, **fields}, files=files,
                                             follow_redirects=False))

    def each(self, run: dict[str, Callable[[], Outcome]]) -> dict[str, Outcome]:
        assert set(run) == set(ADAPTERS)
        return {name: run[name]() for name in ADAPTERS}


def same_refusal(outcomes: dict[str, Outcome], *, normalise: Callable[[str, str], str] = lambda a, e: e) -> str:
    """Every adapter refused, with the same one-line reason (after ``normalise(adapter,
    error)`` takes out what differs by design, such as the id of each one's campaign).
    CLI: exit code 2; HTTP: the same 4xx."""
    assert all(not o.ok for o in outcomes.values()), outcomes
    reasons = {name: normalise(name, o.error) for name, o in outcomes.items()}
    assert len(set(reasons.values())) == 1, reasons
    assert outcomes["cli"].status == 2, outcomes
    assert outcomes["api"].status == outcomes["dashboard"].status and 400 <= outcomes["api"].status < 500, outcomes
    return reasons["cli"]


def all_ok(outcomes: dict[str, Outcome]) -> None:
    assert all(o.ok for o in outcomes.values()), outcomes
