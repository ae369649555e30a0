"""Assembled messages parse back to exactly what ``mailer.merge.personalise`` produces."""

from __future__ import annotations

import email
import email.policy
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.utils import getaddresses, parsedate_to_datetime

import pytest

from mailer.core.errors import InvalidInput
from mailer.merge import MARKERS, personalise
from mailer.message import Recipient, compile_message, feedback_id, feedback_sender_id, parse_verp, verp_address

M = MARKERS
HTML = (
    "<!doctype html><html><body>\n"
    f"<p>Hello {M['name']},</p>\n"
    + "".join(f"<p>Paragraph {i}: lorem ipsum dolor sit amet, café — “quotes” 🎉 {'x' * i}</p>\n" for i in range(60))
    + f'<p>Hi {M["name"]}{M["name"]}!</p><p style="color:#333">Sent to {M["email"]}.</p>'
    f'<a href="{M["unsubscribe_url"]}">Unsubscribe</a> <a href="{M["preferences_url"]}">Preferences</a>'
    + " trailing spaces   \n"
    + "a" * 200 + M["name"] + "b" * 200 + "\n"
    + "</body></html>"
)
TEXT = (
    f"Hello {M['name']},\n\n"
    + "".join(f"Line {i} with a tab\tand trailing space \n" for i in range(40))
    + "." + "\n" + "From the start of a line\n"
    + f"Unsubscribe: {M['unsubscribe_url']}\nPreferences: {M['preferences_url']}\nEmail: {M['email']}\n"
)
NAMES = [
    "Ana",
    "王小明",
    "José García",
    "Party 🎉 Person",
    "<b>x</b>",
    '"quoted" \\ back',
    "a = b ?= c =?utf-8?q?x?=",
    "O'Brien, Jr.",
    "  spaced   out  ",
    "L" * 300,
    "é" * 120 + " " + "🎉" * 40,
    "",
]


def compile_issue(subject="This week: AI news", **kw):
    args = dict(
        subject=subject,
        from_=Address("Weekly News", addr_spec="news@example.com"),
        html=HTML,
        text=TEXT,
        list_id="weekly.news.example.com",
        list_name="Weekly News",
        feedback_id="c42:weekly:newsletter:examplecom",
    )
    args.update(kw)
    return compile_message(**args)


def recipient(name="Ana", **kw):
    args = dict(
        email="ana@example.org",
        name=name,
        message_id="<c42.7@news.example.com>",
        unsubscribe_url="https://news.example.com/u/AbC.dEf-123?x=1&y=2",
        unsubscribe_mailto="mailto:unsubscribe+AbC.dEf@news.example.com",
        preferences_url="https://news.example.com/p/AbC=",
        date="Mon, 02 Mar 2026 09:00:00 +0000",
    )
    args.update(kw)
    return Recipient(**args)


def values(r: Recipient) -> dict[str, str]:
    return {"name": r.name, "email": r.email, "unsubscribe_url": r.unsubscribe_url, "preferences_url": r.preferences_url}


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def raw_header(raw: bytes, name: str) -> str:
    return email.message_from_bytes(raw, policy=email.policy.compat32)[name]


@pytest.mark.parametrize("name", NAMES)
def test_bodies_decode_to_personalise_output(name):
    r = recipient(name)
    msg = parse(compile_issue().assemble(r))
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = list(msg.iter_parts())
    assert plain.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    for part in (plain, html):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert plain.get_content().replace("\r\n", "\n") == personalise(TEXT, values(r), html=False)
    assert html.get_content().replace("\r\n", "\n") == personalise(HTML, values(r), html=True)
    assert not msg.defects and not plain.defects and not html.defects


@pytest.mark.parametrize("name", NAMES)
def test_to_header_carries_the_display_name(name):
    raw = compile_issue().assemble(recipient(name))
    to = raw_header(raw, "To")
    if "=?" in to:
        # RFC 2047 §6.2: whitespace between adjacent encoded-words is dropped. (Python
        # 3.11's structured parser keeps a space there, so decode_header is the reference.)
        assert str(make_header(decode_header(to))) == f"{name} <ana@example.org>"
    else:
        assert getaddresses([to]) == [(name, "ana@example.org")]
    assert parse(raw)["To"].addresses[0].addr_spec == "ana@example.org"


