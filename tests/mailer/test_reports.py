"""Reading what comes back (pure code, no database): the corpus of bounces in
``bounce_corpus/`` (one or more per MTA family, DSN variants, complaints, auto-replies,
garbage), each with the recipients and verdicts it must give, and the verdicts
themselves."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mailer.reports import InboundKind, Verdict, judge, normalise_address, read_message

CORPUS = Path(__file__).parent / "bounce_corpus"
EXPECTED = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))


def test_every_message_of_the_corpus_has_its_expectations_and_back():
    assert {p.stem for p in CORPUS.glob("*.eml")} == set(EXPECTED)


@pytest.mark.parametrize("line_ending", ["lf", "crlf"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_corpus_reads_as_expected(name, line_ending):
    raw = (CORPUS / f"{name}.eml").read_bytes()
    if line_ending == "crlf":
        raw = raw.replace(b"\n", b"\r\n")
    expected = EXPECTED[name]
    report = read_message(raw)
    assert report.kind == expected["kind"], (name, report)
    got = {r.address: [str(r.verdict), r.status] for r in report.recipients}
    want = {address: [verdict, status] for address, (verdict, status) in expected["recipients"].items()}
    assert got == want, (name, report.recipients)
    if report.kind == InboundKind.unknown:
        assert report.reason


def test_no_policy_rejection_in_the_corpus_is_read_as_a_bad_address():
    """Every 5.7.x status of the corpus is a policy verdict, and there are several."""
    policy = 0
    for name in EXPECTED:
        for r in read_message((CORPUS / f"{name}.eml").read_bytes()).recipients:
            if r.status.startswith(("5.7.", "4.7.")):
                assert r.verdict == Verdict.policy, (name, r)
                policy += 1
    assert policy >= 5


def test_every_mta_family_of_the_issue_is_in_the_corpus():
    formats = " ".join(e["format"] for e in EXPECTED.values()).lower()
    for family in ("qmail", "exchange", "yahoo", "aol", "groupwise", "postfix", "sendmail", "exim", "dsn",
                   "delay", "arf", "auto-reply"):
        assert family in formats, family


@pytest.mark.parametrize("kwargs, status, verdict", [
    ({"status": "5.1.1", "diagnostic": "550 5.1.1 user unknown"}, "5.1.1", Verdict.permanent),
    ({"status": "5.0.0", "diagnostic": "550 User unknown"}, "5.0.0", Verdict.permanent),
    ({"status": "5.0.0", "diagnostic": "550 5.1.1 <a@b>: no such user"}, "5.1.1", Verdict.permanent),
    ({"status": "5.0.0", "diagnostic": "554 transaction failed"}, "5.0.0", Verdict.transient),
    ({"status": "5.7.1", "diagnostic": "550 5.7.1 user unknown"}, "5.7.1", Verdict.policy),
    ({"status": "5.7.26", "diagnostic": "550 5.7.26 unauthenticated email is not accepted"}, "5.7.26",
     Verdict.policy),
    ({"status": "4.7.0", "diagnostic": "421 4.7.0 try again later, rate limited"}, "4.7.0", Verdict.policy),
    ({"status": "5.2.2", "diagnostic": "552 5.2.2 mailbox full"}, "5.2.2", Verdict.transient),
    ({"status": "4.4.1", "diagnostic": "connection timed out"}, "4.4.1", Verdict.transient),
    ({"status": "2.0.0", "diagnostic": "250 ok"}, "2.0.0", Verdict.ignore),
    ({"diagnostic": "554 delivery error: this user doesn't have an account", "failed": True}, "5.0.0",
     Verdict.permanent),
    ({"diagnostic": "550 blocked by spamhaus", "failed": True}, "5.0.0", Verdict.policy),
    ({"diagnostic": "452 mailbox full", "failed": True}, "4.0.0", Verdict.transient),
    ({"diagnostic": "", "failed": True}, "5.0.0", Verdict.permanent),
    ({"diagnostic": "", "failed": False}, "4.0.0", Verdict.transient),
    ({"diagnostic": "", "failed": None}, "4.0.0", Verdict.transient),
])
def test_judge(kwargs, status, verdict):
    assert judge(**kwargs) == (status, verdict)


@pytest.mark.parametrize("raw, address", [
    ("rfc822; <Ann@Example.ORG>", "Ann@example.org"),
    ("RFC822;ann@example.org", "ann@example.org"),
    ("<ann@example.org>", "ann@example.org"),
    ('"Ann Reader" <ann@example.org>', "ann@example.org"),
    ("rfc822; not an address", ""),
    ("", ""),
])
def test_addresses_are_normalised(raw, address):
    assert normalise_address(raw) == address


@pytest.mark.parametrize("raw", [b"", b"   \r\n", b"\x00\x01\x02", b"\xff" * 3000, b"Subject: x\r\n\r\nhi",
                                 b"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\n--x--",
                                 b"Content-Type: message/delivery-status\r\n\r\nAction: failed\r\n",
                                 b"From: MAILER-DAEMON@x\r\nContent-Type: text/plain; charset=nonsense\r\n\r\n\xff\xfe"])
def test_any_input_reads_without_raising(raw):
    report = read_message(raw)
    assert report.kind in set(InboundKind)


def test_tokens_are_found_where_the_report_puts_them():
    raw = (b"From: MAILER-DAEMON@mx.example.org\r\nTo: bounces+12-0123456789ab@example.com\r\n"
           b"Subject: failure notice\r\n\r\nHi. This is the qmail-send program at mx.example.org.\r\n\r\n"
           b"<a@example.org>:\r\nno mailbox (#5.1.1)\r\n\r\n--- Below this line is a copy of the message.\r\n\r\n"
           b"Return-Path: <bounces+13-abcdefabcdef@example.com>\r\nMessage-ID: <nl.3.13.0123456789@example.com>\r\n")
    report = read_message(raw)
    assert report.envelope_tokens == ("12-0123456789ab",)
    assert report.quoted_tokens == ("13-abcdefabcdef",)
    assert report.message_ids == ("<nl.3.13.0123456789@example.com>",)
    assert read_message(raw, envelope_to=["bounces+14-aaaaaaaaaaaa@example.com"]).envelope_tokens[0] == \
        "14-aaaaaaaaaaaa"


def test_an_unsubscribe_request_and_an_auto_reply_are_told_apart_from_bounces():
    unsub = read_message(b"From: a@example.org\r\nTo: unsubscribe+tok@example.com\r\nSubject: unsubscribe\r\n\r\n")
    assert unsub.kind == InboundKind.unsubscribe and unsub.unsubscribe_tokens == ("tok",)
    # A mail system's notice with Auto-Submitted is still read as a bounce.
    daemon = (CORPUS / "exim-user-unknown.eml").read_bytes()
    assert b"Auto-Submitted: auto-replied" in daemon and read_message(daemon).kind == InboundKind.bounce
