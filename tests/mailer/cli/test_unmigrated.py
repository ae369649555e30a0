"""A database nobody migrated (or an older version did): one line naming the cure, from
the CLI and from the web app, never a traceback; nothing is created behind the user's back."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect

from tests.conftest import _pg_url, _scratch_postgres
from tests.support.cli import assert_one_line_error, cli


@pytest.fixture(params=["sqlite", "postgres"])
def unmigrated(request, tmp_path, monkeypatch):
    """An empty database of each kind, and the environment pointing at it."""
    from mailer.core.config import get_settings

    def use(url: str):
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", url)
        monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path / "var"))
        get_settings.cache_clear()
        return url

    if request.param == "sqlite":
        yield use(f"sqlite:///{tmp_path / 'empty.db'}")
    else:
        with _scratch_postgres() as name:
            yield use(_pg_url(name))
    get_settings.cache_clear()


def _tables(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_a_command_on_an_unmigrated_database_names_db_upgrade(unmigrated):
    for args in (["campaign", "list"], ["subscribers", "add", "ann@example.com"]):
        assert_one_line_error(cli(*args), "not set up for this version", "newsletter db upgrade",
                              "NEWSLETTER_DATABASE_URL")
    assert _tables(unmigrated) == []  # nothing made behind the user's back
    assert cli("db", "upgrade").returncode == 0
    assert cli("subscribers", "add", "ann@example.com").returncode == 0


def test_the_web_app_on_an_unmigrated_database_is_503_with_the_cure(unmigrated):
    from fastapi.testclient import TestClient

    from mailer.web.app import create_app

    client = TestClient(create_app(), raise_server_exceptions=False)
    page = client.get("/issues/", headers={"accept": "text/html"})
    assert page.status_code == 503 and "newsletter db upgrade" in page.text
    api = client.get("/api/admin/campaigns", headers={"authorization": "Bearer not-checked-yet"})
    assert api.status_code == 503 and "newsletter db upgrade" in api.json()["detail"], api.text
