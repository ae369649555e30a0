"""Fixtures shared by the whole suite.

Database tests run on SQLite and on PostgreSQL (a fresh database per test, created and
dropped here); worker tests start real ``celery worker`` processes on the embedded
filesystem broker and on Redis. With ``CI=true`` a test whose service is missing fails
instead of skipping, so CI can never go green by skipping.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.services import (
    PG_ADMIN_URL,
    REDIS_DB,
    REDIS_URL,
    in_ci,
    need,
    postgres_available,
    redis_available,
)

# One metrics folder for this pytest process and every process it starts (they inherit
# the variable), so a scrape here sees what a worker process counted; tests compare
# counters before and after, never absolute values. Set here, at import: prometheus_client
# picks its storage when first imported, and test modules import it.
# Under pytest-xdist each test process gets its own folder (the controller's would be
# inherited by all of them): another process's campaign must not move this one's counters.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=f"newsletter-metrics-{os.environ['PYTEST_XDIST_WORKER']}-")
else:
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="newsletter-metrics-"))

pytest_plugins = ["tests.support.smtpd", "tests.support.workers", "tests.support.browser", "tests.support.drills",
                  "tests.support.dovecot", "tests.support.dns", "tests.support.receiver"]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'var' / 'newsletter.db'}"


def _pg_url(name: str) -> str:
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://')}/{name}"


@contextmanager
def _scratch_postgres(template: str | None = None):
    """A new PostgreSQL database (a copy of ``template`` if given), dropped afterwards."""
    if not postgres_available():
        need(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    import psycopg

    name = f"nl_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield name
    finally:
        from mailer.core.db import engine_for

        engine_for.cache_clear()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url():
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    with _scratch_postgres() as name:
        yield _pg_url(name)


# Migrating is done once per pytest process; each test then gets a copy of the migrated
# database (PostgreSQL's CREATE DATABASE ... TEMPLATE, a file copy for SQLite). The
# migrations themselves are tested from an empty database in tests/mailer/test_migrate.py.
@pytest.fixture(scope="session")
def _postgres_template():
    from mailer.migrate import upgrade

    with _scratch_postgres() as name:
        upgrade(_pg_url(name))
        yield name


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory) -> Path:
    from mailer.migrate import upgrade

    path = tmp_path_factory.mktemp("template") / "newsletter.db"
    upgrade(f"sqlite:///{path}")
    return path


@contextmanager
def migrated_database(request, kind: str):
    """The URL of a migrated database of ``kind`` ("sqlite" or "postgres") for the test
    of ``request``: a copy of the session's migrated template (the test's var/ file, or
    a new PostgreSQL database dropped on exit). What ``database_url`` and the worker
    stacks (tests/support/workers.py) use."""
    if kind == "sqlite":
        url = request.getfixturevalue("sqlite_url")
        target = Path(url.removeprefix("sqlite:///"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), target)
        yield url
    else:
        with _scratch_postgres(template=request.getfixturevalue("_postgres_template")) as name:
            yield _pg_url(name)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request):
    """Each test using this runs twice: on SQLite and on PostgreSQL, schema migrated."""
    with migrated_database(request, request.param) as url:
        yield url


@pytest.fixture
def engine(settings):
    """The one database fixture: the test's migrated database (SQLite, then PostgreSQL),
    the same one ``settings`` and every process a test starts point at."""
    from mailer.core.db import make_engine

    eng = make_engine(settings.database)
    yield eng
    eng.dispose()


@pytest.fixture
def redis_url() -> str:
    """A Redis database of its own for the test, emptied before and after."""
    if not redis_available():
        need(f"Redis is not reachable at {REDIS_URL}")
    import redis

    url = f"{REDIS_URL}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def settings(monkeypatch, tmp_path, database_url):
    """Settings for one test: its own var/ folder and database, outbox transport."""
    from mailer.core.config import get_settings

    for key in list(os.environ):
        if key.startswith("NEWSLETTER_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    monkeypatch.setenv("NEWSLETTER_FROM", "Weekly China AI <news@example.com>")
    monkeypatch.setenv("NEWSLETTER_BASE_URL", "https://news.example.com")
    # Pre-flight's SpamAssassin run takes ~2.5 s a start: on only where a test is about it
    # (tests/mailer/operations/test_preflight.py, tests/test_pipeline.py).
    monkeypatch.setenv("NEWSLETTER_SPAMASSASSIN", "off")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On CI a skipped test is a failed test, whatever made it skip: CI must never go
    green by skipping."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)  # fixtures look at it (a browser's screenshots on failure)
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped on CI (CI=true), which counts as a failure: {report.longrepr}"
