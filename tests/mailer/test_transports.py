"""Transports against a real SMTP server (aiosmtpd), the outbox folder and the memory one."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from pathlib import Path

import pytest

from mailer.core.errors import InvalidInput, TransientDeliveryError
from mailer.replies import classify
from mailer.transports import (
    MemoryTransport,
    OutboxTransport,
    SendResult,
    SmtpTransport,
    Transport,
    transport_from_settings,
)
from tests.support.smtpd import SmtpSink, free_port, stop_quietly

FROM = "bounces+d1@example.com"


def message(n: int = 0, rcpt: str = "ana@example.org") -> bytes:
    return (
        f"From: News <news@example.com>\r\nTo: {rcpt}\r\nSubject: Issue {n}\r\n"
        f"Message-ID: <{n}@example.com>\r\n\r\nHello {n}\r\n.leading dot\r\n.\r\nend\r\n"
    ).encode()


@pytest.fixture(params=[True, False], ids=["pipelining", "lockstep"])
def smtp_sink(request):
    """The sink with and without PIPELINING in its EHLO: each transaction test runs
    against both ways of sending the envelope."""
    sink = SmtpSink(pipelining=request.param).start()
    try:
        yield sink
    finally:
        stop_quietly(sink)


def test_all_transports_share_the_interface(tmp_path):
    for t in (SmtpTransport("127.0.0.1", 1), OutboxTransport(tmp_path), MemoryTransport()):
        assert isinstance(t, Transport) and t.name


def test_twenty_messages_over_one_connection(smtp_sink):
    transport = SmtpTransport.from_url(smtp_sink.url, timeout=10)
    try:
        results = [transport.send(FROM, f"r{i}@example.org", message(i, f"r{i}@example.org")) for i in range(20)]
    finally:
        transport.close()
    assert all(r.code == 250 for r in results), results
    received = smtp_sink.wait_for(20)
    assert len(received) == 20 and smtp_sink.sessions == 1
    assert {m.session for m in received} == {1}
    assert smtp_sink.count_by_rcpt() == {f"r{i}@example.org": 1 for i in range(20)}
    first = email.message_from_bytes(received[0].content, policy=email.policy.default)
    assert first["Subject"] == "Issue 0" and received[0].mail_from == FROM
    assert ".leading dot\r\n.\r\nend" in received[0].content.decode()  # dot transparency round trip


def test_reconnects_after_the_server_comes_back(smtp_sink):
    transport = SmtpTransport.from_url(smtp_sink.url, timeout=10)
    try:
        assert transport.send(FROM, "a@example.org", message(1)).code == 250
        smtp_sink.stop()  # drops the open connection
        with pytest.raises(TransientDeliveryError) as err:
            transport.send(FROM, "b@example.org", message(2))
        assert "\n" not in str(err.value)
        smtp_sink.start()
        assert transport.send(FROM, "c@example.org", message(3)).code == 250
        assert transport.send(FROM, "d@example.org", message(4)).code == 250
    finally:
        transport.close()
    assert smtp_sink.count_by_rcpt() == {"a@example.org": 1, "c@example.org": 1, "d@example.org": 1}
    assert smtp_sink.sessions == 2


def test_stale_connection_is_replaced_transparently(smtp_sink):
    transport = SmtpTransport.from_url(smtp_sink.url, timeout=10)
    try:
        assert transport.send(FROM, "a@example.org", message(1)).code == 250
        smtp_sink.stop()
        smtp_sink.start()  # the old connection is dead; the send reconnects once and succeeds
        assert transport.send(FROM, "b@example.org", message(2)).code == 250
    finally:
        transport.close()
    assert smtp_sink.count_by_rcpt() == {"a@example.org": 1, "b@example.org": 1}


def test_rejected_recipient_is_a_result_not_an_exception(smtp_sink):
    smtp_sink.reject["gone@example.org"] = (550, "5.1.1 <gone@example.org>: Recipient address rejected: User unknown")
    smtp_sink.reject["later@example.org"] = (451, "4.3.0 try later")
    transport = SmtpTransport.from_url(smtp_sink.url, timeout=10)
    try:
        gone = transport.send(FROM, "gone@example.org", message(1))
        later = transport.send(FROM, "later@example.org", message(2))
        ok = transport.send(FROM, "ok@example.org", message(3))  # after RSET, same connection
    finally:
        transport.close()
    assert gone.code == 550 and gone.reply.startswith("5.1.1")
    assert classify(gone.code, gone.reply).suppress
    assert later.code == 451 and classify(later.code, later.reply).kind == "transient"
    assert ok.code == 250 and ok.accepted
    assert smtp_sink.count_by_rcpt() == {"ok@example.org": 1} and smtp_sink.sessions == 1


def test_drop_after_data_is_unknown_and_not_resent(smtp_sink):
    smtp_sink.drop_after_data = True
    transport = SmtpTransport.from_url(smtp_sink.url, timeout=10)
    try:
        result = transport.send(FROM, "a@example.org", message(1))
        assert result.code is None and "unknown" in result.reply
        smtp_sink.drop_after_data = False
        assert transport.send(FROM, "b@example.org", message(2)).code == 250
    finally:
        transport.close()
    assert smtp_sink.count_by_rcpt() == {"b@example.org": 1}


def test_auth_with_user_and_password_from_the_url():
    with SmtpSink(auth=True) as sink:
        assert "%20" in sink.url  # percent-encoded password
        transport = SmtpTransport.from_url(sink.url, timeout=10)
        try:
            assert transport.send(FROM, "a@example.org", message(1)).code == 250
        finally:
            transport.close()
        wrong = SmtpTransport.from_url(sink.url.replace("s3cret", "wrong"), timeout=10)
        with pytest.raises(TransientDeliveryError, match="refused the login") as err:
            wrong.send(FROM, "a@example.org", message(2))
        assert err.value.code == 535
        assert sink.count_by_rcpt() == {"a@example.org": 1}


@pytest.mark.parametrize("tls", ["starttls", "smtps"])
def test_tls(tls, tmp_path):
    with SmtpSink(tls=tls, auth=True, cert_folder=tmp_path) as sink:
        transport = SmtpTransport.from_url(sink.url, timeout=10, ssl_context=sink.client_context())
        try:
            assert transport.send(FROM, "a@example.org", message(1)).code == 250
            assert transport.send(FROM, "b@example.org", message(2)).code == 250
        finally:
            transport.close()
        assert sink.sessions == 1 and len(sink.messages) == 2
        # Without trusting the self-signed certificate the connection is refused.
        untrusting = SmtpTransport.from_url(sink.url, timeout=10)
        with pytest.raises(TransientDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusting.open()


def test_unreachable_relay_is_a_one_line_transient_error():
    transport = SmtpTransport.from_url(f"smtp://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(TransientDeliveryError) as err:
        transport.send(FROM, "a@example.org", message(1))
    assert "cannot reach SMTP relay 127.0.0.1" in str(err.value) and "\n" not in str(err.value)
    assert err.value.code is None


def test_from_url():
    t = SmtpTransport.from_url("smtp+starttls://us%40er:p%3Ass@relay.example.com", timeout=5)
    assert (t.host, t.port, t.security, t.username, t.password, t.timeout) == (
        "relay.example.com", 587, "starttls", "us@er", "p:ss", 5
    )
    assert SmtpTransport.from_url("smtps://relay.example.com").port == 465
    assert SmtpTransport.from_url("smtp://relay.example.com:2525").port == 2525


def test_transport_from_settings(tmp_path):
    assert isinstance(transport_from_settings(None, tmp_path, 5), OutboxTransport)
    assert isinstance(transport_from_settings("smtp://relay.example.com", tmp_path, 5), SmtpTransport)


def test_outbox_writes_one_parseable_file_per_send(tmp_path: Path):
    outbox = OutboxTransport(tmp_path / "outbox")
    outbox.open()
    first = outbox.send(FROM, "ana@example.org", message(1))
    second = outbox.send(FROM, "ana@example.org", message(1))  # a duplicate send stays visible
    outbox.close()
    files = sorted((tmp_path / "outbox").glob("*.eml"))
    assert first.code == second.code == 250 and first.reply != second.reply
    assert len(files) == 2 and not list((tmp_path / "outbox").glob(".*"))
    msg = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert msg["Return-Path"] == f"<{FROM}>"
    assert msg["Delivered-To"] == msg["X-Original-To"] == "ana@example.org"
    assert msg["Subject"] == "Issue 1"


def test_outbox_strips_line_breaks_from_envelope(tmp_path: Path):
    outbox = OutboxTransport(tmp_path)
    outbox.send(FROM, "a@example.org\r\nBcc: x@y", message(1))
    msg = email.message_from_bytes(next(tmp_path.glob("*.eml")).read_bytes(), policy=email.policy.default)
    assert msg["Bcc"] is None


def test_memory_transport():
    t = MemoryTransport()
    t.replies["gone@example.org"] = SendResult(550, "5.1.1 unknown")
    t.replies["down@example.org"] = TransientDeliveryError("relay down")
    assert t.send(FROM, "ok@example.org", b"m").code == 250
    assert t.send(FROM, "gone@example.org", b"m").code == 550
    with pytest.raises(TransientDeliveryError):
        t.send(FROM, "down@example.org", b"m")
    assert t.outbox == [(FROM, "ok@example.org", b"m")]


def test_pipelined_envelope_is_one_write_before_any_reply():
    """A server that answers MAIL only once RCPT and DATA are in too: a client waiting
    for each reply would time out; a pipelining client gets its message through."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    seen: list[bytes] = []

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            reader = conn.makefile("rb")
            conn.sendall(b"220 test\r\n")
            reader.readline()  # EHLO
            conn.sendall(b"250-test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            envelope = [reader.readline() for _ in range(3)]  # no reply until all three
            seen.extend(envelope)
            conn.sendall(b"250 ok\r\n250 ok\r\n354 go on\r\n")
            while reader.readline() not in (b".\r\n", b""):
                pass
            conn.sendall(b"250 queued\r\n")
            reader.readline()  # QUIT
            conn.sendall(b"221 bye\r\n")

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    transport = SmtpTransport("127.0.0.1", listener.getsockname()[1], timeout=5)
    try:
        result = transport.send(FROM, "a@example.org", message(1))
    finally:
        transport.close()
        server.join(timeout=10)
        listener.close()
    assert result.code == 250, result
    assert seen == [f"MAIL FROM:<{FROM}>\r\n".encode(), b"RCPT TO:<a@example.org>\r\n", b"DATA\r\n"]


def test_refused_recipient_then_the_next_message_on_the_same_connection(smtp_sink):
    """RCPT refused: DATA is answered 503 too, every reply is read, and the connection
    stays in step for the next message."""
    smtp_sink.refuse_all = (451, "4.7.1 slow down")
    transport = SmtpTransport.from_url(smtp_sink.url, timeout=10)
    try:
        refused = transport.send(FROM, "a@example.org", message(1))
        smtp_sink.refuse_all = None
        ok = transport.send(FROM, "b@example.org", message(2))
    finally:
        transport.close()
    assert refused.code == 451 and ok.code == 250
    assert smtp_sink.count_by_rcpt() == {"b@example.org": 1} and smtp_sink.sessions == 1


def test_an_address_that_needs_smtputf8_is_refused_before_the_relay(smtp_sink):
    transport = SmtpTransport.from_url(smtp_sink.url, timeout=10)
    try:
        with pytest.raises(InvalidInput, match="SMTP command"):
            transport.send(FROM, "jörg@example.org", message(1))
        assert transport.send(FROM, "b@example.org", message(2)).code == 250
    finally:
        transport.close()


def _chain(transport: SmtpTransport, rcpts: list[str]) -> list[SendResult]:
    """Send to each in turn, naming the next one's envelope as ``then`` (as a window does)."""
    results = []
    for i, rcpt in enumerate(rcpts):
        then = (FROM, rcpts[i + 1]) if i + 1 < len(rcpts) else None
        results.append(transport.send(FROM, rcpt, message(i, rcpt), then=then))
    return results


def test_next_envelope_goes_behind_the_content_one_round_trip_a_message():
    """A server that answers the end of data only once the next envelope is in too: a
    client waiting for that reply before writing MAIL would time out."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    seen: list[bytes] = []

    def content(reader) -> None:
        while reader.readline() not in (b".\r\n", b""):
            pass

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            reader = conn.makefile("rb")
            conn.sendall(b"220 test\r\n")
            reader.readline()  # EHLO
            conn.sendall(b"250-test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            seen.extend(reader.readline() for _ in range(3))
            conn.sendall(b"250 ok\r\n250 ok\r\n354 go on\r\n")
            content(reader)
            seen.extend(reader.readline() for _ in range(3))  # no reply until the next envelope is in
            conn.sendall(b"250 first queued\r\n250 ok\r\n250 ok\r\n354 go on\r\n")
            content(reader)
            conn.sendall(b"250 second queued\r\n")
            reader.readline()  # QUIT
            conn.sendall(b"221 bye\r\n")

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    transport = SmtpTransport("127.0.0.1", listener.getsockname()[1], timeout=5)
    try:
        results = _chain(transport, ["a@example.org", "b@example.org"])
    finally:
        transport.close()
        server.join(timeout=10)
        listener.close()
    assert [(r.code, r.reply) for r in results] == [(250, "first queued"), (250, "second queued")]
    assert seen[3:] == [f"MAIL FROM:<{FROM}>\r\n".encode(), b"RCPT TO:<b@example.org>\r\n", b"DATA\r\n"]


def test_a_chain_of_messages_each_delivered_once(smtp_sink):
    smtp_sink.reject["gone@example.org"] = (550, "5.1.1 User unknown")
    rcpts = [f"r{i}@example.org" for i in range(5)] + ["gone@example.org"] + [f"s{i}@example.org" for i in range(5)]
    transport = SmtpTransport.from_url(smtp_sink.url, timeout=10)
    try:
        results = _chain(transport, rcpts)
    finally:
        transport.close()
    assert [r.code for r in results] == [250] * 5 + [550] + [250] * 5
    expected = {r: 1 for r in rcpts if r != "gone@example.org"}
    assert smtp_sink.count_by_rcpt() == expected and smtp_sink.sessions == 1
    assert len(smtp_sink.messages) == 10  # and nothing else, no empty message


def test_an_envelope_named_but_not_followed_costs_the_connection_not_a_message(smtp_sink):
    transport = SmtpTransport.from_url(smtp_sink.url, timeout=10)
    try:
        assert transport.send(FROM, "a@example.org", message(1), then=(FROM, "b@example.org")).code == 250
        # The caller changed its mind (b was skipped): the server waits for b's content.
        assert transport.send(FROM, "c@example.org", message(2), then=(FROM, "d@example.org")).code == 250
    finally:
        transport.close()  # d's envelope is waiting too: the socket is closed, not QUIT
    smtp_sink.wait_for(2)
    assert smtp_sink.count_by_rcpt() == {"a@example.org": 1, "c@example.org": 1}
    assert len(smtp_sink.messages) == 2
    assert smtp_sink.sessions == (2 if smtp_sink.pipelining else 1)  # dropped only if b's envelope went


def test_drop_after_data_with_a_named_next_envelope(smtp_sink):
    smtp_sink.drop_after_data = True
    transport = SmtpTransport.from_url(smtp_sink.url, timeout=10)
    try:
        first = transport.send(FROM, "a@example.org", message(1), then=(FROM, "b@example.org"))
        assert first.code is None and "unknown" in first.reply
        smtp_sink.drop_after_data = False
        assert transport.send(FROM, "b@example.org", message(2)).code == 250  # afresh, on a new connection
    finally:
        transport.close()
    assert smtp_sink.count_by_rcpt() == {"b@example.org": 1}


def test_an_unsafe_next_envelope_is_not_written_early(smtp_sink):
    transport = SmtpTransport.from_url(smtp_sink.url, timeout=10)
    try:
        assert transport.send(FROM, "a@example.org", message(1), then=(FROM, "jörg@example.org")).code == 250
        with pytest.raises(InvalidInput, match="SMTP command"):
            transport.send(FROM, "jörg@example.org", message(2))
        assert transport.send(FROM, "b@example.org", message(3)).code == 250
    finally:
        transport.close()
    assert smtp_sink.count_by_rcpt() == {"a@example.org": 1, "b@example.org": 1} and smtp_sink.sessions == 1


def test_a_message_and_its_end_of_data_written_without_joining_arrive_whole():
    """``_send_all`` writes the pieces with scatter-gather writes; through a socket with
    a small send buffer and a timeout (as smtplib sets one) those come back partial, and
    every byte still arrives once, in order."""
    import smtplib

    from mailer.transports.smtp import _send_all

    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours.settimeout(10)
    conn = smtplib.SMTP()
    conn.sock = ours
    pieces = [bytes(range(256)) * 4000, b".\r\n", b"", b"MAIL FROM:<a@example.com>\r\n" * 50]
    received = bytearray()

    def read() -> None:
        while len(received) < sum(map(len, pieces)):
            received.extend(theirs.recv(1500))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        _send_all(conn, *pieces)
        reader.join(10)
    finally:
        ours.close()
        theirs.close()
    assert bytes(received) == b"".join(pieces)
