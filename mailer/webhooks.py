"""Relay providers' webhooks: each signature checked the way its provider documents it,
then the bounce and complaint events read into reports (``mailer.reports``) and judged
like any DSN (``mailer.reports.judge``), so a provider's hard bounce, soft bounce, policy
block and complaint mean what the same words mean in mail.

- Amazon SES, through SNS: every SNS message is signed with the private key of the
  certificate at ``SigningCertURL`` (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA,
  over the fields SNS names, in its order). The URL must be https on an SNS host
  (``sns.<region>.amazonaws.com``) and the certificate is fetched over verified TLS and
  must be valid now; the topic must be one the operator listed (a valid signature only
  proves that *some* SNS topic sent it: anyone can create one).
- Postmark: it signs nothing; its webhooks are protected by HTTP basic auth in the
  webhook URL (``https://user:password@host/webhooks/postmark``), compared in constant time.
- Mailgun: HMAC-SHA256, keyed with the webhook signing key, over timestamp + token,
  sent in the body's ``signature`` object.
- SendGrid: ECDSA (P-256, SHA-256) over timestamp + raw body, the signature and the
  timestamp in the ``X-Twilio-Email-Event-Webhook-*`` headers, checked with the
  webhook's public verification key.

A signature that does not verify is ``Forbidden`` (403), before anything is read.
Pure code: the certificate fetch of SNS is a function handed in (``SnsVerifier``).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import re
import ssl
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from mailer.core import signing
from mailer.core.errors import Forbidden, InvalidInput, NotFound
from mailer.message import parse_verp
from mailer.reports import (
    Channel,
    InboundKind,
    Report,
    Reported,
    Verdict,
    judge,
    normalise_address,
    one_line,
)

MAX_BODY = 1024 * 1024  # SNS messages are at most 256 KB; SendGrid batches and Postmark dumps stay below this
MAX_CERTIFICATE = 64 * 1024


# The providers taken: the path segment of ``/webhooks/{provider}`` and their channel.
SES, POSTMARK, MAILGUN, SENDGRID = Channel.ses, Channel.postmark, Channel.mailgun, Channel.sendgrid
PROVIDERS = (SES, POSTMARK, MAILGUN, SENDGRID)


@dataclass(frozen=True)
class WebhookSecrets:
    """What each provider's signature is checked with (from the settings)."""

    ses_topics: frozenset[str] = frozenset()
    postmark_auth: str = ""
    mailgun_key: str = ""
    sendgrid_key: str = ""


def secrets_from(settings) -> WebhookSecrets:
    return WebhookSecrets(ses_topics=settings.ses_topics, postmark_auth=settings.postmark_webhook_auth,
                          mailgun_key=settings.mailgun_signing_key, sendgrid_key=settings.sendgrid_public_key)


@dataclass(frozen=True)
class Event:
    """One provider event read into a report, with its own bytes (kept if unprocessed)."""

    report: Report
    raw: bytes


@dataclass(frozen=True)
class Webhook:
    """What one webhook request holds: the events, and an SNS subscription to confirm."""

    events: tuple[Event, ...] = ()
    ignored: tuple[str, ...] = ()  # event types understood and deliberately not recorded
    confirm_url: str = ""  # SNS SubscriptionConfirmation: GET it to confirm


# The providers' own words for what happened (theirs, not our statuses).

class SesObject(enum.StrEnum):
    """The object an SES notification of that type carries."""

    bounce = "bounce"
    complaint = "complaint"


class MailgunEvent(enum.StrEnum):
    failed = "failed"
    complained = "complained"


class SendGridEvent(enum.StrEnum):
    bounce = "bounce"
    deferred = "deferred"
    dropped = "dropped"
    spamreport = "spamreport"
    blocked = "blocked"  # a bounce's type, when the receiver would not take it


# --- SNS ---------------------------------------------------------------------------------

# https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html
SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?$")
_SNS_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_SNS_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}


def fetch_https(url: str, *, timeout: float = 10.0, context: ssl.SSLContext | None = None) -> bytes:
    """GET ``url`` over TLS verified against the system's trusted CAs (or ``context``)."""
    if urlsplit(url).scheme != "https":
        raise Forbidden("only https URLs are fetched")
    request = urllib.request.Request(url, headers={"User-Agent": "newsletter-webhooks"})
    with urllib.request.urlopen(request, timeout=timeout, context=context or ssl.create_default_context()) as r:
        return r.read(MAX_CERTIFICATE + 1)


