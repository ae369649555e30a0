"""Across packages: the unsubscribe link the engine puts in a message works, and an
unsubscribe through it stops a delivery still queued in the running campaign."""

from __future__ import annotations

import email
import email.policy
import re
from collections import Counter
from urllib.parse import urlsplit

from fastapi.testclient import TestClient
from sqlalchemy import text

from mailer.core.db import transaction
from mailer.sending import drain, send_batch
from mailer.web.app import create_app
from tests.support.delivery import assert_counters_match, config, transport_for
from tests.support.seed import seed_campaign

ONE_CLICK = {"content-type": "application/x-www-form-urlencoded"}


def one_click(client: TestClient, url: str):
    # Exactly what Gmail sends (RFC 8058): a POST with List-Unsubscribe=One-Click, no cookies.
    client.cookies.clear()
    return client.post(urlsplit(url).path, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK,
                       follow_redirects=False)


def test_unsubscribe_from_a_message_stops_the_queued_delivery(settings, engine, smtp_sink):
    cfg = config(secret_key=settings.secret_key, base_url=settings.base_url)
    cid = seed_campaign(engine, 40, batch_size=10)
    send_batch(engine, cid, transport=transport_for(smtp_sink), cfg=cfg)  # first batch of 10 goes out
    first = email.message_from_bytes(smtp_sink.messages[0].content, policy=email.policy.default)
    https = re.search(r"<(https://[^>]+)>", first["List-Unsubscribe"]).group(1)

    client = TestClient(create_app())
    response = one_click(client, https)
    assert response.status_code == 200 and "location" not in response.headers
    with transaction(engine) as s:
        assert s.execute(text("SELECT status FROM subscriber WHERE email = :e"),
                         {"e": first["To"].addresses[0].addr_spec}).scalar() == "unsubscribed"

    # Someone in a later, still queued batch leaves through their own link.
    from mailer.core import signing
    from subscribers import links

    with transaction(engine) as s:
        sid, email_addr = s.execute(text(
            "SELECT s.id, s.email FROM delivery d JOIN subscriber s ON s.id = d.subscriber_id "
            "WHERE d.campaign_id = :c AND d.status = 'queued' ORDER BY d.id DESC LIMIT 1"), {"c": cid}).one()
    url = links.unsubscribe_url(settings.base_url, signing.unsubscribe_token(settings.secret_key, sid, cid))
    assert one_click(client, url).status_code == 200
    assert one_click(client, url).status_code == 200  # repeats harmlessly

    drain(engine, cid, transport=transport_for(smtp_sink), cfg=cfg)
    got = Counter(r for m in smtp_sink.messages for r in m.rcpt_tos)
    assert email_addr not in got
    assert len(got) == 39 and set(got.values()) == {1}
    assert assert_counters_match(engine, cid) == {"sent": 39, "skipped": 1}
    with transaction(engine) as s:
        events = s.execute(text("SELECT origin, campaign_id FROM event WHERE kind = 'unsubscribe'")).all()
    assert sorted(events) == [("one-click", cid), ("one-click", cid)]


def test_unicode_survives_end_to_end_in_the_eml(tmp_path):
    """Chinese, emoji and accents in subject, preheader, body and the From display name,
    through `newsletter issue render` to message.eml, parsed back by Python's email."""
    import os
    import subprocess
    import sys

    issue = tmp_path / "weekly.md"
    issue.write_text(
        "---\nsubject: 中国AI周报 🚀 Café Crème\npreheader: Élan — 预告 ✨\n---\n"
        "## 新闻 🚀\n\n### 孙剑 (Jian Sun) 😀\n\nCrème brûlée für Jürgen, 孙剑, naïve.\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(NEWSLETTER_VAR_DIR=str(tmp_path / "var"), NEWSLETTER_FROM="周报 Rédaction 🚀 <news@example.com>")
    result = subprocess.run([sys.executable, "-m", "mailer.cli", "issue", "render", str(issue), "--out",
                             str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    msg = email.message_from_bytes((tmp_path / "out" / "message.eml").read_bytes(), policy=email.policy.default)
    assert msg["Subject"] == "中国AI周报 🚀 Café Crème"
    assert msg["From"].addresses[0].display_name == "周报 Rédaction 🚀"
    html = msg.get_body(("html",)).get_content()
    plain = msg.get_body(("plain",)).get_content()
    import html as htmllib

    for part in (htmllib.unescape(html), plain):
        for fragment in ("新闻 🚀", "孙剑 (Jian Sun) 😀", "Crème brûlée für Jürgen, 孙剑, naïve."):
            assert fragment in part, fragment
    assert "Élan — 预告 ✨" in htmllib.unescape(html)


def test_a_started_campaign_publishes_its_issue_in_the_archive(settings, engine, smtp_sink):
    """The "view in browser" link of every message must work from the first message on."""
    from mailer import campaigns
    from tests.support.seed import seed_issue, seed_list

    list_id = seed_list(engine, 3)
    issue_id = seed_issue(engine, slug="weekly-42")
    client = TestClient(create_app())
    with transaction(engine) as s:
        c, _ = campaigns.create_campaign(s, issue_id=issue_id, list_id=list_id)
    assert client.get("/issues/weekly-42").status_code == 404  # a draft does not leak
    with transaction(engine) as s:
        campaigns.start_campaign(s, campaign_id=c.id, batch_size=10)
    assert client.get("/issues/weekly-42").status_code == 200
    assert "weekly-42" in client.get("/issues/").text


def test_the_example_issue_as_mailed_scores_clean_with_spamassassin(settings, engine, smtp_sink, tmp_path):
    """The example issue saved, given to a list and sent by the engine: the message as it
    reaches the relay scores below 1.0 with SpamAssassin's local rules (``-L``: no
    network tests), and no rule about hidden or low-contrast text fires."""
    import os
    import shutil
    import subprocess

    from mailer import campaigns
    from mailer.core.config import get_settings
    from mailer.operations import issues as issue_ops
    from tests.support.example import EXAMPLE
    from tests.support.seed import seed_list
    from tests.support.services import need

    spamassassin = shutil.which("spamassassin")
    if not spamassassin:
        need("spamassassin is not installed (Debian package spamassassin; .ci/run installs it)")
    list_id = seed_list(engine, 1)
    with transaction(engine) as s:
        issue = issue_ops.create_issue(s, source=EXAMPLE.read_text(encoding="utf-8"), settings=get_settings(),
                                       filename=EXAMPLE.name)
        campaign, _ = campaigns.create_campaign(s, issue_id=issue.id, list_id=list_id)
        campaigns.start_campaign(s, campaign_id=campaign.id, batch_size=10)
    drain(engine, campaign.id, transport=transport_for(smtp_sink),
          cfg=config(secret_key=settings.secret_key, base_url=settings.base_url))
    (message,) = smtp_sink.messages
    # Its own home: spamassassin writes user preferences there on its first run.
    result = subprocess.run([spamassassin, "-L", "-t"], input=message.content, capture_output=True, timeout=120,
                            env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    checked = email.message_from_bytes(result.stdout, policy=email.policy.default)
    status = " ".join(str(checked["X-Spam-Status"]).split())
    score = float(re.search(r"score=(-?[\d.]+)", status).group(1))
    tests = re.search(r"tests=(\S*)", status).group(1).split(",")
    assert score < 1.0, status
    assert "HTML_FONT_LOW_CONTRAST" not in tests and "HTML_FONT_TINY" not in tests, status
