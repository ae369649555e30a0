"""Classification of SMTP replies: one table, one row per kind of reply seen in the wild."""

import pytest

from mailer.replies import classify

# code, text, kind, suppress, blame_sender, enhanced
CASES = [
    (250, "2.0.0 OK queued as 4F1", "sent", False, False, "2.0.0"),
    (250, "ok", "sent", False, False, None),
    (251, "User not local; will forward", "sent", False, False, None),
    (550, "5.1.1 The email account that you tried to reach does not exist.", "permanent", True, False, "5.1.1"),
    (550, "550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown", "permanent", True, False, "5.1.1"),
    (550, "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found", "permanent", True, False, "5.1.10"),
    (553, "5.1.3 Bad recipient address syntax", "permanent", True, False, "5.1.3"),
    (550, "5.1.7 Bad sender's mailbox address syntax", "permanent", False, True, "5.1.7"),
    (550, "5.1.8 Sender address rejected: Domain not found", "permanent", False, True, "5.1.8"),
    (550, "User unknown", "permanent", True, False, None),
    (550, "Requested action not taken: mailbox unavailable", "permanent", True, False, None),
    (550, "no such user here", "permanent", True, False, None),
    # X.0.0 says nothing of whose fault it is (RFC 3463 §3.1): the code and the text decide.
    (550, "5.0.0 User unknown", "permanent", True, False, "5.0.0"),
    (550, "550 5.0.0 Service unavailable", "permanent", False, False, "5.0.0"),
    (554, "5.0.0 blocked by spamhaus", "permanent", False, True, "5.0.0"),
    (554, "no such user here", "permanent", False, False, None),  # 554 is not about the mailbox
    (550, "5.7.1 Message rejected due to spam content", "permanent", False, True, "5.7.1"),
    (550, "5.7.26 Unauthenticated email is not accepted due to DMARC policy", "permanent", False, True, "5.7.26"),
    (554, "Service unavailable; client host blocked using zen.spamhaus.org", "permanent", False, True, None),
    (550, "mailbox unavailable: blocked by policy", "permanent", False, True, None),
    (421, "4.7.0 Try again later, closing connection.", "transient", False, True, "4.7.0"),
    (450, "4.2.1 The user you are trying to contact is receiving mail too quickly", "transient", False, False, "4.2.1"),
    (451, "4.3.0 Temporary lookup failure", "transient", False, False, "4.3.0"),
    (452, "4.5.3 Too many recipients", "transient", False, False, "4.5.3"),
    (450, "4.1.1 mailbox temporarily unknown", "transient", False, False, "4.1.1"),  # never suppress on 4xx
    (552, "Too many recipients", "transient", False, False, None),  # RFC 5321 §4.5.3.1.10
    (552, "4.5.3 Too many recipients", "transient", False, False, "4.5.3"),
    (552, "5.2.2 Mailbox full", "permanent", False, False, "5.2.2"),  # enhanced class wins
    (550, "4.4.5 Insufficient system storage", "transient", False, False, "4.4.5"),  # enhanced class wins
    (554, "5.0.0 Transaction failed", "permanent", False, False, "5.0.0"),
    (500, "Syntax error, command unrecognized", "permanent", False, False, None),
    (None, "Connection refused", "transient", False, False, None),
    (None, "", "transient", False, False, None),
    (None, "timed out", "transient", False, False, None),
    (354, "Start mail input", "transient", False, False, None),  # protocol confusion: try again
    (550, "5.1.1234 weird", "permanent", False, False, None),  # not an enhanced code
]


@pytest.mark.parametrize(("code", "text", "kind", "suppress", "blame", "enhanced"), CASES)
def test_classify(code, text, kind, suppress, blame, enhanced):
    v = classify(code, text)
    assert (v.kind, v.suppress, v.blame_sender, v.enhanced) == (kind, suppress, blame, enhanced)
    assert v.code == code


def test_bytes_text_and_verdict_is_frozen():
    v = classify(550, b"5.1.1 unknown user \xff")
    assert v.enhanced == "5.1.1" and v.suppress and isinstance(v.text, str)
    with pytest.raises(AttributeError):
        v.kind = "sent"  # type: ignore[misc]