@dataclass
class SnsVerifier:
    """Where SNS signing certificates may come from, and how they are fetched. Production
    uses the defaults; tests hand in a pattern for their own host and a fetcher that
    trusts their own CA (``mailer.web.webhooks.sns_verifier`` is the dependency)."""

    host: re.Pattern = SNS_HOST
    fetch: Callable[[str], bytes] = fetch_https
    _cache: dict[str, x509.Certificate] = field(default_factory=dict, repr=False)

    def check_url(self, url: str, what: str) -> str:
        parts = urlsplit(url or "")
        if parts.scheme != "https" or not self.host.match(parts.hostname or "") or parts.username:
            raise Forbidden(f"the SNS {what} is not an https URL of Amazon SNS")
        return url

    def certificate(self, url: str) -> x509.Certificate:
        self.check_url(url, "SigningCertURL")
        if not urlsplit(url).path.endswith(".pem"):
            raise Forbidden("the SNS SigningCertURL is not a certificate")
        if url not in self._cache:
            try:
                pem = self.fetch(url)
            except Forbidden:
                raise
            except Exception as err:  # an unreachable host, bad TLS: the sender cannot be proven
                raise Forbidden(f"the SNS signing certificate could not be fetched: {err}") from err
            if len(pem) > MAX_CERTIFICATE:
                raise Forbidden("the SNS signing certificate is too large")
            try:
                self._cache[url] = x509.load_pem_x509_certificate(pem)
            except ValueError as err:
                raise Forbidden("the SNS signing certificate is not a PEM certificate") from err
        return self._cache[url]


def _json(body: bytes) -> object:
    if len(body) > MAX_BODY:
        raise InvalidInput("the webhook body is too large")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidInput("the webhook body is not JSON") from err


def verify_sns(body: bytes, *, verifier: SnsVerifier, topics: frozenset[str], now: datetime) -> dict:
    """The SNS message in ``body`` once its signature, certificate and topic check out."""
    doc = _json(body)
    if not isinstance(doc, dict) or doc.get("Type") not in _SNS_FIELDS:
        raise InvalidInput("not an Amazon SNS message")
    if doc.get("TopicArn") not in topics:
        raise Forbidden("the SNS topic is not one of NEWSLETTER_SES_TOPIC_ARNS")
    algorithm = _SNS_HASHES.get(str(doc.get("SignatureVersion", "")))
    if algorithm is None:
        raise Forbidden("unknown SNS SignatureVersion")
    try:
        signature = base64.b64decode(str(doc.get("Signature", "")), validate=True)
    except (binascii.Error, ValueError) as err:
        raise Forbidden("the SNS signature is not base64") from err
    signed = "".join(f"{name}\n{doc[name]}\n" for name in _SNS_FIELDS[doc["Type"]] if doc.get(name) is not None)
    cert = verifier.certificate(str(doc.get("SigningCertURL", "")))
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise Forbidden("the SNS signing certificate is not valid now")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Forbidden("the SNS signing certificate does not hold an RSA key")
    try:
        key.verify(signature, signed.encode("utf-8"), padding.PKCS1v15(), algorithm())
    except InvalidSignature as err:
        raise Forbidden("the SNS signature does not verify") from err
    return doc


def _header_values(headers: object, name: str) -> list[str]:
    """SES ``mail.headers`` is a list of {name, value}."""
    if not isinstance(headers, list):
        return []
    return [str(h.get("value", "")) for h in headers if isinstance(h, dict) and str(h.get("name", "")).lower() == name]


def _ids(*values: object) -> tuple[str, ...]:
    """Our Message-IDs among ``values`` (with or without angle brackets)."""
    found = []
    for v in values:
        if isinstance(v, str) and v:
            found += signing.message_ids_in(v if "<" in v else f"<{v}>")
    return tuple(dict.fromkeys(found))


def _tokens(*addresses: object) -> tuple[str, ...]:
    found = [t for a in addresses if isinstance(a, str) and (t := parse_verp(a))]
    return tuple(dict.fromkeys(found))


def _str(value: object, limit: int = 1000) -> str:
    return one_line(value, limit)


