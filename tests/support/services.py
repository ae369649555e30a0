"""Where the real services are, and what to do when one is missing."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

PG_ADMIN_URL = os.environ.get("NEWSLETTER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("NEWSLETTER_TEST_REDIS", "redis://127.0.0.1:6379")


def _xdist_index() -> int:
    """0 for the first (or only) pytest process, 1 for pytest-xdist's gw1, and so on."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0


# The Redis database the tests empty and use: another one lets two suites share a server,
# and each xdist process takes the next one, so parallel tests never empty each other's.
REDIS_DB = int(os.environ.get("NEWSLETTER_TEST_REDIS_DB", "9")) + _xdist_index()
if REDIS_DB > 15:
    raise RuntimeError(f"Redis database {REDIS_DB} does not exist (0-15): fewer xdist workers or a lower NEWSLETTER_TEST_REDIS_DB")
CHROMIUM = os.environ.get("NEWSLETTER_TEST_CHROMIUM", "/usr/bin/chromium")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def need(reason: str):
    """Skip a test whose service is missing, except on CI, where that is a failure."""
    if in_ci():
        pytest.fail(f"required on CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def postgres_available() -> bool:
    return _port_open("127.0.0.1", 5432)


def redis_available() -> bool:
    return _port_open("127.0.0.1", 6379)


def chromium_path() -> str:
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        need(f"headless Chromium not found at {CHROMIUM}")
    return CHROMIUM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
