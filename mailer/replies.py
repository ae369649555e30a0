"""What an SMTP reply means for a delivery, decided in one place (as GNU Mailman does).

- RFC 5321 §4.2.1: 2yz is success, 4yz a transient failure, 5yz a permanent one.
  No reply at all (refused connection, timeout, a drop mid-transaction) is transient.
- RFC 5321 §4.5.3.1.10: 552 "too many recipients" was long sent where 452 was meant, and
  clients SHOULD treat it as temporary; Mailman treats every bare 552 so. We do too.
- RFC 3463 (with RFC 2034): when the text starts with an enhanced status code
  ``class.subject.detail``, its class (2, 4 or 5) decides between transient and permanent,
  and its subject says whose fault it is: X.1.x addressing (the mailbox is bad, except
  X.1.7/X.1.8 which are about the *sender's* address), X.7.x security or policy (spam
  blocks, reputation, DMARC: the sender is to blame, not the subscriber). X.0.0 names no
  subject, so the text decides whose fault it is, as it does without an enhanced code.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Kind(enum.StrEnum):
    sent = "sent"  # 2yz: the relay has it
    transient = "transient"  # try again later
    permanent = "permanent"  # trying again will not help

_ENHANCED = re.compile(r"^\s*(?:[245]\d\d[ -])?\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")
# Without an enhanced code, the text is all there is. Kept short and specific: a wrong
# "bad address" verdict suppresses a subscriber for good.
_BAD_MAILBOX = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient)|mailbox unavailable"
    r"|mailbox not found|unknown recipient|recipient unknown|user not found"
    r"|(?:address|mailbox|account) does not exist|invalid recipient|recipient address rejected",
    re.IGNORECASE,
)
_POLICY = re.compile(
    r"spam|blocked|block ?list|black ?list|\brbl\b|dnsbl|spamhaus|reputation|policy"
    r"|dmarc|\bspf\b|\bdkim\b|rate limit|too many messages",
    re.IGNORECASE,
)
# RFC 3463 §3.2: X.1.7 bad sender's mailbox syntax, X.1.8 bad sender's system address.
_SENDER_ADDRESS_DETAILS = {"7", "8"}


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Kind
    suppress: bool  # the address itself is bad: never send to it again
    blame_sender: bool  # a policy or reputation rejection: not the subscriber's fault
    enhanced: str | None  # "5.1.1"
    code: int | None
    text: str

    @property
    def reply_class(self) -> str:
        """What kind of reply this was, in a word (a metrics label): accepted,
        bad_address, policy, permanent or transient."""
        if self.kind == Kind.sent:
            return "accepted"
        return "bad_address" if self.suppress else "policy" if self.blame_sender else str(self.kind)


def classify(code: int | None, text: str | bytes = "") -> Verdict:
    """Classify one SMTP reply (``code`` None: no reply, e.g. a connection error)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.strip()
    m = _ENHANCED.match(text)
    enhanced = ".".join(m.groups()) if m else None

    if code is not None and 200 <= code < 300:
        return Verdict(Kind.sent, False, False, enhanced, code, text)

    if enhanced and enhanced[0] in "45":
        kind = Kind.permanent if enhanced[0] == "5" else Kind.transient
    elif code is not None and 500 <= code < 600 and code != 552:
        kind = Kind.permanent
    else:
        # 4yz, a bare 552, no reply, or a code outside RFC 5321's classes (a broken server).
        kind = Kind.transient

    if enhanced and not enhanced.endswith(".0.0"):
        _, subject, detail = enhanced.split(".")
        blame_sender = subject == "7" or (subject == "1" and detail in _SENDER_ADDRESS_DETAILS)
        bad_mailbox = subject == "1" and detail not in _SENDER_ADDRESS_DETAILS
    else:
        # No enhanced code, or X.0.0 ("other undefined status", RFC 3463 §3.1), which
        # says nothing about whose fault it is: "550 5.0.0 User unknown" is a bad
        # mailbox all the same. The reply code and the text decide.
        blame_sender = bool(_POLICY.search(text))
        bad_mailbox = code in (550, 551, 553) and not blame_sender and bool(_BAD_MAILBOX.search(text))

    return Verdict(kind, kind == Kind.permanent and bad_mailbox, blame_sender, enhanced, code, text)
