"""The `newsletter` command: help texts, exit codes, one-line errors for bad input."""

from __future__ import annotations

import pytest

from mailer.core.db import transaction
from mailer.models import Campaign, CampaignStatus, Issue
from tests.support.cli import assert_one_line_error, cli, cli_in_process, start_cli
from tests.support.example import ROOT as REPO
from tests.support.seed import count_rows

ISSUE = REPO / "examples" / "china-ai-weekly-2022-06-14.md"


def test_help_lists_the_commands():
    result = cli("--help")
    assert result.returncode == 0
    for command in ("db", "subscribers", "issue", "send", "campaign", "worker", "web", "demo"):
        assert command in result.stdout


def test_the_command_starts_without_celery():
    """A command that queues nothing does not pay for importing Celery and kombu (~0.1 s
    of every start): ``mailer.celeryapp`` imports them where an app is made."""
    import subprocess
    import sys

    probe = ("import sys, mailer.cli; "
             "print(sorted(m for m in ('celery', 'kombu', 'amqp') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.fixture
def ready(settings):
    # Set-up, in this process through the same ``main`` (two real processes here cost
    # ~3 s per test; ``db upgrade`` and ``subscribers add`` have real ones of their own).
    assert cli_in_process("db", "upgrade").returncode == 0
    assert cli_in_process("subscribers", "add", "ana@example.com", "--name", "Ana", "--list", "weekly",
                          "--confirmed").returncode == 0
    return settings


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # refused before the database is read
def test_send_bad_inputs_are_one_line_errors(ready, tmp_path):
    # One real process (the entry point, no traceback); the other cases in this one.
    assert_one_line_error(cli("send", ISSUE, "--list", "weekly", "--at", "2001-01-01T09:00Z"), "past")
    assert_one_line_error(cli_in_process("send", tmp_path / "missing.md", "--list", "weekly"), "missing.md")
    assert_one_line_error(cli_in_process("send", ISSUE, "--list", "weekly", "--at", "next tuesday"), "not a time")
    assert_one_line_error(cli_in_process("send", ISSUE, "--list", "weekly", "--at", "2099-01-01T09:00",
                                         "--tz", "Mars/Olympus"), "time zone")
    broken = tmp_path / "broken.md"
    broken.write_text("no front matter here\n")
    assert_one_line_error(cli_in_process("send", broken, "--list", "weekly"))


def test_bad_references_are_one_line_errors(ready, engine):
    """What is looked up in the database (both): a list, the latest campaign, a campaign.
    Each command has a real-process case of its own in tests/mailer/cli/test_campaign.py."""
    assert_one_line_error(cli_in_process("send", ISSUE, "--list", "nope"), "nope")
    assert_one_line_error(cli_in_process("campaign", "status"), "no campaigns")
    assert_one_line_error(cli_in_process("campaign", "pause", "999"), "999")
    assert count_rows(engine, "campaign") == 0 and count_rows(engine, "issue") == 0


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


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the error path, not the database
@pytest.mark.parametrize("args", [
    ["campaign", "pause", "abc"],  # a usage error (typer's), mapped by main
    ["subscribers", "edit", "ann@example.com", "--attr", "country"],  # InvalidInput before the database
    ["segments", "show", "missing"],  # NotFound after a query
])
def test_in_process_runs_take_the_same_error_path_as_a_real_process(settings, args):
    """What lets the bad-input tests run most of their cases in this process
    (``cli_in_process``): the same exit code, the same one line, the same stdout."""
    real, here = cli(*args), cli_in_process(*args)
    assert (here.returncode, here.stdout, here.stderr) == (real.returncode, real.stdout, real.stderr)
    assert_one_line_error(here)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # refused before the database is read
def test_bad_worker_options_are_refused(settings):
    # Both real processes: in this one, a check that went missing would start a worker.
    assert_one_line_error(cli("worker", "--concurrency", "0"), "--concurrency")
    assert_one_line_error(cli("worker", "-c", "-3"), "--concurrency")


def test_send_with_the_broker_down_says_so_in_one_line(ready, engine, monkeypatch):
    from tests.support.services import free_port

    monkeypatch.setenv("NEWSLETTER_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    line = assert_one_line_error(cli("send", ISSUE, "--list", "weekly"), "the broker does not answer",
                                 "NEWSLETTER_BROKER_URL")
    assert "campaign 1 is saved" in line  # committed: beat's sweep queues its tasks later
    with transaction(engine) as s:
        assert s.get(Campaign, 1).status == CampaignStatus.sending


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the command is pointed at no database
def test_the_database_gone_is_one_line(ready, monkeypatch):
    from tests.support.services import free_port

    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    assert_one_line_error(cli("campaign", "list"), "NEWSLETTER_DATABASE_URL", "cannot connect")


def test_two_sends_of_one_issue_at_once_make_one_campaign(ready, engine):
    procs = [start_cli("send", ISSUE, "--list", "weekly") for _ in range(2)]
    results = [(p.wait(60), *p.communicate()) for p in procs]
    assert sorted(code for code, _, _ in results) == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    assert len(refused.strip().splitlines()) == 1 and "is already sending; nothing new was started" in refused
    with transaction(engine) as s:
        assert s.query(Campaign).count() == 1 and s.query(Issue).count() == 1
