"""``newsletter webhooks``: add (the secret printed once), list, rotate, disable,
remove, the delivery log; bad input is one line and exit 2, and changes nothing."""

from __future__ import annotations

import json
import time

import pytest
from standardwebhooks.webhooks import Webhook

from mailer import hooks
from tests.support.cli import assert_one_line_error, cli, cli_in_process
from tests.support.seed import count_rows


@pytest.fixture
def database(settings):
    return settings


def test_add_list_rotate_disable_remove_and_the_log(engine, database):
    added = cli("webhooks", "add", "https://crm.example.com/hooks", "--event", "subscribed", "-e", "campaign.finished",
                "--description", "the CRM")
    assert added.returncode == 0, added.stderr
    assert "endpoint 1: https://crm.example.com/hooks (subscriber.subscribed, campaign.finished)" in added.stdout
    secret = added.stdout.split("secret: ")[1].split()[0]
    assert secret.startswith("whsec_")
    listed = json.loads(cli("webhooks", "list", "--json").stdout)
    assert listed == [{"id": 1, "url": "https://crm.example.com/hooks", "description": "the CRM", "enabled": True,
                       "events": ["subscriber.subscribed", "campaign.finished"], "created_at": listed[0]["created_at"],
                       "previous_secret_valid_until": None}]
    assert "secret" not in cli("webhooks", "list").stdout

    assert cli("subscribers", "add", "ann@example.com", "--list", "weekly").returncode == 0
    log = json.loads(cli("webhooks", "deliveries", "--json").stdout)
    assert [(d["event"], d["status"], d["attempts"]) for d in log] == [("subscriber.subscribed", "pending", 0)]
    assert json.loads(log[0]["payload"])["data"]["subscriber"]["email"] == "ann@example.com"

    rotated = cli("webhooks", "rotate-secret", "1", "--grace-hours", "2")
    assert rotated.returncode == 0 and "the previous one signs too until" in rotated.stdout
    new = rotated.stdout.split("new secret: ")[1].split()[0]
    assert new != secret
    # The endpoint now signs with both (mailer.hooks.signing_secrets): each verifies alone.
    headers = hooks.headers([new, secret], message_id="msg_x", timestamp=int(time.time()), body=b"{}")
    assert Webhook(secret).verify(b"{}", headers) == {} and Webhook(new).verify(b"{}", headers) == {}

    assert cli("webhooks", "disable", "1").stdout.strip() == "endpoint 1 disabled"
    assert "off" in cli("webhooks", "list").stdout
    assert cli("webhooks", "remove", "1").stdout.strip() == "endpoint 1 removed"
    assert count_rows(engine, "webhook_endpoint") == 0 and count_rows(engine, "webhook_delivery") == 0


# Refused before anything is read or written (the URL, the event types, a status name
# are checked first): one database. One real process per command, the rest in this
# process (``cli_in_process``: the same ``main``).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("run, args, fragment", [
    (cli, ["add", "ftp://crm.example.com/x", "--event", "subscribed"], "http:// or https://"),
    (cli_in_process, ["add", "crm.example.com/x", "--event", "subscribed"], "http:// or https://"),
    (cli_in_process, ["add", "https://crm.example.com/x", "--event", "opened"], "unknown event type 'opened'"),
    (cli_in_process, ["add", "https://crm.example.com/x"], "--event"),
    (cli, ["deliveries", "--status", "lost"], "unknown status 'lost'"),
], ids=["ftp-url", "no-scheme", "unknown-event", "no-event", "unknown-status"])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(engine, database, run, args, fragment):
    assert_one_line_error(run("webhooks", *args), fragment)
    assert count_rows(engine, "webhook_endpoint") == 0


# A missing endpoint is a lookup: both databases, real processes.
@pytest.mark.parametrize("args, fragment", [
    (["remove", "7"], "no webhook endpoint 7"),
    (["rotate-secret", "7"], "no webhook endpoint 7"),
])
def test_a_missing_endpoint_is_one_line_exit_2_and_changes_nothing(engine, database, args, fragment):
    assert_one_line_error(cli("webhooks", *args), fragment)
    assert count_rows(engine, "webhook_endpoint") == 0
