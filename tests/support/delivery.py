"""Helpers for the tests of the send path: an engine config, an SMTP transport to the
test server, what it received, and the counters invariant."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from mailer import queries
from mailer.core.db import transaction
from mailer.models import COUNTED, Campaign
from mailer.sending import EngineConfig
from mailer.transports.smtp import SmtpTransport


def config(**kw) -> EngineConfig:
    base = dict(worker="test-worker", secret_key="s3cret", base_url="https://news.example.com",
                from_name="Weekly China AI", from_addr="news@example.com", sending_domain="example.com",
                lease=timedelta(seconds=60), max_attempts=3, retry_base_seconds=0.0, permanent_error_limit=5)
    base.update(kw)
    return EngineConfig(**base)


def transport_for(sink) -> SmtpTransport:
    return SmtpTransport.from_url(f"smtp://127.0.0.1:{sink.port}", timeout=10)


def received(sink) -> Counter:
    """How many messages the test SMTP server got for each recipient."""
    return Counter(r for m in list(sink.messages) for r in m.rcpt_tos)


def assert_counters_match(engine, cid: int) -> dict[str, int]:
    """The invariant: the counters on the campaign equal the counts of its deliveries."""
    with transaction(engine) as s:
        c = s.get(Campaign, cid)
        counts = queries.delivery_counts(s, campaign_id=cid)
        assert c.total == sum(counts.values())
        for status in COUNTED:
            assert getattr(c, status) == counts.get(status, 0), (status, counts)
    return {str(k): v for k, v in counts.items()}


# A campaign forced through a test SMTP server that refuses chosen addresses: what each
# of those addresses must be listed with (status, code, a piece of the relay's reply).
REFUSED = {
    "reader000003@example.com": (550, "5.1.1 User unknown"),  # bad address: bounced
    "reader000005@example.com": (554, "5.7.1 Rejected by policy"),  # permanent, not the address: failed
    "reader000008@example.com": (452, "4.2.2 Mailbox full"),  # temporary, every attempt: failed at the last
}
LEFT = "reader000010@example.com"  # unsubscribed after the audience was frozen: skipped
FORCED = {
    "reader000003@example.com": ("bounced", 550, "5.1.1 User unknown"),
    "reader000005@example.com": ("failed", 554, "5.7.1 Rejected by policy"),
    "reader000008@example.com": ("failed", 452, "4.2.2 Mailbox full"),
    LEFT: ("skipped", None, "subscriber is no longer active"),
}


def force_campaign(engine, sink, *, n: int = 12, batch_size: int = 5) -> int:
    """Send a campaign to ``n`` subscribers through ``sink``, which refuses ``REFUSED``;
    ``LEFT`` unsubscribes after the start. Every delivery ends recorded: ``FORCED`` did
    not get it, the others were sent."""
    from mailer.sending import drain
    from subscribers import service
    from tests.support.seed import seed_campaign

    cid = seed_campaign(engine, n, batch_size=batch_size)
    with transaction(engine) as s:
        service.unsubscribe(s, subscriber_id=service.find_subscriber(s, LEFT).id, origin="admin")
    sink.reject.update(REFUSED)
    drain(engine, cid, transport=transport_for(sink), cfg=config())
    return cid
