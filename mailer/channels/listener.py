"""``newsletter inbound serve``: an SMTP or LMTP server for the bounce domain.

Point the bounce domain's MX at it (SMTP, port 25 in front of it), or a local MTA's
LMTP transport (Postfix ``lmtp:inet:host:port``). It accepts recipients at the inbound
domains only (``Settings.inbound_domain_list``: the From domain, which VERP addresses
use, and ``NEWSLETTER_INBOUND_DOMAINS``) and refuses every other one at RCPT, so it is
never an open relay. Each accepted message is handed to the one handler once per
recipient; the reply after DATA comes only once the handler recorded it. If it could
not (the database is down), the reply is 451 and the sending MTA keeps the message and
tries again: nothing is lost. RFC 2033 §4.2: an LMTP server answers DATA once per
accepted recipient, in RCPT order; aiosmtpd writes the one string a handler returns,
so the replies are joined by CRLF into consecutive reply lines.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from mailer.core.config import Settings
from mailer.core.logs import event, mask_address
from mailer.operations.inbound import receive
from mailer.reports import Channel

log = logging.getLogger(__name__)

# Bounces quote the returned message; 10 MiB leaves room for one with attachments, and
# an MTA sees the limit in EHLO (RFC 1870 SIZE) before it sends.
DATA_SIZE_LIMIT = 10 * 1024 * 1024


class InboundHandler:
    """aiosmtpd handler: RCPT for the inbound domains only, DATA into the handler."""

    def __init__(self, settings: Settings, *, lmtp: bool):
        self.settings = settings
        self.lmtp = lmtp
        self.domains = frozenset(settings.inbound_domain_list)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        domain = address.rpartition("@")[2].lower().rstrip(".")
        if "@" not in address or domain not in self.domains:
            # RFC 3463 5.7.1: delivery not authorized. Not a relay, not our domain.
            return f"550 5.7.1 <{address}>: this server takes mail for {', '.join(sorted(self.domains))} only"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    def _receive(self, raw: bytes, rcpt: str) -> str:
        return receive(raw, settings=self.settings, channel=Channel.lmtp if self.lmtp else Channel.smtp,
                       envelope_to=[rcpt]).line

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        loop = asyncio.get_running_loop()
        replies = []
        for rcpt in envelope.rcpt_tos:
            try:
                line = await loop.run_in_executor(None, functools.partial(self._receive, raw, rcpt))
            except Exception:  # the database, most likely: the sending MTA will try again
                log.exception("could not record an inbound message", extra={"recipient": mask_address(rcpt)})
                replies.append(f"451 4.3.0 <{rcpt}>: could not record the message; try again later")
                continue
            # The line may quote a reported address: in full only at DEBUG (mailer.core.logs).
            event(log, "inbound message recorded", recipient=mask_address(rcpt))
            event(log, "inbound message recorded", level=logging.DEBUG, address=rcpt, detail=line)
            replies.append(f"250 2.0.0 <{rcpt}> recorded")
        if self.lmtp:
            return "\r\n".join(replies)
        # SMTP has one reply for the whole transaction: all recorded, or try again
        # (a second copy of what was recorded changes nothing).
        failed = [r for r in replies if r.startswith("451")]
        return failed[0] if failed else "250 2.0.0 recorded"


class InboundServer(Controller):
    """aiosmtpd's threaded controller, speaking LMTP or SMTP."""

    def __init__(self, settings: Settings, *, host: str, port: int, lmtp: bool):
        self.lmtp = lmtp
        super().__init__(InboundHandler(settings, lmtp=lmtp), hostname=host, port=port,
                         data_size_limit=DATA_SIZE_LIMIT, decode_data=False)

    def factory(self):
        cls = LMTP if self.lmtp else SMTP
        return cls(self.handler, **self.SMTP_kwargs)
