"""The `newsletter` command: help texts, exit codes, one-line errors for bad input."""

from __future__ import annotations

import pytest

from tests.support.cli import assert_one_line_error, cli
from tests.support.example import ROOT as REPO

ISSUE = REPO / "examples" / "china-ai-weekly-2022-06-14.md"


def test_help_lists_the_commands():
    result = cli("--help")
    assert result.returncode == 0
    for command in ("db", "subscribers", "issue", "send", "campaign", "worker", "web", "demo"):
        assert command in result.stdout


@pytest.fixture
def ready(settings):
    assert cli("db", "upgrade").returncode == 0
    assert cli("subscribers", "add", "ana@example.com", "--name", "Ana", "--list", "weekly", "--confirmed").returncode == 0
    return settings


def test_send_bad_inputs_are_one_line_errors(ready, tmp_path):
    assert_one_line_error(cli("send", ISSUE, "--list", "nope"), "nope")
    assert_one_line_error(cli("send", tmp_path / "missing.md", "--list", "weekly"), "missing.md")
    assert_one_line_error(cli("send", ISSUE, "--list", "weekly", "--at", "2001-01-01T09:00Z"), "past")
    assert_one_line_error(cli("send", ISSUE, "--list", "weekly", "--at", "next tuesday"), "not a time")
    assert_one_line_error(cli("send", ISSUE, "--list", "weekly", "--at", "2099-01-01T09:00", "--tz", "Mars/Olympus"),
                          "time zone")
    broken = tmp_path / "broken.md"
    broken.write_text("no front matter here\n")
    assert_one_line_error(cli("send", broken, "--list", "weekly"))
    assert_one_line_error(cli("campaign", "status"), "no campaigns")
    assert_one_line_error(cli("campaign", "pause", "999"), "999")


def test_send_at_schedules_and_twice_is_the_same_campaign(ready):
    first = cli("send", ISSUE, "--list", "weekly", "--at", "2099-03-01 09:00", "--tz", "Asia/Shanghai")
    assert first.returncode == 0, first.stderr
    assert "scheduled for 2099-03-01T01:00:00+00:00" in first.stdout
    again = cli("send", ISSUE, "--list", "weekly", "--at", "2099-03-01 09:00", "--tz", "Asia/Shanghai")
    assert again.returncode == 0 and "campaign 1 " in again.stdout
    status = cli("campaign", "status", "1", "--json")
    assert status.returncode == 0 and '"status": "scheduled"' in status.stdout


def test_a_sent_issue_is_in_the_archive_under_its_own_date(ready):
    from fastapi.testclient import TestClient

    from mailer.web.app import create_app

    sent = cli("send", ISSUE, "--list", "weekly")
    assert sent.returncode == 0, sent.stderr
    page = TestClient(create_app()).get("/issues/")
    assert page.status_code == 200
    assert "Megvii Chief Scientist" in page.text and "2022-06-14" in page.text


@pytest.mark.parametrize("args, fragment", [
    (["campaign", "pause", "abc"], "Invalid value"),
    (["send"], "Missing argument"),
    (["bogus"], "No such command"),
    (["db", "upgrade", "--bogus"], "No such option"),
])
def test_usage_errors_are_one_line_with_exit_2(args, fragment):
    assert_one_line_error(cli(*args), fragment)
