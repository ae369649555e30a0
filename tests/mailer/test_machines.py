"""People or machines (``mailer.machines``): every rule with its reason, and a person."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mailer.machines import HUMAN, Seen, judge

SENT = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"


def seen(i, *, kind="click", link=0, method="GET", agent=BROWSER, after=timedelta(minutes=7)) -> Seen:
    return Seen(i, kind, link if kind == "click" else None, method, agent, SENT + after)


@pytest.mark.parametrize("event, reason", [
    (seen(1, method="HEAD"), "HEAD request: a link checker"),
    (seen(1, kind="open", agent="Mozilla/5.0"), "image proxy: Apple Mail Privacy Protection"),
    (seen(1, kind="open", agent="Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"),
     "image proxy: Gmail"),
    (seen(1, agent="Mozilla/5.0 (compatible; Mimecast Link Scanner)"), "security gateway: Mimecast"),
    (seen(1, agent="python-requests/2.31"), "automated client"),
    (seen(1, agent=""), "no user agent: not a browser"),
    (seen(1, after=timedelta(seconds=3)), "within 10 s of delivery"),
])
def test_each_machine_sign_is_named(event, reason):
    assert judge([event], sent_at=SENT, links=3) == {1: (True, reason)}


def test_a_burst_over_the_links_is_a_machine_and_a_later_click_a_person():
    burst = [seen(i, link=i, after=timedelta(minutes=5, seconds=i * 0.5)) for i in range(3)]
    later = seen(9, link=1, after=timedelta(minutes=12))
    verdicts = judge([*burst, later], sent_at=SENT, links=3)
    assert all(verdicts[i] == (True, "links clicked together, within 2 s") for i in range(3))
    assert verdicts[9] == (False, HUMAN)


def test_a_person_clicking_two_links_slowly_is_a_person():
    events = [seen(1, link=0), seen(2, link=1, after=timedelta(minutes=9)), seen(3, kind="open")]
    assert set(judge(events, sent_at=SENT, links=3).values()) == {(False, HUMAN)}


def test_a_bare_mozilla_click_is_not_an_image_proxy():
    assert judge([seen(1, agent="Mozilla/5.0")], sent_at=SENT, links=3) == {1: (False, HUMAN)}
