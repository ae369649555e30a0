"""Test sends: the real rendered message with real headers, to a few addresses, outside
any campaign and its counters. Marked as a test in the subject and a header."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from mailer.core.config import Settings
from mailer.core.errors import InvalidInput, ServiceUnavailable, TransientDeliveryError
from mailer.message import Recipient, compile_message, verp_address
from mailer.render import RenderedIssue

MAX_TEST_RECIPIENTS = 20


@dataclass(frozen=True)
class TestResult:
    address: str
    code: int | None
    reply: str

    @property
    def ok(self) -> bool:
        return self.code is not None and 200 <= self.code < 300


def send_test(rendered: RenderedIssue, addresses: list[str], settings: Settings) -> list[TestResult]:
    from email_validator import EmailNotValidError, validate_email

    from mailer.transports import transport_from_settings

    if not addresses:
        raise InvalidInput("give at least one address to send the test to")
    if len(addresses) > MAX_TEST_RECIPIENTS:
        raise InvalidInput(f"at most {MAX_TEST_RECIPIENTS} test recipients")
    checked = []
    for raw in addresses:
        try:
            checked.append(validate_email(raw, check_deliverability=False).normalized)
        except EmailNotValidError as err:
            raise InvalidInput(f"not an address: {raw!r}: {err}") from err
    domain = settings.sending_domain
    template = compile_message(
        subject=f"[TEST] {rendered.subject}", from_=settings.from_address, html=rendered.html, text=rendered.text,
        list_id=f"test.{domain}", list_name="Test send", feedback_id=f"test:0:newsletter:{domain}",
        extra_headers={"X-Newsletter-Test": "yes"},
    )
    transport = transport_from_settings(settings.smtp_url, settings.outbox_dir, settings.smtp_timeout)
    results = []
    try:
        for address in checked:
            message = template.assemble(Recipient(
                email=address, name="", message_id=f"<test.{uuid.uuid4().hex}@{domain}>",
                unsubscribe_url=f"{settings.base_url}/subscribe", unsubscribe_mailto=f"mailto:unsubscribe@{domain}",
                preferences_url=f"{settings.base_url}/subscribe",
            ))
            try:
                r = transport.send(verp_address("test", domain), address, message)
            except TransientDeliveryError as err:  # the relay does not answer at all
                raise ServiceUnavailable(str(err)) from err
            results.append(TestResult(address, r.code, r.reply))
    finally:
        transport.close()
    return results
