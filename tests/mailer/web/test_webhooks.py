"""``/webhooks/{provider}`` end to end: the web app served by uvicorn, events posted over
HTTP as each provider signs them, the SNS signing certificate fetched over TLS from a
local HTTPS server of our own. A verified bounce or complaint ends on its delivery;
a forged signature is 403 and changes nothing."""

from __future__ import annotations

import base64
import json
import re

import httpx
import pytest

from mailer.core.config import get_settings
from mailer.web.webhooks import sns_verifier
from mailer.webhooks import Forbidden, SnsVerifier
from tests.support.inbound import sent_campaign, snapshot, statuses, suppressed
from tests.support.webhooks import (
    MAILGUN_KEY,
    POSTMARK_AUTH,
    TOPIC,
    certificate_server,
    mailgun_signed,
    sendgrid_headers,
    sendgrid_keys,
    serve,
    sns_notification,
)

pytestmark = pytest.mark.timeout(120)


def delivery_status(engine, delivery_id: int) -> str:
    from mailer.core.db import transaction
    from mailer.models import Delivery

    with transaction(engine) as s:
        return s.get(Delivery, delivery_id).status


@pytest.fixture
def certificates(tmp_path):
    with certificate_server(tmp_path) as served:
        yield served


@pytest.fixture
def sendgrid_key():
    return sendgrid_keys()


@pytest.fixture
def site(settings, monkeypatch, certificates, sendgrid_key):
    """The app over HTTP, every provider set up, SNS certificates from the local server."""
    from mailer.web.app import create_app

    for name, value in (("SECRET_KEY", "s3cret"), ("SES_TOPIC_ARNS", f"arn:aws:sns:us-east-1:1:other,{TOPIC}"),
                        ("POSTMARK_WEBHOOK_AUTH", POSTMARK_AUTH), ("MAILGUN_SIGNING_KEY", MAILGUN_KEY),
                        ("SENDGRID_PUBLIC_KEY", sendgrid_key[1])):
        monkeypatch.setenv(f"NEWSLETTER_{name}", value)
    get_settings.cache_clear()
    app = create_app()
    verifier = certificates.verifier()
    app.dependency_overrides[sns_verifier] = lambda: verifier
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def ses_bounce(sent, *, status="5.1.1", bounce_type="Permanent", sub_type="General", source=True) -> dict:
    return {"notificationType": "Bounce",
            "bounce": {"bounceType": bounce_type, "bounceSubType": sub_type, "reportingMTA": "dsn; a1-2.smtp-out",
                       "bouncedRecipients": [{"emailAddress": sent.email, "action": "failed", "status": status,
                                              "diagnosticCode": f"smtp; 550 {status} user unknown"}]},
            "mail": {"messageId": "0100018c-ses-id", "source": sent.verp() if source else "news@example.com",
                     "destination": [sent.email], "commonHeaders": {"messageId": sent.message_id}}}


def post_sns(site, doc: dict):
    return site.post("/webhooks/ses", content=json.dumps(doc), headers={"Content-Type": "text/plain; charset=UTF-8",
                                                                         "x-amz-sns-message-type": doc["Type"]})


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_ses_bounce_through_sns_bounces_its_delivery(engine, site, certificates, version):
    ann = sent_campaign(engine, ["ann@example.org", "bob@example.org"])["ann@example.org"]
    response = post_sns(site, certificates.sign_sns(sns_notification(ses_bounce(ann)), version=version))
    assert response.status_code == 200, response.text
    assert response.json()["detail"].startswith(f"delivery {ann.delivery_id}: bounced (5.1.1")
    assert statuses(engine) == {"ann@example.org": "bounced", "bob@example.org": "active"}
    assert suppressed(engine, "ann@example.org") and delivery_status(engine, ann.delivery_id) == "bounced"
    assert certificates.requests == ["/SimpleNotificationService-test.pem"]


def test_ses_complaints_and_soft_bounces_tied_by_message_id(engine, site, certificates):
    sent = sent_campaign(engine, ["ann@example.org", "bob@example.org"])
    complaint = {"notificationType": "Complaint",
                 "complaint": {"complainedRecipients": [{"emailAddress": "ann@example.org"}],
                               "complaintFeedbackType": "abuse", "userAgent": "Yahoo!-Mail-Feedback/2.0"},
                 "mail": {"source": "news@example.com", "commonHeaders": {"messageId": sent["ann@example.org"].message_id}}}
    assert post_sns(site, certificates.sign_sns(sns_notification(complaint))).status_code == 200
    soft = ses_bounce(sent["bob@example.org"], status="4.2.2", bounce_type="Transient", sub_type="MailboxFull",
                      source=False)
    response = post_sns(site, certificates.sign_sns(sns_notification(soft)))
    assert "soft bounce 1 of 3" in response.json()["detail"]
    assert statuses(engine) == {"ann@example.org": "complained", "bob@example.org": "active"}


