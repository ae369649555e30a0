"""A campaign's send rate with a hanging webhook endpoint registered, next to the same
campaign without one, in the same run (``bench/send.py``'s setup: real Celery workers
into Postfix's ``smtp-sink``). Prints a table; asserts nothing.

    .venv/bin/python bench/webhooks.py                      # 10,000 subscribers, 2 workers, embedded
    .venv/bin/python bench/webhooks.py --database-url postgresql+psycopg://postgres@127.0.0.1/bench \\
                                       --broker-url redis://127.0.0.1:6379/5

Three campaigns of the same issue to lists of the same size, one after the other
(``--rounds`` times over, each round compared with its own first campaign):

1. no webhook endpoint (the send workers on the send queue only, so that no retry left
   from an earlier campaign runs there);
2. an endpoint for every event that accepts the connection and never answers, with the
   send workers on the send queue only and one worker of its own on the webhooks queue:
   ``newsletter worker``'s layout;
3. the same endpoint, with the send workers consuming both queues (a bare ``celery
   worker`` without ``-Q``): each attempt at the hanging endpoint holds one of them for
   ``NEWSLETTER_WEBHOOK_TIMEOUT`` (5 s), and the retries of earlier campaigns' events
   come on top.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import send

NONE = "no webhook endpoint"
DEDICATED = "hanging endpoint; send workers on the send queue, webhooks on a worker of their own (newsletter worker)"
SHARED = "hanging endpoint; the send workers take both queues (celery worker without -Q)"


class Hanging(BaseHTTPRequestHandler):
    """Reads the request, then never answers (until the bench ends)."""

    stop = threading.Event()
    requests = 0

    def do_POST(self):
        Hanging.requests += 1
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.stop.wait(300)

    def log_message(self, *args):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--broker-url", default="")
    parser.add_argument("--rounds", type=int, default=2,
                        help="the three campaigns this many times over (the machine's noise, next to the effect)")
    args = parser.parse_args()
    from mailer.core.config import Settings

    defaults = Settings.model_fields
    args.connections, args.window = defaults["smtp_connections"].default, defaults["send_window"].default
    args.batch_size, args.dkim = 200, "none"

    folder = Path(tempfile.mkdtemp(prefix="nl-bench-hooks-"))
    port = send.free_port()
    sink = send.start_sink(port)
    hang = ThreadingHTTPServer(("127.0.0.1", 0), Hanging)
    hang.daemon_threads = True
    threading.Thread(target=hang.serve_forever, daemon=True).start()
    hook_worker = None
    try:
        env = send.configure(args, folder, port, {})
        from mailer.celeryapp import HOOKS_QUEUE, QUEUE
        from mailer.core.config import get_settings
        from mailer.core.db import make_engine, transaction
        from mailer.migrate import upgrade
        from mailer.operations import webhooks as ops

        settings = get_settings()
        upgrade(settings.database)
        engine = make_engine(settings.database)
        setup = (f"{'PostgreSQL' if engine.url.get_backend_name() == 'postgresql' else 'SQLite'} + "
                 f"{settings.broker.split(':')[0]}")
        rows = []

        def campaign(label: str, extra: tuple[str, ...] = ()) -> None:
            cid, batches, _, _ = send.prepare(engine, settings, args.subscribers, uuid.uuid4().hex[:8])
            elapsed, _, counts, _, _ = send.run_workers(args, env, folder, engine, settings, cid, batches, extra=extra)
            rows.append((label, counts.get("sent", 0), elapsed, counts.get("sent", 0) / elapsed))
            print(f"{label}: {counts.get('sent', 0)} sent in {elapsed:.1f} s", flush=True)

        url = f"http://127.0.0.1:{hang.server_address[1]}/hook"

        with transaction(engine) as s:  # a reused database: an earlier run's endpoints are gone with their port
            for e in ops.endpoints(s):
                ops.remove(s, endpoint_id=e.id)

        def endpoint(enabled: bool) -> None:
            with transaction(engine) as s:
                found = ops.endpoints(s)
                if not found and enabled:
                    ops.add(s, url=url, events=["all"])
                for e in found:
                    ops.set_enabled(s, endpoint_id=e.id, enabled=enabled)

        def without() -> None:
            endpoint(False)
            campaign(NONE, extra=(f"--queues={QUEUE}",))

        def dedicated() -> None:
            nonlocal hook_worker
            endpoint(True)
            hook_worker = send.start_workers(
                env, 1, folder, extra=(f"--queues={HOOKS_QUEUE}", "--pool=threads", "--concurrency=4"), name="hooks")[0]
            campaign(DEDICATED, extra=(f"--queues={QUEUE}",))
            hook_worker.send_signal(signal.SIGTERM)
            hook_worker.wait(30)
            hook_worker = None

        def shared() -> None:
            endpoint(True)
            campaign(SHARED)

        # Every campaign adds its own list to the same tables: the order turns round each
        # round, so a later campaign's larger tables do not always count against the same one.
        for n in range(args.rounds):
            for step in ((without, dedicated, shared) if n % 2 == 0 else (shared, dedicated, without)):
                step()
        print()
        print(f"{setup}; {args.subscribers:,} subscribers; "
              f"{args.workers} send workers x {args.connections} connections; "
              f"webhook timeout {settings.webhook_timeout:g} s; the hanging endpoint got {Hanging.requests} requests")
        print()
        print("| round | campaign | sent | seconds | msg/s | vs. no endpoint (same round) |")
        print("|---:|---|---|---:|---:|---:|")
        for i, (label, sent, elapsed, rate) in enumerate(rows):
            baseline = next(r[3] for r in rows[i - i % 3:i - i % 3 + 3] if r[0] == NONE)  # this round's
            print(f"| {i // 3 + 1} | {label} | {sent:,} | {elapsed:.1f} | {rate:.0f} | {rate / baseline:.0%} |")
        engine.dispose()
    finally:
        Hanging.stop.set()
        hang.shutdown()
        if hook_worker is not None:
            hook_worker.kill()
        sink.send_signal(signal.SIGTERM)
        sink.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
