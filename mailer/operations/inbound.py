"""One message from the MTA (``newsletter inbound`` as a pipe): a bounce or complaint
report about one of our deliveries, or a ``mailto:unsubscribe+TOKEN@`` request."""

from __future__ import annotations

from collections.abc import Mapping

from mailer.bounces import handle_inbound, is_bounce
from mailer.core.config import Settings
from mailer.core.db import engine_for
from mailer.core.errors import InvalidInput
from mailer.core.signing import InvalidToken
from mailer.operations.subscribers import unsubscribe_by_token
from subscribers.links import unsubscribe_tokens
from subscribers.models import SubscriberStatus


def receive(raw: bytes, *, environ: Mapping[str, str], settings: Settings) -> str:
    """Record what the message says; one line saying what was done. A message that is
    neither ours to record nor a valid unsubscribe is ``InvalidInput``."""
    engine = engine_for(settings.database)
    if is_bounce(raw, environ):
        return handle_inbound(engine, raw, secret_keys=settings.signing_keys, environ=environ)
    candidates = unsubscribe_tokens(raw, environ)
    if not candidates:
        raise InvalidInput("no unsubscribe+TOKEN recipient in the message")
    refused: InvalidToken | None = None
    for token in candidates:
        try:
            changed = unsubscribe_by_token(engine, token=token, settings=settings, origin="mailto")
        except InvalidToken as err:
            refused = err
            continue
        return f"{SubscriberStatus.unsubscribed}" if changed else f"already {SubscriberStatus.unsubscribed}"
    raise InvalidInput("the unsubscribe address is not valid") from refused