def read_ses(doc: dict) -> Webhook:
    """An SES notification (or event publishing record) delivered by SNS."""
    if doc["Type"] != "Notification":
        return Webhook(confirm_url=str(doc.get("SubscribeURL", "")) if doc["Type"] == "SubscriptionConfirmation"
                       else "", ignored=(doc["Type"],))
    message = _json(str(doc.get("Message", "")).encode("utf-8"))
    if not isinstance(message, dict):
        raise InvalidInput("the SNS message does not hold an SES notification")
    kind = str(message.get("notificationType") or message.get("eventType") or "")
    mail = message.get("mail") if isinstance(message.get("mail"), dict) else {}
    common = mail.get("commonHeaders") if isinstance(mail.get("commonHeaders"), dict) else {}
    headers = mail.get("headers")
    base = Report(kind=InboundKind.bounce, source=SES,
                  quoted_tokens=_tokens(mail.get("source"), *_header_values(headers, "return-path")),
                  message_ids=_ids(common.get("messageId"), *_header_values(headers, "message-id")))
    raw = json.dumps(message, sort_keys=True).encode("utf-8")
    if kind == "Bounce" and isinstance(message.get(SesObject.bounce), dict):
        bounce = message[SesObject.bounce]
        bounce_type, sub_type = str(bounce.get("bounceType", "")), str(bounce.get("bounceSubType", ""))
        failed = True if bounce_type == "Permanent" else False if bounce_type == "Transient" else None
        listed = []
        for r in bounce.get("bouncedRecipients") or []:
            if not isinstance(r, dict):
                continue
            diagnostic = _str(r.get("diagnosticCode"))
            diagnostic = diagnostic.split(";", 1)[1].strip() if diagnostic.lower().startswith("smtp;") else diagnostic
            status, verdict = judge(status=_str(r.get("status"), 20), diagnostic=diagnostic or sub_type, failed=failed)
            # SES's own words for a rejected content or attachment: our message, not the address.
            if sub_type in ("ContentRejected", "AttachmentRejected"):
                verdict = Verdict.policy
            listed.append(Reported(address=normalise_address(_str(r.get("emailAddress"), 320)), status=status,
                                   diagnostic=diagnostic or f"{bounce_type} {sub_type}".strip(), verdict=verdict,
                                   action=_str(r.get("action"), 32) or bounce_type.lower()))
        report = replace(base, recipients=tuple(listed), reporter=_str(bounce.get("reportingMTA"), 200) or SES)
        return Webhook(events=(Event(report, raw),))
    if kind == "Complaint" and isinstance(message.get(SesObject.complaint), dict):
        complaint = message[SesObject.complaint]
        feedback = (_str(complaint.get("complaintFeedbackType"), 64) or "abuse").lower()
        # SES did not send to an address on the account's suppression list: nobody complained.
        ignored = feedback == "not-spam" or complaint.get("complaintSubType") == "OnAccountSuppressionList"
        listed = tuple(Reported(address=normalise_address(_str(r.get("emailAddress"), 320)), status="",
                                diagnostic=feedback, verdict=Verdict.ignore if ignored else Verdict.permanent,
                                action=feedback)
                       for r in complaint.get("complainedRecipients") or [] if isinstance(r, dict))
        report = replace(base, kind=InboundKind.complaint, recipients=listed,
                         reporter=_str(complaint.get("userAgent"), 200) or SES)
        return Webhook(events=(Event(report, raw),))
    return Webhook(ignored=(kind or "an SES message without a type",))


# --- Postmark ----------------------------------------------------------------------------

def verify_postmark(authorization: str, *, auth: str) -> None:
    """HTTP basic auth (RFC 7617) against ``user:password``, in constant time."""
    scheme, _, value = (authorization or "").partition(" ")
    try:
        given = base64.b64decode(value.strip(), validate=True).decode("utf-8") if scheme.lower() == "basic" else ""
    except (binascii.Error, UnicodeDecodeError):
        given = ""
    if not signing.same(given, auth):
        raise Forbidden("the Postmark webhook's credentials are not valid")


_POSTMARK_HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
_POSTMARK_SOFT = {"SoftBounce", "Transient", "DnsError", "Undeliverable", "Unknown"}
_POSTMARK_POLICY = {"Blocked", "DMARCPolicy", "SpamNotification", "VirusNotification", "ChallengeVerification"}


