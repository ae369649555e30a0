"""`newsletter admin`: users and API tokens made on the command line work on the API."""

from __future__ import annotations

from fastapi.testclient import TestClient

from mailer.web.app import create_app
from tests.support.cli import assert_one_line_error, cli, cli_in_process


def test_token_from_the_cli_opens_the_api_and_bad_input_is_one_line(settings):
    assert cli("db", "upgrade").returncode == 0
    made = cli("admin", "create-user", "editor@example.com", "--password-stdin", stdin="a long enough passphrase\n")
    assert made.returncode == 0, made.stderr
    assert_one_line_error(cli("admin", "create-user", "editor@example.com", "--password-stdin",
                              stdin="another long passphrase\n"))
    assert_one_line_error(cli_in_process("admin", "create-user", "x@example.com", "--password-stdin", stdin="short\n"))
    token = cli("admin", "create-token", "deploy")
    assert token.returncode == 0, token.stderr
    client = TestClient(create_app())
    assert client.get("/api/admin/issues").status_code == 401
    assert client.get("/api/admin/issues", headers={"Authorization": f"Bearer {token.stdout.strip()}"}).status_code == 200
    assert_one_line_error(cli("admin", "revoke-token", "999"), "999")