def test_headers():
    raw = compile_issue(subject="Ünïcode 🎉 issue with a subject long enough to need folding, really").assemble(
        recipient("José")
    )
    msg = parse(raw)
    assert msg["From"].addresses[0] == Address("Weekly News", addr_spec="news@example.com")
    assert msg["Subject"] == "Ünïcode 🎉 issue with a subject long enough to need folding, really"
    assert msg["To"].addresses[0].display_name == "José"
    assert parsedate_to_datetime(msg["Date"]).year == 2026
    assert msg["Message-ID"] == "<c42.7@news.example.com>"
    assert msg["MIME-Version"] == "1.0"
    assert msg["List-Unsubscribe"] == (
        "<https://news.example.com/u/AbC.dEf-123?x=1&y=2>, <mailto:unsubscribe+AbC.dEf@news.example.com>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Id"] == "Weekly News <weekly.news.example.com>"
    assert msg["Feedback-ID"] == "c42:weekly:newsletter:examplecom"
    names = [k for k, _ in msg.items()]
    assert names[:10] == [
        "From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "List-Unsubscribe",
        "List-Unsubscribe-Post", "List-Id", "Feedback-ID",
    ]
    for header in ("Subject", "To"):
        assert raw_header(raw, header).isascii()


def test_date_defaults_to_now_and_mailto_is_optional():
    msg = parse(compile_issue().assemble(recipient(date=None, unsubscribe_mailto="")))
    assert parsedate_to_datetime(msg["Date"]) is not None
    assert msg["List-Unsubscribe"] == "<https://news.example.com/u/AbC.dEf-123?x=1&y=2>"


def test_ascii_subject_folds_and_round_trips():
    subject = "A plain subject " + "with many words " * 8 + "end"
    raw = compile_issue(subject=subject).assemble(recipient())
    assert "=?" not in raw_header(raw, "Subject")
    assert parse(raw)["Subject"] == subject


