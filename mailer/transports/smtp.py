"""SMTP relay transport: one connection kept open across sends.

A new connection per message halves the send rate (FACTS.md), so the connection stays
open and is re-established once when the server drops it. When the relay offers
PIPELINING (RFC 2920), MAIL, RCPT and DATA go in one write: two round trips a message
(the envelope, then the content) instead of four; without it, one command at a time.
When the caller names the envelope that follows (``send(..., then=...)``), it goes in
the same write as the content and its end of data (RFC 2920 §3.1 allows the content as
the first "command" of a group): one round trip a message. Only the envelope goes
early, never content, so what can be lost or repeated is unchanged.
The transaction is ours, not ``smtplib.SMTP.sendmail``'s (which also parses every
address again), so we know how far it got when something breaks:

- broken before the message content was sent (MAIL, RCPT, the DATA command itself, or a
  421 "closing" reply to one of them, RFC 5321 §3.8): the server has nothing, so
  reconnect and try once more;
- broken after the content was sent but before the final reply: the server may have
  accepted it. We do not resend; the result has ``code=None`` and the engine decides
  (at-most-once, RFC 5321 §6.1 leaves duplicates to the sender to avoid).
"""

from __future__ import annotations

import re
import smtplib
import ssl
from typing import Literal
from urllib.parse import unquote, urlsplit

from mailer.core.errors import ConfigurationError, InvalidInput, TransientDeliveryError
from mailer.transports.base import SendResult

Security = Literal["none", "ssl", "starttls"]
_SCHEMES: dict[str, tuple[Security, int]] = {
    "smtp": ("none", 25),
    "smtps": ("ssl", 465),  # RFC 8314 implicit TLS
    "smtp+starttls": ("starttls", 587),  # RFC 3207
}
_UNSAFE_ADDRESS = re.compile(r"[\x00-\x20\x7f<>]")
_LEADING_DOT = re.compile(rb"(?m)^\.")
# Finding out whether any line starts with "." at all: this regex is 3x faster than
# ``b"\n." in data`` over a 50 KB message with a line break every 60 bytes (46 -> 14 µs).
_DOT_AFTER_BREAK = re.compile(rb"\n\.")


class _Retry(Exception):
    """The transaction broke before the server could have the message."""

    def __init__(self, code: int | None, reply: str):
        super().__init__(reply)
        self.code = code
        self.reply = reply


def _text(resp: bytes | str) -> str:
    if isinstance(resp, bytes):
        resp = resp.decode("utf-8", "replace")
    return " ".join(resp.split())  # multi-line replies on one line


def _one_line(err: BaseException) -> str:
    if isinstance(err, smtplib.SMTPResponseException):
        return f"{err.smtp_code} {_text(err.smtp_error)}"
    return " ".join(str(err).split()) or type(err).__name__


