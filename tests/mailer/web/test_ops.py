"""``/healthz`` and ``/readyz`` against real services that go away and come back: a
private Redis server, a private PostgreSQL cluster, an aiosmtpd relay, and servers that
accept a connection and never answer."""

from __future__ import annotations

import socket

import pytest
from fastapi.testclient import TestClient

from mailer.core.config import get_settings
from tests.support.drills import PostgresCluster
from tests.support.smtpd import SmtpSink, stop_quietly
from tests.support.web import create


@pytest.fixture
def silent_server():
    """A port that takes TCP connections into its backlog and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def use(monkeypatch, **env: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(f"NEWSLETTER_{key}", value)
    get_settings.cache_clear()


def ready(client: TestClient):
    r = client.get("/readyz")
    assert r.headers["cache-control"] == "no-store"
    return r.status_code, r.json()


def test_healthz_answers_without_any_service(monkeypatch, tmp_path, silent_server):
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path))
    use(monkeypatch, DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{silent_server}/x")
    with TestClient(create()) as client:
        r = client.get("/healthz")
    assert (r.status_code, r.text) == (200, "ok")


def test_readyz_follows_the_broker_and_the_relay_going_away_and_coming_back(settings, monkeypatch, private_redis):
    sink = SmtpSink().start()
    try:
        use(monkeypatch, BROKER_URL=private_redis.url, SMTP_URL=sink.url, HEALTH_TIMEOUT="1")
        with TestClient(create()) as client:
            assert ready(client) == (200, {"ready": True,
                                           "checks": {"database": "ok", "broker": "ok", "relay": "ok"}})

            private_redis.stop()
            status, body = ready(client)
            assert status == 503
            assert body["checks"]["broker"] != "ok" and body["checks"]["database"] == "ok"
            assert body["detail"].startswith("not ready: broker: ")
            assert "relay" not in body["detail"]

            private_redis.start()  # the same port
            assert ready(client)[0] == 200

            sink.stop()
            status, body = ready(client)
            assert status == 503
            assert body["detail"].startswith(f"not ready: relay: cannot reach SMTP relay 127.0.0.1:{sink.port}")

            sink.start()
            assert ready(client)[0] == 200
        assert len(sink.messages) == 0  # a check sends nothing
    finally:
        stop_quietly(sink)


def test_readyz_without_a_relay_setting_asks_only_the_database_and_the_broker(settings):
    with TestClient(create()) as client:
        status, body = ready(client)
    assert (status, set(body["checks"])) == (200, {"database", "broker"})


@pytest.mark.timeout(300)
def test_readyz_follows_postgresql_stopped_and_started(monkeypatch, tmp_path):
    cluster = PostgresCluster.create()
    try:
        monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path))
        use(monkeypatch, DATABASE_URL=cluster.new_database(), HEALTH_TIMEOUT="1")
        with TestClient(create()) as client:
            assert ready(client)[0] == 200
            cluster.stop()
            status, body = ready(client)
            assert status == 503
            assert body["detail"].startswith("not ready: database: ")
            assert body["checks"]["broker"] == "ok"
            cluster.start()
            assert ready(client)[0] == 200
    finally:
        cluster.drop()
        get_settings.cache_clear()


def test_readyz_gives_up_on_services_that_never_answer(settings, monkeypatch, silent_server):
    """Servers that accept the connection and stay silent: only the timeouts end the wait."""
    use(monkeypatch, DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{silent_server}/test",
        BROKER_URL=f"redis://127.0.0.1:{silent_server}/0", SMTP_URL=f"smtp://127.0.0.1:{silent_server}",
        HEALTH_TIMEOUT="1")
    with TestClient(create()) as client:
        status, body = ready(client)
    assert status == 503
    assert [s for s, detail in body["checks"].items() if detail != "ok"] == ["database", "broker", "relay"]
    for service in ("database", "broker", "relay"):
        assert f"{service}: " in body["detail"]


def test_readyz_names_a_database_nobody_listens_on(settings, monkeypatch):
    from tests.support.services import free_port

    use(monkeypatch, DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test")
    with TestClient(create()) as client:
        status, body = ready(client)
    assert status == 503
    assert body["detail"].startswith("not ready: database: ") and "refused" in body["detail"].lower()


def test_readyz_names_a_missing_sqlite_database_and_creates_none(monkeypatch, tmp_path):
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path))
    use(monkeypatch, DATABASE_URL=f"sqlite:///{tmp_path / 'nothing-here.db'}")
    with TestClient(create()) as client:
        status, body = ready(client)
    assert status == 503 and body["detail"].startswith("not ready: database: ")
    assert not (tmp_path / "nothing-here.db").exists()
