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
