"""The pure part of outbound webhooks: event types, URLs, payloads, Standard Webhooks
signatures (checked against the ``standardwebhooks`` package, an implementation of the
specification that is not ours), rotation and backoff."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from mailer import hooks
from mailer.core.errors import InvalidInput
from mailer.hooks import EventType


def test_event_types_take_full_and_short_names_each_once_in_order():
    assert hooks.parse_event_types(["campaign.finished", "subscribed", "confirmed", "subscribed"]) == [
        EventType.subscribed, EventType.confirmed, EventType.campaign_finished]
    assert hooks.parse_event_types(["all"]) == list(EventType)
    assert hooks.parse_event_types(["started"]) == [EventType.campaign_started]


@pytest.mark.parametrize("names", [["opened"], [], ["subscribed", "nope"]])
def test_unknown_or_no_event_types_are_refused(names):
    with pytest.raises(InvalidInput, match="event type"):
        hooks.parse_event_types(names)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "example.com/hook", "http://", "javascript:alert(1)",
                                 "http://host:port/", ""])
def test_only_http_urls_with_a_host_are_endpoints(url):
    with pytest.raises(InvalidInput):
        hooks.check_url(url)


def test_a_good_url_is_kept():
    assert hooks.check_url(" https://crm.example.com:8443/hooks?x=1 ") == "https://crm.example.com:8443/hooks?x=1"


def test_a_signature_verifies_with_an_independent_implementation():
    secret = hooks.new_secret()
    assert secret.startswith("whsec_")
    body = hooks.payload(EventType.subscribed, {"email": "ann@example.com", "name": "Ann Ø"},
                         at=datetime(2026, 12, 1, 9, tzinfo=UTC))
    assert json.loads(body)["type"] == "subscriber.subscribed"
    msg_id, ts = hooks.new_message_id(), int(time.time())
    headers = hooks.headers([secret], message_id=msg_id, timestamp=ts, body=body)
    assert Webhook(secret).verify(body, headers)["data"]["name"] == "Ann Ø"
    with pytest.raises(WebhookVerificationError):
        Webhook(hooks.new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):  # a body changed on the way
        Webhook(secret).verify(body.replace(b"Ann", b"Bob"), headers)


def test_during_a_rotation_both_secrets_verify_and_after_it_only_the_new_one():
    old, new = hooks.new_secret(), hooks.new_secret()
    now = datetime.now(UTC)
    during = hooks.signing_secrets(new, old, now + timedelta(hours=1), now)
    assert during == [new, old]
    body, ts = b'{"type":"campaign.started"}', int(now.timestamp())
    headers = hooks.headers(during, message_id="msg_1", timestamp=ts, body=body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(body, headers)
    after = hooks.signing_secrets(new, old, now - timedelta(seconds=1), now)
    headers = hooks.headers(after, message_id="msg_1", timestamp=ts, body=body)
    Webhook(new).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers)


def test_retries_back_off_exponentially_up_to_a_cap():
    delays = [hooks.retry_delay(n, base=10, cap=60).total_seconds() for n in range(1, 6)]
    assert delays == [10, 20, 40, 60, 60]


def test_only_2xx_is_delivered():
    assert hooks.succeeded(200) and hooks.succeeded(204)
    assert not any(hooks.succeeded(c) for c in (199, 301, 404, 500))
