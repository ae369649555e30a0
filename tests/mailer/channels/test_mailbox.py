"""``newsletter inbound poll`` against a real Dovecot (started by the ``dovecot``
fixture): a bounce in an IMAP or POP3 mailbox ends on its delivery, handled messages
are marked (IMAP \\Seen, or deleted) or deleted (POP3), and a message that could not be
recorded is left for the next poll."""

from __future__ import annotations

import os
import subprocess

import pytest

from mailer.channels.mailbox import MailboxError, parse_mailbox, poll
from mailer.core.errors import InvalidInput
from mailer.reports import Channel
from tests.support.cli import cli
from tests.support.inbound import corpus, sent_campaign, statuses, suppressed

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def signed(settings, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "s3cret")  # what tests.support.inbound signs with
    return settings


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    r = cli("inbound", "poll", *args, stdin=b"", env=env)
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())


def test_a_bounce_in_an_imap_mailbox_bounces_its_delivery(engine, signed, dovecot):
    sent = sent_campaign(engine, ["ann.reader@example.org", "uma.nobody@example.net"])
    ann = sent["ann.reader@example.org"]
    dovecot.append(corpus("postfix-dsn-user-unknown", crlf=True).replace(b"bounces@example.com", ann.verp().encode()),
                   corpus("qmail-no-mailbox", crlf=True), corpus("human-reply", crlf=True))
    result = run(dovecot.url("imap"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": 3 handled"), result.stdout
    assert "s3cret" not in result.stdout + result.stderr, "never the password"
    assert statuses(engine) == {"ann.reader@example.org": "bounced", "uma.nobody@example.net": "bounced"}
    assert suppressed(engine, "uma.nobody@example.net")
    assert all("\\Seen" in f for f in dovecot.flags()) and dovecot.count() == 3
    # Handled messages are not read again.
    again = run(dovecot.url("imap"))
    assert again.returncode == 0 and again.stdout.strip().endswith(": 0 handled")
    listed = cli("inbound", "list", "--json", stdin=b"")
    assert b'"channel": "imap"' in listed.stdout and b'"kind": "unknown"' in listed.stdout


def test_imap_with_delete_and_a_folder_from_the_setting(engine, signed, dovecot, monkeypatch):
    sent_campaign(engine, ["wes.absent@example.org"])
    dovecot.append(corpus("exim-user-unknown", crlf=True), folder="Bounces Inbox")
    env = dict(os.environ, NEWSLETTER_BOUNCE_MAILBOX=dovecot.url("imap", "Bounces Inbox"))
    result = run("--delete", env=env)
    assert result.returncode == 0 and result.stdout.strip().endswith(": 1 handled"), result.stderr
    assert dovecot.count("Bounces Inbox") == 0
    assert statuses(engine) == {"wes.absent@example.org": "bounced"}


def test_a_bounce_in_a_pop3_mailbox_is_recorded_then_deleted(engine, signed, dovecot):
    sent_campaign(engine, ["yul.deleted@yahoo.example"])
    dovecot.append(corpus("yahoo-no-account", crlf=True), corpus("out-of-office", crlf=True))
    result = run(dovecot.url("pop3"))
    assert result.returncode == 0 and result.stdout.strip().endswith(": 2 handled"), result.stderr
    assert statuses(engine) == {"yul.deleted@yahoo.example": "bounced"}
    assert dovecot.count() == 0


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_message_that_could_not_be_recorded_is_left_for_the_next_poll(dovecot, protocol):
    dovecot.append(corpus("qmail-no-mailbox", crlf=True), corpus("exim-user-unknown", crlf=True))
    seen = []

    def failing(raw: bytes, channel: Channel) -> None:
        seen.append(channel)
        if len(seen) == 2:
            raise RuntimeError("database down")

    result = poll(parse_mailbox(dovecot.url(protocol)), failing)
    assert (result.handled, result.left, result.error) == (1, 1, "database down")
    assert dovecot.count() == (2 if protocol == "imap" else 1)
    if protocol == "imap":
        assert ["\\Seen" in f for f in dovecot.flags()] == [True, False]
    again = poll(parse_mailbox(dovecot.url(protocol)), lambda raw, channel: None)
    assert (again.handled, again.left) == (1, 0)


def test_a_wrong_password_or_a_bad_url_is_one_line(dovecot, settings):
    with pytest.raises(MailboxError, match="imap://bounces@127.0.0.1"):
        poll(parse_mailbox(dovecot.url("imap", password="wrong")), lambda raw, channel: None)
    wrong = run(dovecot.url("pop3", password="wrong"))
    assert wrong.returncode == 1 and len(wrong.stderr.strip().splitlines()) == 1 and "Traceback" not in wrong.stderr
    for bad in ("http://x/", "imaps://host-without-user/", "imap://u@:99999/"):
        with pytest.raises(InvalidInput):
            parse_mailbox(bad)
    missing = run()
    assert missing.returncode == 2 and "not a mailbox URL" in missing.stderr