def read_postmark(body: bytes) -> Webhook:
    doc = _json(body)
    if not isinstance(doc, dict):
        raise InvalidInput("the Postmark webhook body is not a JSON object")
    record, kind = str(doc.get("RecordType", "")), str(doc.get("Type", ""))
    address = normalise_address(_str(doc.get("Email"), 320))
    content = doc.get("Content") if isinstance(doc.get("Content"), str) else ""
    base = Report(kind=InboundKind.bounce, source=POSTMARK, quoted_tokens=tuple(signing.verp_tokens_in(content)),
                  message_ids=tuple(signing.message_ids_in(content)), reporter=POSTMARK)
    if record == "SpamComplaint" or kind == "SpamComplaint":
        report = replace(base, kind=InboundKind.complaint, recipients=(
            Reported(address=address, status="", diagnostic="abuse", verdict=Verdict.permanent, action=kind),))
        return Webhook(events=(Event(report, body),))
    if record != "Bounce":
        return Webhook(ignored=(record or "a Postmark record without a type",))
    if kind == "AutoResponder":
        report = replace(base, kind=InboundKind.auto_reply, recipients=(
            Reported(address=address, status="", diagnostic=kind, verdict=Verdict.ignore, action=kind),))
        return Webhook(events=(Event(report, body),))
    if kind not in _POSTMARK_HARD | _POSTMARK_SOFT | _POSTMARK_POLICY:
        return Webhook(ignored=(kind or "a Postmark bounce without a type",))
    details = _str(doc.get("Details")) or _str(doc.get("Description"))
    details = details.split(";", 1)[1].strip() if details.lower().startswith("smtp;") else details
    status, verdict = judge(status="", diagnostic=details, failed=kind in _POSTMARK_HARD)
    if kind in _POSTMARK_POLICY:
        verdict = Verdict.policy
    elif kind in _POSTMARK_SOFT and verdict == Verdict.permanent and not status.startswith("5.1"):
        verdict = Verdict.transient
    report = replace(base, recipients=(
        Reported(address=address, status=status, diagnostic=details or kind, verdict=verdict, action=kind),))
    return Webhook(events=(Event(report, body),))


# --- Mailgun -----------------------------------------------------------------------------

def verify_mailgun(doc: object, *, key: str) -> dict:
    """The event of a Mailgun webhook whose HMAC-SHA256(key, timestamp + token) verifies."""
    if not isinstance(doc, dict) or not isinstance(doc.get("signature"), dict) \
            or not isinstance(doc.get("event-data"), dict):
        raise InvalidInput("not a Mailgun webhook: it needs a signature and event-data")
    sig = doc["signature"]
    message = f"{sig.get('timestamp', '')}{sig.get('token', '')}"
    expected = hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()
    if not signing.same(str(sig.get("signature", "")).lower(), expected):
        raise Forbidden("the Mailgun signature does not verify")
    return doc["event-data"]


def read_mailgun(event: dict, raw: bytes) -> Webhook:
    name = str(event.get("event", ""))
    address = normalise_address(_str(event.get("recipient"), 320))
    message = event.get("message") if isinstance(event.get("message"), dict) else {}
    headers = message.get("headers") if isinstance(message.get("headers"), dict) else {}
    envelope = event.get("envelope") if isinstance(event.get("envelope"), dict) else {}
    base = Report(kind=InboundKind.bounce, source=MAILGUN, reporter=MAILGUN,
                  quoted_tokens=_tokens(envelope.get("sender")), message_ids=_ids(headers.get("message-id")))
    if name == MailgunEvent.complained:
        report = replace(base, kind=InboundKind.complaint, recipients=(
            Reported(address=address, status="", diagnostic="abuse", verdict=Verdict.permanent, action=name),))
        return Webhook(events=(Event(report, raw),))
    if name != MailgunEvent.failed:
        return Webhook(ignored=(name or "a Mailgun event without a name",))
    ds = event.get("delivery-status") if isinstance(event.get("delivery-status"), dict) else {}
    code = ds.get("code") if isinstance(ds.get("code"), int) else None
    diagnostic = " ".join(x for x in (_str(ds.get("message")), _str(ds.get("description"))) if x)
    reason = str(event.get("reason", ""))
    severity = str(event.get("severity", ""))
    status, verdict = judge(status=_str(ds.get("enhanced-code"), 20), diagnostic=diagnostic, code=code,
                            failed=True if severity == "permanent" else False if severity == "temporary" else None)
    if reason == "espblock":  # the receiving provider blocked our sending: our problem
        verdict = Verdict.policy
    elif reason == "suppress-bounce" and verdict != Verdict.policy:  # Mailgun knows the address bounced
        verdict = Verdict.permanent
    report = replace(base, recipients=(
        Reported(address=address, status=status, diagnostic=diagnostic or reason, verdict=verdict,
                 action=f"{name} ({severity or 'unknown'})"),))
    return Webhook(events=(Event(report, raw),))


# --- SendGrid ----------------------------------------------------------------------------

def _sendgrid_key(key: str) -> ec.EllipticCurvePublicKey:
    try:
        if "BEGIN PUBLIC KEY" in key:
            loaded = serialization.load_pem_public_key(key.encode("ascii"))
        else:
            loaded = serialization.load_der_public_key(base64.b64decode("".join(key.split()), validate=True))
    except (ValueError, binascii.Error, UnicodeEncodeError) as err:
        raise InvalidInput("NEWSLETTER_SENDGRID_PUBLIC_KEY is not a public key (base64 DER or PEM)") from err
    if not isinstance(loaded, ec.EllipticCurvePublicKey):
        raise InvalidInput("NEWSLETTER_SENDGRID_PUBLIC_KEY is not an elliptic-curve key")
    return loaded


