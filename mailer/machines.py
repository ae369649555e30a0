"""People or machines: each click and open judged, with the reason, from what was seen
(pure code: plain values in, plain values out).

Machines open and click mail nobody read. listmonk's open rate jumps to 50% within a
minute of a send for this reason (its issue #1025). Counted as machine, each with its
reason:

- an image proxy fetching the pixel on its own: Apple Mail Privacy Protection loads every
  image of every message as it arrives, with a bare ``Mozilla/5.0`` user agent; Gmail's
  and Yahoo's proxies name themselves;
- a security gateway or link scanner naming itself (Mimecast, Proofpoint, Barracuda,
  Microsoft Safe Links, ...), or any client that is a library or a bot (curl, python,
  Go, "bot", "crawler", "preview");
- a ``HEAD`` request: browsers follow links with GET; link checkers ask HEAD;
- anything within ``AFTER_DELIVERY`` seconds of the relay taking the message: a person
  has not even seen it yet;
- a burst: the message's links clicked together, every one of them (or at least
  ``BURST_LINKS``) within ``BURST_SECONDS``: scanners follow every link at once.

Everything else is a person. IP networks are not used: no address is stored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailer.models import EngagementKind

AFTER_DELIVERY = timedelta(seconds=10)
BURST_SECONDS = timedelta(seconds=2)
BURST_LINKS = 3
HUMAN = "a person: no sign of a machine"

# (pattern, reason): the first that matches the user agent.
_PROXIES = (
    (re.compile(r"^Mozilla/5\.0$"), "image proxy: Apple Mail Privacy Protection"),
    (re.compile(r"GoogleImageProxy|ggpht\.com", re.I), "image proxy: Gmail"),
    (re.compile(r"YahooMailProxy", re.I), "image proxy: Yahoo Mail"),
)
_SCANNERS = (
    (re.compile(r"Mimecast", re.I), "security gateway: Mimecast"),
    (re.compile(r"Proofpoint|urldefense", re.I), "security gateway: Proofpoint"),
    (re.compile(r"Barracuda", re.I), "security gateway: Barracuda"),
    (re.compile(r"SafeLinks|Microsoft Office Protocol Discovery|BingPreview", re.I),
     "security gateway: Microsoft Defender"),
    (re.compile(r"Symantec|Forcepoint|Sophos|Trend ?Micro|Cisco|IronPort|FortiGuard", re.I), "security gateway"),
    (re.compile(r"curl|wget|python|Go-http-client|java/|okhttp|libwww|httpclient|axios|node-fetch", re.I),
     "automated client"),
    (re.compile(r"bot\b|crawler|spider|preview|scanner|headless", re.I), "automated client"),
)


@dataclass(frozen=True)
class Seen:
    """One click or open of one delivery, as recorded."""

    id: int
    kind: str  # an EngagementKind
    link_index: int | None
    method: str
    user_agent: str
    at: datetime


def _by_agent(event: Seen) -> str:
    agent = event.user_agent.strip()
    if not agent:
        return "no user agent: not a browser"
    rules = (_PROXIES if event.kind == EngagementKind.open else ()) + _SCANNERS
    return next((reason for pattern, reason in rules if pattern.search(agent)), "")


def _bursts(clicks: Sequence[Seen], links: int) -> set[int]:
    """Ids of clicks in a window of ``BURST_SECONDS`` that holds every link of the
    message (two or more) or at least ``BURST_LINKS`` different ones."""
    ordered = sorted(clicks, key=lambda e: (e.at, e.id))
    need = min(BURST_LINKS, links) if links >= 2 else BURST_LINKS
    found: set[int] = set()
    start = 0
    for end, last in enumerate(ordered):
        while last.at - ordered[start].at > BURST_SECONDS:
            start += 1
        window = ordered[start:end + 1]
        if len({e.link_index for e in window}) >= need:
            found.update(e.id for e in window)
    return found


def judge(events: Sequence[Seen], *, sent_at: datetime | None, links: int) -> dict[int, tuple[bool, str]]:
    """(machine?, reason) for each event of one delivery, by id. Judged again whenever
    the delivery has a new event: a burst is only a burst once its last click is in."""
    burst = _bursts([e for e in events if e.kind == EngagementKind.click], links)
    out: dict[int, tuple[bool, str]] = {}
    for e in events:
        if e.method.upper() == "HEAD":
            reason = "HEAD request: a link checker"
        elif reason := _by_agent(e):
            pass
        elif sent_at is not None and e.at - sent_at < AFTER_DELIVERY:
            reason = f"within {AFTER_DELIVERY.seconds} s of delivery"
        elif e.id in burst:
            reason = f"links clicked together, within {BURST_SECONDS.seconds} s"
        out[e.id] = (True, reason) if reason else (False, HUMAN)
    return out
