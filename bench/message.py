"""Per-recipient cost of the send path's pure steps. Prints figures; asserts nothing.

    .venv/bin/python bench/message.py

- assembling one recipient's copy from a compiled template, versus building the same
  message with ``EmailMessage`` + ``set_content`` + ``add_alternative`` + ``as_bytes``;
- DKIM-signing it with ``mailer.dkim.DkimSigner`` versus dkimpy's ``dkim.sign``;
- for the example issue (whose double spaces defeat the canonicalisation's fast path):
  signing with the whole body canonicalised per message, versus from the body hash made
  of pieces canonicalised once per issue (``MessageTemplate.assemble_for_signing``),
  RSA-2048 and Ed25519.
"""

from __future__ import annotations

import email.policy
import statistics
import sys
import time
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from mailer.dkim import DkimSigner  # noqa: E402
from mailer.merge import MARKERS, personalise  # noqa: E402
from mailer.message import Recipient, compile_message  # noqa: E402

SECTION = (
    '<tr><td style="padding:16px;font-family:Helvetica,Arial,sans-serif;font-size:16px;'
    'line-height:24px;color:#333333">Lorem ipsum dolor sit amet, consectetur adipiscing elit, '
    "sed do eiusmod tempor incididunt ut labore et dolore magna aliqua — “quoted” café.</td></tr>\n"
)


def issue(size: int) -> tuple[str, str]:
    body = "".join(SECTION for _ in range(size // len(SECTION)))
    html = (
        f"<html><body><p>Hello {MARKERS['name']},</p><table>{body}</table>"
        f'<p><a href="{MARKERS["unsubscribe_url"]}">Unsubscribe</a> · '
        f'<a href="{MARKERS["preferences_url"]}">Preferences</a> · sent to {MARKERS["email"]}</p>'
        "</body></html>\n"
    )
    text = (
        f"Hello {MARKERS['name']},\n\n" + "Lorem ipsum dolor sit amet, café.\n" * (size // 3 // 35)
        + f"\nUnsubscribe: {MARKERS['unsubscribe_url']}\nPreferences: {MARKERS['preferences_url']}\n"
    )
    return html, text


def timeit(fn, n: int) -> float:
    """Median seconds per call over 5 rounds of ``n`` calls."""
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        rounds.append((time.perf_counter() - t0) / n)
    return statistics.median(rounds)


def recipient(i: int) -> Recipient:
    return Recipient(
        email=f"reader{i}@example.org",
        name=f"José Reader {i}",
        message_id=f"<{i}.c42@example.com>",
        unsubscribe_url=f"https://news.example.com/u/{i:08d}.AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
        unsubscribe_mailto=f"mailto:unsubscribe+{i:08d}.AbCdEf@news.example.com",
        preferences_url=f"https://news.example.com/p/{i:08d}.AbCdEfGhIjKl",
        date="Mon, 02 Mar 2026 09:00:00 +0000",
    )


def main() -> None:
    sender = Address("Weekly News", addr_spec="news@example.com")
    print(f"Python {sys.version.split()[0]}")
    for size in (30_000, 60_000):
        html, text = issue(size)
        t0 = time.perf_counter()
        template = compile_message(
            subject="This week: café, ünïcode and 🎉",
            from_=sender,
            html=html,
            text=text,
            list_id="weekly.news.example.com",
            list_name="Weekly News",
            feedback_id="c42:weekly:newsletter:examplecom",
        )
        compile_ms = (time.perf_counter() - t0) * 1000
        ours = timeit(lambda i: template.assemble(recipient(i)), 2000)

        def stdlib(i: int) -> bytes:
            r = recipient(i)
            values = {"name": r.name, "email": r.email, "unsubscribe_url": r.unsubscribe_url,
                      "preferences_url": r.preferences_url}
            m = EmailMessage()
            m["From"] = sender
            m["To"] = Address(r.name, addr_spec=r.email)
            m["Subject"] = "This week: café, ünïcode and 🎉"
            m["Date"] = r.date
            m["Message-ID"] = r.message_id
            m["List-Unsubscribe"] = f"<{r.unsubscribe_url}>, <{r.unsubscribe_mailto}>"
            m["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            m["List-Id"] = "Weekly News <weekly.news.example.com>"
            m["Feedback-ID"] = "c42:weekly:newsletter:examplecom"
            m.set_content(personalise(text, values, html=False), cte="quoted-printable")
            m.add_alternative(personalise(html, values, html=True), subtype="html", cte="quoted-printable")
            return m.as_bytes(policy=email.policy.SMTP)

        theirs = timeit(stdlib, 50)
        msg = template.assemble(recipient(1))
        print(
            f"{len(html) // 1000} KB html, message {len(msg) // 1000} KB: compile {compile_ms:.1f} ms once; "
            f"assemble {ours * 1e3:.3f} ms/recipient vs EmailMessage {theirs * 1e3:.2f} ms "
            f"({theirs / ours:.0f}x)"
        )

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    signer = DkimSigner("s1", "example.com", pem)
    ours = timeit(lambda i: signer.sign(msg), 200)
    print(f"DKIM rsa-sha256 2048-bit, {len(msg) // 1000} KB message: mailer.dkim {ours * 1e3:.2f} ms/msg", end="")
    try:
        import dkim
    except ImportError:
        print()
        return
    headers = [h.encode() for h in DkimSigner.SIGNED_HEADERS]
    theirs = timeit(lambda i: dkim.sign(msg, b"s1", b"example.com", pem, include_headers=headers), 10)
    print(f" vs dkimpy dkim.sign {theirs * 1e3:.2f} ms/msg ({theirs / ours:.0f}x)")
    example_issue(signer)


def example_issue(rsa_signer: DkimSigner) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from mailer.core.config import load_settings
    from mailer.dkim import relaxed_piece
    from mailer.render import render_file

    rendered = render_file(Path(__file__).resolve().parent.parent / "examples" / "china-ai-weekly-2022-06-14.md",
                           load_settings())
    kw = dict(subject=rendered.subject, from_=Address("Weekly", addr_spec="news@example.com"), html=rendered.html,
              text=rendered.text, list_id="weekly.example.com", list_name="Weekly", feedback_id="1:2:news:example")
    plain, pieces = compile_message(**kw), compile_message(**kw, body_canon=relaxed_piece)
    ed_pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    ed_signer = DkimSigner("e1", "example.com", ed_pem)
    size = len(plain.assemble(recipient(1))) // 1000
    unsigned = timeit(lambda i: plain.assemble(recipient(i)), 300)
    print(f"example issue, {size} KB message: assemble {unsigned * 1e3:.3f} ms/recipient; assemble + sign:")
    for name, signer in (("rsa-sha256 2048", rsa_signer), ("ed25519-sha256", ed_signer)):
        whole = timeit(lambda i: signer.sign(plain.assemble(recipient(i))), 200)

        def from_pieces(i, signer=signer):
            message, body_hash = pieces.assemble_for_signing(recipient(i))
            return signer.sign(message, body_hash=body_hash)

        once = timeit(from_pieces, 200)
        print(f"  {name}: body canonicalised per message {whole * 1e3:.2f} ms, "
              f"from pieces canonicalised once {once * 1e3:.2f} ms ({whole / once:.1f}x)")


if __name__ == "__main__":
    main()