def test_forged_sns_messages_are_refused_and_change_nothing(engine, site, certificates):
    ann = sent_campaign(engine, ["ann@example.org"])["ann@example.org"]
    good = certificates.sign_sns(sns_notification(ses_bounce(ann)))
    tampered = {**good, "Message": good["Message"].replace("Permanent", "Permanent ")}
    other_topic = certificates.sign_sns(sns_notification(ses_bounce(ann), topic="arn:aws:sns:eu-west-1:666:evil"))
    elsewhere = certificates.sign_sns({**sns_notification(ses_bounce(ann)),
                                       "SigningCertURL": "https://evil.example/SimpleNotificationService-x.pem"})
    plain_http = certificates.sign_sns({**sns_notification(ses_bounce(ann)),
                                        "SigningCertURL": certificates.cert_url.replace("https:", "http:")})
    garbage_sig = {**good, "Signature": "not base64!"}
    before = snapshot(engine)
    for doc, reason in ((tampered, "does not verify"), (other_topic, "NEWSLETTER_SES_TOPIC_ARNS"),
                        (elsewhere, "not an https URL of Amazon SNS"), (plain_http, "not an https URL"),
                        (garbage_sig, "not base64")):
        response = post_sns(site, doc)
        assert response.status_code == 403 and reason in response.json()["detail"], response.text
    assert snapshot(engine) == before
    assert not any("evil" in r for r in certificates.requests)


def test_an_sns_subscription_is_confirmed_once_verified(engine, site, certificates):
    confirm = certificates.url("/?Action=ConfirmSubscription&TopicArn=x&Token=abc")
    doc = certificates.sign_sns({"Type": "SubscriptionConfirmation", "MessageId": "m1", "Token": "abc",
                                 "TopicArn": TOPIC, "Message": "You have chosen to subscribe",
                                 "SubscribeURL": confirm, "Timestamp": "2026-11-30T10:00:00.000Z"})
    response = post_sns(site, doc)
    assert response.status_code == 200 and "SNS subscription confirmed" in response.json()["detail"]
    assert "/?Action=ConfirmSubscription&TopicArn=x&Token=abc" in certificates.requests
    # A confirmation pointing anywhere but SNS is not followed.
    evil = certificates.sign_sns({**doc, "SubscribeURL": "https://evil.example/?x"})
    assert post_sns(site, evil).status_code == 403


def test_the_production_certificate_source_takes_amazon_sns_hosts_only():
    fetched = []
    verifier = SnsVerifier(fetch=lambda url: fetched.append(url) or b"")
    for url in ("https://127.0.0.1/SimpleNotificationService-a.pem", "http://sns.us-east-1.amazonaws.com/a.pem",
                "https://sns.us-east-1.amazonaws.com.evil.example/a.pem", "https://evilsns.us-east-1.amazonaws.com/a.pem",
                "https://user@sns.us-east-1.amazonaws.com/a.pem"):
        with pytest.raises(Forbidden):
            verifier.certificate(url)
    assert fetched == []
    for host in ("sns.us-east-1.amazonaws.com", "sns.cn-north-1.amazonaws.com.cn"):
        assert verifier.check_url(f"https://{host}/SimpleNotificationService-1.pem", "x")


def test_a_postmark_bounce_with_its_credentials(engine, site):
    sent = sent_campaign(engine, ["ann@example.org", "bob@example.org"])
    auth = "Basic " + base64.b64encode(POSTMARK_AUTH.encode()).decode()
    hard = {"RecordType": "Bounce", "Type": "HardBounce", "TypeCode": 1, "Email": "ann@example.org",
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist",
            "Description": "The server was unable to deliver your message", "MessageID": "883953f4-postmark"}
    before = snapshot(engine)
    for headers in ({}, {"Authorization": "Basic " + base64.b64encode(b"postmark:wrong").decode()},
                    {"Authorization": "Bearer x"}):
        refused = site.post("/webhooks/postmark", json=hard, headers=headers)
        assert refused.status_code == 403, refused.text
    assert snapshot(engine) == before
    response = site.post("/webhooks/postmark", json=hard, headers={"Authorization": auth})
    assert response.status_code == 200 and response.json()["recorded"] == 1, response.text
    spam = {"RecordType": "SpamComplaint", "Type": "SpamComplaint", "TypeCode": 100001, "Email": "bob@example.org"}
    assert site.post("/webhooks/postmark", json=spam, headers={"Authorization": auth}).status_code == 200
    blocked = {**hard, "Type": "Blocked", "Email": "ann@example.org", "Details": "blocked by policy"}
    assert "policy" in site.post("/webhooks/postmark", json=blocked, headers={"Authorization": auth}).json()["detail"]
    assert statuses(engine) == {"ann@example.org": "bounced", "bob@example.org": "complained"}
    assert delivery_status(engine, sent["ann@example.org"].delivery_id) == "bounced"
    assert suppressed(engine, "ann@example.org") and suppressed(engine, "bob@example.org")


