"""``/webhooks/{provider}``: bounce and complaint events from the relay providers (Amazon
SES through SNS, Postmark, Mailgun, SendGrid), each into the one inbound handler
(``mailer.operations.inbound.receive_webhook``).

No session, no token: each request proves its sender with the provider's own signature
(``mailer.webhooks``), checked before anything is read; one that does not verify is 403
and changes nothing. A provider that is not set up is 404. 200 only once every event
was recorded (or kept as unprocessed); if the database fails the answer is 500 and the
provider delivers the events again, which records nothing twice.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from mailer import webhooks
from mailer.core.errors import InvalidInput
from mailer.core.logs import event
from mailer.models import InboundStatus
from mailer.operations import inbound
from mailer.web.deps import SettingsDep

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

_SNS = webhooks.SnsVerifier()
log = logging.getLogger(__name__)


def sns_verifier() -> webhooks.SnsVerifier:
    """Where SNS signing certificates may come from (Amazon SNS hosts, verified TLS).
    Tests override this dependency with their own host and CA; production never does."""
    return _SNS


SnsDep = Annotated[webhooks.SnsVerifier, Depends(sns_verifier)]


@router.post("/{provider}", summary="A relay provider's bounce and complaint events")
async def webhook(provider: str, request: Request, settings: SettingsDep, sns: SnsDep) -> dict:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > webhooks.MAX_BODY:
            event(log, "webhook refused", level=logging.WARNING, provider=provider, reason="the body is too large")
            raise InvalidInput("the webhook body is too large")
    try:
        result = await run_in_threadpool(inbound.receive_webhook, provider, body, dict(request.headers),
                                         settings=settings, sns=sns)
    except InvalidInput as err:  # a forged signature, a provider not set up, a body that is not its format
        event(log, "webhook refused", level=logging.WARNING, provider=provider, reason=str(err),
              status=type(err).__name__)
        raise
    return {"detail": result.line, "recorded": len(result.received),
            "unprocessed": sum(1 for r in result.received if r.stored_as == InboundStatus.unprocessed)}