@pytest.mark.parametrize("name", NAMES)
def test_line_lengths(name):
    raw = compile_issue().assemble(recipient(name, unsubscribe_url="https://news.example.com/u/" + "T" * 300))
    assert raw.endswith(b"\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert all(len(line) <= 76 for line in body.split(b"\r\n")), "quoted-printable lines are at most 76"
    assert body.isascii() and head.isascii()


@pytest.mark.parametrize(
    "name",
    ["Eve\r\nBcc: victim@example.org", "Eve\nBcc: victim@example.org", "Eve\rBcc: x@y", "Eve\x00\x1b\u2028Bcc: x@y"],
)
def test_control_characters_in_name_cannot_inject_headers(name):
    raw = compile_issue().assemble(recipient(name))
    msg = parse(raw)
    assert msg["Bcc"] is None
    assert [k for k, _ in msg.items()].count("To") == 1
    clean = msg["To"].addresses[0].display_name
    assert "\r" not in clean and "\n" not in clean and clean.startswith("Eve") and "Bcc" in clean
    assert msg.get_body(("plain",)).get_content().startswith("Hello EveBcc")


def test_control_characters_in_urls_cannot_inject_headers():
    r = recipient(unsubscribe_url="https://x.example/u\r\nBcc: victim@example.org", date="Mon\r\nBcc: a@b")
    with pytest.raises(InvalidInput):
        compile_issue().assemble(r)  # "Bcc:" leaves a space inside the URL: refused
    msg = parse(compile_issue().assemble(recipient(unsubscribe_url="https://x.example/u\r\nX", date="Mon\r\nX")))
    assert msg["List-Unsubscribe"].startswith("<https://x.example/uX>") and msg["Bcc"] is None


@pytest.mark.parametrize("subject", ["Hello\r\nBcc: victim@example.org", "Hello\nBcc: x@y", "Hello\rBcc: x@y"])
def test_line_breaks_in_subject_are_refused(subject):
    with pytest.raises(InvalidInput):
        compile_issue(subject=subject)


def test_other_control_characters_in_subject_are_dropped():
    msg = parse(compile_issue(subject="Hi\x00 there\x1b").assemble(recipient()))
    assert msg["Subject"] == "Hi there"


@pytest.mark.parametrize(
    "kw",
    [
        {"from_": Address("Evil\x1bBcc: x@y", addr_spec="news@example.com")},
        {"from_": Address("Ok", addr_spec="news@exämple.com")},
        {"list_id": "a b"},
        {"list_name": "List\nBcc: x@y"},
        {"feedback_id": "a\r\nb"},
        {"extra_headers": {"Bcc": "x@y"}},
        {"extra_headers": {"X-Ok": "a\r\nBcc: x@y"}},
        {"extra_headers": {"Bad Name": "v"}},
    ],
)
def test_compile_refuses_bad_headers(kw):
    with pytest.raises(InvalidInput):
        compile_issue(**kw)


def test_extra_headers_and_non_ascii_list_name():
    t = compile_issue(extra_headers={"Reply-To": "editor@example.com", "X-Campaign": "Été 🎉"}, list_name="Lettre d'été")
    msg = parse(t.assemble(recipient()))
    assert msg["Reply-To"].addresses[0].addr_spec == "editor@example.com"
    assert msg["X-Campaign"] == "Été 🎉"
    assert str(make_header(decode_header(raw_header(t.assemble(recipient()), "List-Id")))) == (
        "Lettre d'été <weekly.news.example.com>"
    )


def test_bad_recipient_values_are_refused():
    t = compile_issue()
    for kw in ({"email": "bob"}, {"email": "böb@example.org"}, {"message_id": "no-brackets@x"}, {"email": "a b@c"}):
        with pytest.raises(InvalidInput):
            t.assemble(recipient(**kw))


def test_each_recipient_gets_their_own_values_and_templates_are_reusable():
    t = compile_issue()
    a = parse(t.assemble(recipient("Ana", email="ana@example.org")))
    b = parse(t.assemble(recipient("Bob", email="bob@example.org")))
    assert "Hello Ana" in a.get_body(("plain",)).get_content()
    assert "Hello Bob" in b.get_body(("plain",)).get_content()
    assert "bob@example.org" in b.get_body(("html",)).get_content()


def test_body_without_markers():
    t = compile_message(
        subject="s", from_=Address("", addr_spec="n@example.com"), html="<p>hi</p>", text="hi",
        list_id="l.example.com", list_name="", feedback_id="a:b:c:d",
    )
    msg = parse(t.assemble(recipient()))
    assert msg.get_body(("html",)).get_content() == "<p>hi</p>"
    assert msg["From"].addresses[0].addr_spec == "n@example.com"


def test_verp():
    assert verp_address("d123.AbC", "bounces.example.com") == "bounces+d123.AbC@bounces.example.com"
    assert parse_verp("bounces+d123.AbC@bounces.example.com") == "d123.AbC"
    assert parse_verp("<BOUNCES+tok@x.example>") == "tok"
    assert parse_verp("Mail Delivery <bounces+tok@x.example>") == "tok"
    assert parse_verp("news@example.com") is None
    with pytest.raises(InvalidInput):
        verp_address("a@b", "example.com")


def test_a_subscriber_without_a_name_is_greeted_by_the_fallback():
    from mailer.merge import NAME_FALLBACK, personalise

    template = compile_message(subject="S", from_=Address("News", addr_spec="news@example.com"),
                               html="<p>Hi __NL_NAME__,</p>", text="Hi __NL_NAME__,", list_id="l.example.com",
                               list_name="L", feedback_id="1:1:n:example.com")
    msg = email.message_from_bytes(template.assemble(Recipient(
        email="a@example.com", name="", message_id="<1@example.com>", unsubscribe_url="https://x/u/1")),
        policy=email.policy.default)
    assert msg.get_body(("plain",)).get_content().strip() == f"Hi {NAME_FALLBACK},"
    assert msg["To"].addresses[0].display_name == ""
    assert personalise("Hi __NL_NAME__,", {}, html=False) == f"Hi {NAME_FALLBACK},"


def test_feedback_id_is_gmails_format_with_a_short_stable_sender_id():
    long_domain = "news.example.com"  # 16 characters: too long to be the SenderId itself
    value = feedback_id(7, 3, domain=long_domain)
    *fields, sender_id = value.split(":")
    assert fields == ["7", "3", "newsletter"]
    assert 5 <= len(sender_id) <= 15 and long_domain not in value
    assert feedback_id(8, 3, domain="NEWS.example.com ").endswith(":" + sender_id)  # the same for every campaign
    assert feedback_sender_id("other.example.org") != sender_id
    for bad in ("a:b", "", "two words"):
        with pytest.raises(InvalidInput, match="Feedback-ID"):
            feedback_id(bad, 1, domain=long_domain)
