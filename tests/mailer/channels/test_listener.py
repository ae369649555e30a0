"""``newsletter inbound serve``: a real listener process, spoken to over LMTP and SMTP by
Python's own clients. It takes mail for the bounce domain only, records each message
before it answers, and says "try again" (451) when it could not."""

from __future__ import annotations

import os
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailer.channels.listener import InboundServer
from mailer.core.config import load_settings
from tests.support.inbound import corpus, sent_campaign, statuses, suppressed
from tests.support.services import free_port

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def signed(settings, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "s3cret")  # what tests.support.inbound signs with
    monkeypatch.setenv("NEWSLETTER_INBOUND_DOMAINS", "fbl.example.com")
    return settings


@pytest.fixture
def listener(signed, tmp_path):
    """Start ``newsletter inbound serve`` (LMTP, or ``--smtp``) on a free port; stopped after."""
    started = []

    def start(*extra: str) -> int:
        port = free_port()
        log = open(tmp_path / f"serve-{port}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "mailer.cli", "inbound", "serve", "--port", str(port), *extra],
                                cwd=REPO, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
        started.append((proc, log))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / f"serve-{port}.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the listener did not start")

    yield start
    for proc, log in started:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_a_dsn_through_the_lmtp_listener_bounces_its_delivery(engine, listener):
    ann = sent_campaign(engine, ["ann.reader@example.org"])["ann.reader@example.org"]
    port = listener()
    dsn = corpus("postfix-dsn-user-unknown", crlf=True)
    with smtplib.LMTP("127.0.0.1", port) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("", ["someone@elsewhere.example"], dsn)
        code, reply = refused.value.recipients["someone@elsewhere.example"]
        assert code == 550 and b"5.7.1" in reply
        assert client.sendmail("", [ann.verp()], dsn) == {}
    assert statuses(engine) == {"ann.reader@example.org": "bounced"}
    assert suppressed(engine, "ann.reader@example.org")


def test_lmtp_answers_once_per_recipient(engine, listener):
    """RFC 2033 §4.2: after DATA, one reply per accepted recipient, in order."""
    sent = sent_campaign(engine, ["eve.annoyed@example.net"])
    port = listener()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        f = sock.makefile("rwb")

        def reply() -> bytes:
            lines = [f.readline()]
            while lines[-1][3:4] == b"-":
                lines.append(f.readline())
            return b"".join(lines)

        def say(line: bytes) -> bytes:
            f.write(line + b"\r\n")
            f.flush()
            return reply()

        assert reply().startswith(b"220")
        assert say(b"LHLO test.example").startswith(b"250")
        assert say(b"MAIL FROM:<>").startswith(b"250")
        assert say(b"RCPT TO:<fbl@fbl.example.com>").startswith(b"250")
        assert say(b"RCPT TO:<abuse@example.com>").startswith(b"250")
        assert say(b"RCPT TO:<a@not-ours.example>").startswith(b"550")
        assert say(b"DATA").startswith(b"354")
        f.write(corpus("arf-abuse", crlf=True) + b".\r\n")
        f.flush()
        assert [reply()[:3], reply()[:3]] == [b"250", b"250"]
        assert say(b"QUIT").startswith(b"221")
    assert statuses(engine) == {"eve.annoyed@example.net": "complained"}
    assert sent["eve.annoyed@example.net"].delivery_id


def test_the_smtp_listener_for_the_mx(engine, listener):
    uma = sent_campaign(engine, ["uma.nobody@example.net"])["uma.nobody@example.net"]
    port = listener("--smtp")
    with smtplib.SMTP("127.0.0.1", port) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("", ["bounces+1-0123456789ab@other.example"], b"Subject: x\r\n\r\nx\r\n")
        assert client.sendmail("", [uma.verp()], corpus("qmail-no-mailbox", crlf=True)) == {}
        # Not understood, still taken (250) and kept as unprocessed: nothing dropped.
        assert client.sendmail("", ["postmaster@example.com"], corpus("human-reply", crlf=True)) == {}
    assert statuses(engine) == {"uma.nobody@example.net": "bounced"}
    from mailer.core.db import transaction
    from mailer.operations.inbound import kept

    with transaction(engine) as s:
        assert [(k["channel"], k["kind"]) for k in kept(s)] == [("smtp", "unknown")]


def test_451_when_the_message_could_not_be_recorded(tmp_path):
    """The database does not answer: the MTA is told to try again, and keeps the message."""
    down = load_settings(database_url="postgresql+psycopg://nobody@127.0.0.1:9/none", var_dir=tmp_path,
                         from_="News <news@example.com>")
    port = free_port()
    server = InboundServer(down, host="127.0.0.1", port=port, lmtp=False)
    server.start()
    try:
        with smtplib.SMTP("127.0.0.1", port) as client:
            with pytest.raises(smtplib.SMTPDataError) as failed:
                client.sendmail("", ["bounces+1-0123456789ab@example.com"], corpus("qmail-no-mailbox", crlf=True))
        assert failed.value.smtp_code == 451
    finally:
        server.stop()