class SmtpTransport:
    name = "smtp"
    pipelines_ahead = True  # send() takes ``then``, the envelope that follows

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        security: Security = "none",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ):
        self.host = host
        self.port = port or {"none": 25, "ssl": 465, "starttls": 587}[security]
        self.security = security
        self.username = username
        self.password = password or ""
        self.timeout = timeout
        # smtplib's own default context verifies nothing; ours checks the relay's certificate.
        self.ssl_context = ssl_context
        self.local_hostname = local_hostname
        self._conn: smtplib.SMTP | None = None
        self._needs_rset = False
        # The envelope (sender, recipient) written after the last message's end of data,
        # its three replies not read yet; the server waits for that message's content.
        self._presented: tuple[str, str] | None = None

    @classmethod
    def from_url(cls, url: str, timeout: float = 30.0, *, ssl_context: ssl.SSLContext | None = None) -> "SmtpTransport":
        """``smtp://``, ``smtps://`` or ``smtp+starttls://``, with an optional percent-encoded
        ``user:password@`` for AUTH."""
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise ConfigurationError("NEWSLETTER_SMTP_URL: use smtp://, smtps:// or smtp+starttls://host[:port]")
        security, default_port = _SCHEMES[parts.scheme]
        try:
            port = parts.port or default_port
        except ValueError as err:
            raise ConfigurationError(f"NEWSLETTER_SMTP_URL: bad port: {err}") from err
        return cls(
            parts.hostname,
            port,
            security=security,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            timeout=timeout,
            ssl_context=ssl_context,
        )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    # --- connection ------------------------------------------------------------------

    def open(self) -> None:
        if self._conn is None:
            self._conn = self._connect()

    def _connect(self) -> smtplib.SMTP:
        context = self.ssl_context or ssl.create_default_context()
        conn: smtplib.SMTP | None = None
        try:
            if self.security == "ssl":
                conn = smtplib.SMTP_SSL(self.host, self.port, self.local_hostname, timeout=self.timeout, context=context)
            else:
                conn = smtplib.SMTP(self.host, self.port, self.local_hostname, timeout=self.timeout)
            conn.ehlo()
            if self.security == "starttls":
                conn.starttls(context=context)
                conn.ehlo()
            if self.username:
                conn.login(self.username, self.password)
        except smtplib.SMTPResponseException as err:  # a login refused, or the session
            _close_quietly(conn)
            what = (f"the login for {self.username!r} (NEWSLETTER_SMTP_URL)"
                    if isinstance(err, smtplib.SMTPAuthenticationError) else "the session")
            raise TransientDeliveryError(f"SMTP relay {self.where} refused {what}: {_one_line(err)}",
                                         code=err.smtp_code, reply=_text(err.smtp_error)) from err
        except (OSError, smtplib.SMTPException) as err:  # refused, timeout, DNS, TLS, no STARTTLS
            _close_quietly(conn)
            raise TransientDeliveryError(f"cannot reach SMTP relay {self.where}: {_one_line(err)}") from err
        self._needs_rset = False
        self._presented = None
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._presented = None
        _close_quietly(conn)

    def close(self) -> None:
        if self._presented is not None:
            # The server may be waiting for content after a 354: a QUIT now would be
            # read as message text. Closing the socket makes it discard the transaction.
            self._drop()
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.quit()
            except (OSError, smtplib.SMTPException):
                _close_quietly(conn)

    def __enter__(self) -> "SmtpTransport":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- sending ---------------------------------------------------------------------

    def send(self, envelope_from: str, recipient: str, message: bytes, *,
             then: tuple[str, str] | None = None, dot_free: bool = False) -> SendResult:
        """``then``: the (envelope sender, recipient) of the message the caller sends next
        on this transport, written behind this message's end of data when the relay
        pipelines. A next ``send`` for another envelope, or ``close``, drops the connection
        (a server waiting for content cannot be told otherwise), so name only the one that
        follows. ``dot_free``: the caller knows no line of ``message`` starts with "."
        (``MessageTemplate.assemble_for_relay``), so the transparency pass (a scan of the
        whole message, RFC 5321 §4.5.2) is skipped."""
        _check_address(envelope_from, recipient)
        if then is not None and not _safe(*then):
            then = None  # its own send refuses it with the reason
        if self._presented is not None and self._presented != (envelope_from, recipient):
            self._drop()
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._connect()
            try:
                return self._transaction(self._conn, envelope_from, recipient, message, then, dot_free)
            except _Retry as retry:
                self._drop()
                if attempt == 2:
                    if retry.code is None:
                        raise TransientDeliveryError(
                            f"lost the connection to SMTP relay {self.where} twice: {retry.reply}"
                        ) from retry
                    return SendResult(retry.code, retry.reply)
        raise AssertionError("unreachable")

    def _transaction(self, conn: smtplib.SMTP, envelope_from: str, recipient: str, message: bytes,
                     then: tuple[str, str] | None, dot_free: bool = False) -> SendResult:
        pipelining = conn.has_extn("pipelining")
        if self._presented is not None:
            refused = self._presented_envelope(conn)
        elif pipelining:
            refused = self._pipelined_envelope(conn, envelope_from, recipient)
        else:
            refused = self._lockstep_envelope(conn, envelope_from, recipient)
        if refused is not None:
            self._needs_rset = True
            return refused
        # From here on the server may end up with the message: no retry.
        data = message if message.endswith(b"\r\n") else message + b"\r\n"
        if data.startswith(b".") or (not dot_free and _DOT_AFTER_BREAK.search(data)):
            data = _LEADING_DOT.sub(b"..", data)  # RFC 5321 §4.5.2 transparency
        following = b""
        if then is not None and pipelining:
            # After the end of data the transaction is over whatever its reply (RFC 5321
            # §4.1.1.4), so the next MAIL needs no RSET.
            following = ("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % then).encode("ascii")
        try:
            _send_all(conn, data, b".\r\n" + following)
            code, resp = conn.getreply()
        except (OSError, smtplib.SMTPException) as err:
            self._drop()
            return SendResult(None, f"connection lost after the message was sent, delivery unknown: {_one_line(err)}")
        if code == 421:
            self._drop()
        else:
            if following:
                self._presented = then
            if not 200 <= code < 300 and not following:
                self._needs_rset = True
        return SendResult(code, _text(resp))

    def _presented_envelope(self, conn: smtplib.SMTP) -> SendResult | None:
        """The replies to the envelope written behind the last message: the refusal, or
        None to go on. Anything but a clean MAIL (a server that wanted an RSET after a
        refused message, say) is retried from a new connection: no content went yet."""
        self._presented = None
        replies = []
        try:
            for _ in range(3):
                code, resp = conn.getreply()
                if code in (421, -1):
                    raise _Retry(code if code == 421 else None, _text(resp))
                replies.append((code, resp))
        except (OSError, smtplib.SMTPException) as err:
            raise _Retry(None, _one_line(err)) from err
        (mail, mail_text), (rcpt, rcpt_text), (data, data_text) = replies
        if mail != 250:
            raise _Retry(None, f"{mail} {_text(mail_text)}")
        refused = (SendResult(rcpt, _text(rcpt_text)) if rcpt not in (250, 251, 252)
                   else SendResult(data, _text(data_text)) if data != 354 else None)
        if refused is not None and data == 354:
            self._drop()  # as in _pipelined_envelope
        return refused

    def _lockstep_envelope(self, conn: smtplib.SMTP, envelope_from: str, recipient: str) -> SendResult | None:
        """MAIL, RCPT and DATA one round trip each; the refusal, or None to go on."""
        if self._needs_rset:
            # RFC 5321 §4.1.1.5: clear the failed transaction's state before the next one.
            _step(conn.rset)
            self._needs_rset = False
        for command, ok in ((f"MAIL FROM:<{envelope_from}>", (250,)), (f"RCPT TO:<{recipient}>", (250, 251, 252)),
                            ("DATA", (354,))):
            code, reply = _step(conn.docmd, command)
            if code not in ok:
                return SendResult(code, reply)
        return None

    def _pipelined_envelope(self, conn: smtplib.SMTP, envelope_from: str, recipient: str) -> SendResult | None:
        """RFC 2920: (RSET,) MAIL, RCPT and DATA in one write, their replies read in
        order: one round trip for the envelope instead of three or four. The addresses
        were checked for anything unsafe by ``send``; no ``smtplib`` parsing per message.
        The refusal (the first command that failed), or None to go on."""
        commands = ["MAIL FROM:<%s>" % envelope_from, "RCPT TO:<%s>" % recipient, "DATA"]
        if self._needs_rset:
            commands.insert(0, "RSET")
        replies = []
        try:
            conn.send(("\r\n".join(commands) + "\r\n").encode("ascii"))
            for _ in commands:
                code, resp = conn.getreply()
                if code in (421, -1):  # "closing": the rest of the replies never come
                    raise _Retry(code if code == 421 else None, _text(resp))
                replies.append((code, resp))
        except (OSError, smtplib.SMTPException) as err:
            raise _Retry(None, _one_line(err)) from err
        if self._needs_rset:
            replies.pop(0)
            self._needs_rset = False
        (mail, mail_text), (rcpt, rcpt_text), (data, data_text) = replies
        refused = (SendResult(mail, _text(mail_text)) if mail != 250
                   else SendResult(rcpt, _text(rcpt_text)) if rcpt not in (250, 251, 252)
                   else SendResult(data, _text(data_text)) if data != 354 else None)
        if refused is not None and data == 354:
            # The server wants the message although MAIL or RCPT failed (RFC 2920 §3.1
            # says it must not): nothing can end DATA without sending a message, so drop
            # the connection instead.
            self._drop()
        return refused


def _send_all(conn: smtplib.SMTP, *pieces: bytes) -> None:
    """``conn.send`` of the pieces joined, in one write where the socket takes it all,
    without joining them: no copy of a 50 KB message per recipient just to add the end
    of data behind it."""
    if conn.sock is None:
        raise smtplib.SMTPServerDisconnected("please run connect() first")
    if isinstance(conn.sock, ssl.SSLSocket):  # TLS has no scatter-gather write
        conn.sock.sendall(b"".join(pieces))
        return
    views = [memoryview(p) for p in pieces if p]
    while views:
        sent = conn.sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


def _safe(*addresses: str) -> bool:
    return all(address.isascii() and not _UNSAFE_ADDRESS.search(address) for address in addresses)


def _check_address(envelope_from: str, recipient: str) -> None:
    for what, address in (("envelope sender", envelope_from), ("recipient", recipient)):
        if not _safe(address):  # no SMTPUTF8 here
            raise InvalidInput(f"{what} {address!r} cannot go into an SMTP command")


def _step(command, *args) -> tuple[int, str]:
    """One command before the content is sent: a drop or a 421 means "reconnect, retry"."""
    try:
        code, resp = command(*args)
    except (OSError, smtplib.SMTPException) as err:
        raise _Retry(None, _one_line(err)) from err
    if code == 421 or code == -1:  # smtplib reports a garbled/missing reply as -1
        raise _Retry(code if code == 421 else None, _text(resp))
    return code, _text(resp)


def _close_quietly(conn: smtplib.SMTP | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except OSError:
            pass