def test_a_mailgun_failure_with_its_signature(engine, site):
    ann = sent_campaign(engine, ["ann@example.org"])["ann@example.org"]
    event = {"event": "failed", "severity": "permanent", "reason": "bounce", "recipient": "ann@example.org",
             "delivery-status": {"code": 550, "message": "5.1.1 The email account that you tried to reach does not "
                                 "exist", "description": ""},
             "envelope": {"sender": ann.verp()},
             "message": {"headers": {"message-id": ann.message_id.strip("<>")}}}
    before = snapshot(engine)
    forged = mailgun_signed(event, key="not the key")
    assert site.post("/webhooks/mailgun", json=forged).status_code == 403
    assert site.post("/webhooks/mailgun", json={"event-data": event}).status_code == 400
    assert snapshot(engine) == before
    response = site.post("/webhooks/mailgun", json=mailgun_signed(event))
    assert response.status_code == 200 and response.json()["detail"].startswith(f"delivery {ann.delivery_id}: bounced")
    assert statuses(engine) == {"ann@example.org": "bounced"}
    assert suppressed(engine, "ann@example.org") and delivery_status(engine, ann.delivery_id) == "bounced"


def test_a_sendgrid_batch_with_its_signature(engine, site, sendgrid_key):
    sent = sent_campaign(engine, ["ann@example.org", "bob@example.org", "cy@example.org"])
    events = [
        {"email": "ann@example.org", "event": "bounce", "type": "bounce", "status": "5.1.1",
         "reason": "550 5.1.1 The email account that you tried to reach does not exist",
         "smtp-id": sent["ann@example.org"].message_id},
        {"email": "bob@example.org", "event": "spamreport", "smtp-id": sent["bob@example.org"].message_id},
        {"email": "cy@example.org", "event": "bounce", "type": "blocked", "status": "5.7.1",
         "reason": "550 5.7.1 rejected for policy reasons", "bounce_classification": "Reputation"},
        {"email": "cy@example.org", "event": "delivered"},
    ]
    body = json.dumps(events).encode()
    key, _ = sendgrid_key
    other, _ = sendgrid_keys()
    before = snapshot(engine)
    assert site.post("/webhooks/sendgrid", content=body, headers=sendgrid_headers(other, body)).status_code == 403
    assert site.post("/webhooks/sendgrid", content=body + b" ", headers=sendgrid_headers(key, body)).status_code == 403
    assert site.post("/webhooks/sendgrid", content=body, headers={"Content-Type": "application/json"}).status_code == 403
    assert snapshot(engine) == before
    response = site.post("/webhooks/sendgrid", content=body, headers=sendgrid_headers(key, body))
    assert response.status_code == 200 and response.json()["recorded"] == 3, response.text
    assert "not recorded: delivered" in response.json()["detail"]
    assert statuses(engine) == {"ann@example.org": "bounced", "bob@example.org": "complained",
                                "cy@example.org": "active"}
    assert delivery_status(engine, sent["ann@example.org"].delivery_id) == "bounced"
    assert suppressed(engine, "ann@example.org") and not suppressed(engine, "cy@example.org")


def test_providers_not_set_up_or_unknown_are_404_and_bad_bodies_400(engine, settings, monkeypatch):
    from fastapi.testclient import TestClient

    from mailer.web.app import create_app

    monkeypatch.setenv("NEWSLETTER_MAILGUN_SIGNING_KEY", MAILGUN_KEY)
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        for provider in ("ses", "postmark", "sendgrid", "nonsense"):
            response = client.post(f"/webhooks/{provider}", content=b"{}")
            assert response.status_code == 404 and response.json()["detail"], (provider, response.text)
        assert client.post("/webhooks/mailgun", content=b"not json").status_code == 400
        signed_nonsense = mailgun_signed({"event": "something-new"})
        ignored = client.post("/webhooks/mailgun", json=signed_nonsense)
        assert ignored.status_code == 200 and ignored.json()["recorded"] == 0
        assert re.search(r"not recorded: something-new", ignored.json()["detail"])


def test_a_large_sns_message_with_control_characters_is_taken(engine, site, certificates):
    """SNS messages go up to 256 KB, over the public body limit, and a bounce's text may
    carry a NUL: the webhook takes both (the signature covers the bytes as they are)."""
    ann = sent_campaign(engine, ["ann@example.org"])["ann@example.org"]
    message = ses_bounce(ann)
    message["bounce"]["bouncedRecipients"][0]["diagnosticCode"] = "smtp; 550 5.1.1 user unknown \x00\x07 [nul]"
    message["mail"]["headers"] = [{"name": f"X-Padding-{i}", "value": "x" * 1000} for i in range(150)]
    doc = certificates.sign_sns(sns_notification(message))
    assert len(json.dumps(doc)) > 150_000
    response = post_sns(site, doc)
    assert response.status_code == 200, response.text
    assert statuses(engine) == {"ann@example.org": "bounced"}