def verify_sendgrid(body: bytes, headers: Mapping[str, str], *, key: str) -> list:
    """The events of a SendGrid Event Webhook whose ECDSA signature verifies."""
    signature = headers.get("x-twilio-email-event-webhook-signature", "")
    timestamp = headers.get("x-twilio-email-event-webhook-timestamp", "")
    public = _sendgrid_key(key)
    try:
        public.verify(base64.b64decode(signature, validate=True), timestamp.encode("utf-8") + body,
                      ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError) as err:
        raise Forbidden("the SendGrid signature does not verify") from err
    events = _json(body)
    if not isinstance(events, list):
        raise InvalidInput("a SendGrid webhook body is a JSON list of events")
    return events


# SendGrid's bounce_classification values that blame the sending, not the address.
_SENDGRID_POLICY = {"Reputation", "Content", "Frequency or Volume"}


def read_sendgrid(events: list) -> Webhook:
    found, ignored = [], []
    for event in events:
        if not isinstance(event, dict):
            continue
        name = str(event.get("event", ""))
        raw = json.dumps(event, sort_keys=True).encode("utf-8")
        address = normalise_address(_str(event.get("email"), 320))
        base = Report(kind=InboundKind.bounce, source=SENDGRID, reporter=SENDGRID,
                      message_ids=_ids(event.get("smtp-id")))
        reason = _str(event.get("reason")) or _str(event.get("response"))
        if name == SendGridEvent.spamreport or (name == SendGridEvent.dropped and "spam report" in reason.lower()):
            report = replace(base, kind=InboundKind.complaint, recipients=(
                Reported(address=address, status="", diagnostic="abuse", verdict=Verdict.permanent, action=name),))
        elif name in (SendGridEvent.bounce, SendGridEvent.deferred) or (
                name == SendGridEvent.dropped and "bounced address" in reason.lower()):
            kind = str(event.get("type", ""))
            failed = name == SendGridEvent.dropped or (name == SendGridEvent.bounce and kind != SendGridEvent.blocked)
            status, verdict = judge(status=_str(event.get("status"), 20), diagnostic=reason,
                                    failed=True if failed else False)
            if event.get("bounce_classification") in _SENDGRID_POLICY:
                verdict = Verdict.policy
            report = replace(base, recipients=(
                Reported(address=address, status=status, diagnostic=reason or name, verdict=verdict,
                         action=f"{name} ({kind})" if kind else name),))
        else:
            ignored.append(name or "an event without a name")
            continue
        found.append(Event(report, raw))
    return Webhook(events=tuple(found), ignored=tuple(dict.fromkeys(ignored)))


# --- one entry point ---------------------------------------------------------------------

def read(provider: str, body: bytes, headers: Mapping[str, str], *, secrets: WebhookSecrets,
         sns: SnsVerifier, now: datetime) -> Webhook:
    """Verify one webhook request of ``provider`` and read what it reports. ``headers``
    with lower-case names. ``NotFound`` when the provider is not set up."""
    if provider == SES:
        if not secrets.ses_topics:
            raise NotFound("the SES webhook is not set up (NEWSLETTER_SES_TOPIC_ARNS)")
        webhook = read_ses(verify_sns(body, verifier=sns, topics=secrets.ses_topics, now=now))
        if webhook.confirm_url:
            sns.check_url(webhook.confirm_url, "SubscribeURL")
        return webhook
    if provider == POSTMARK:
        if not secrets.postmark_auth:
            raise NotFound("the Postmark webhook is not set up (NEWSLETTER_POSTMARK_WEBHOOK_AUTH)")
        verify_postmark(headers.get("authorization", ""), auth=secrets.postmark_auth)
        return read_postmark(body)
    if provider == MAILGUN:
        if not secrets.mailgun_key:
            raise NotFound("the Mailgun webhook is not set up (NEWSLETTER_MAILGUN_SIGNING_KEY)")
        return read_mailgun(verify_mailgun(_json(body), key=secrets.mailgun_key), body)
    if provider == SENDGRID:
        if not secrets.sendgrid_key:
            raise NotFound("the SendGrid webhook is not set up (NEWSLETTER_SENDGRID_PUBLIC_KEY)")
        return read_sendgrid(verify_sendgrid(body, headers, key=secrets.sendgrid_key))
    raise NotFound(f"no webhook for {provider!r}; there are: {', '.join(PROVIDERS)}")
