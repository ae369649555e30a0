"""The click redirect (``/r/<token>``) under a few hundred concurrent clients, next to the
same server's ``/healthz`` in the same run (what a request costs this server with no work
in it). Prints figures; asserts nothing.

    .venv/bin/python bench/redirect.py                        # 300 clients, 10 s each
    .venv/bin/python bench/redirect.py --clients 500 --seconds 20
    .venv/bin/python bench/redirect.py --server postgresql+psycopg://postgres@127.0.0.1:5432

It creates a PostgreSQL database of its own (dropped at the end unless --keep), a list
of --subscribers tracked for clicks and a started campaign of an issue with 5 links, then
starts the web app as production does (``newsletter web``: uvicorn, one process, its
access log on) and points the clients at it. Each client is one keep-alive HTTP/1.1
connection sending one request after the other, to tokens of random deliveries and
links; the client is plain asyncio (no HTTP library in between, so the figures are the
server's, not a client library's). The clicks the server recorded are counted at the end
(the redirect answers first and records later, ``mailer.engagement``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, text  # noqa: E402

SECRET = "bench secret key, not a real one " + "x" * 16
LINKS = [f"https://example.com/story/{i}" for i in range(5)]


def seed(url: str, subscribers: int) -> tuple[int, list[int]]:
    """A tracked list, an issue with LINKS and a started campaign: (campaign, deliveries)."""
    from mailer import campaigns
    from mailer.core.db import make_engine, transaction

    engine = make_engine(url)
    with engine.begin() as c:
        list_id = c.execute(text("INSERT INTO mailing_list (name, description, created_at, track_clicks, track_opens) "
                                 "VALUES ('bench', '', now(), true, true) RETURNING id")).scalar_one()
        c.execute(text("INSERT INTO subscriber (email, email_key, name, status, attributes, created_at, updated_at) "
                       "SELECT 'r' || i || '@example.org', 'r' || i || '@example.org', 'Reader ' || i, 'active', "
                       "'{}', now(), now() FROM generate_series(1, :n) i"), {"n": subscribers})
        c.execute(text("INSERT INTO membership (list_id, subscriber_id, created_at) "
                       "SELECT :lid, id, now() FROM subscriber"), {"lid": list_id})
    with transaction(engine) as s:
        issue = campaigns.store_issue(s, slug="bench-redirect", subject="Bench", preheader="", source="Bench",
                                      html="<p>Bench</p>", text_part="Bench", links=LINKS)
        campaign, _ = campaigns.create_campaign(s, issue_id=issue.id, list_id=list_id)
        campaigns.start_campaign(s, campaign_id=campaign.id, batch_size=200)
        cid = campaign.id
    with engine.begin() as c:
        # Delivered a day ago: a click now is a person's, judged as the real ones are.
        c.execute(text("UPDATE delivery SET status = 'sent', sent_at = now() - interval '1 day' "
                       "WHERE campaign_id = :cid"), {"cid": cid})
        deliveries = list(c.execute(text("SELECT id FROM delivery WHERE campaign_id = :cid"), {"cid": cid}).scalars())
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return cid, deliveries


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_web(url: str, port: int, var_dir: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(NEWSLETTER_DATABASE_URL=url, NEWSLETTER_SECRET_KEY=SECRET, NEWSLETTER_VAR_DIR=var_dir,
               NEWSLETTER_BASE_URL=f"http://127.0.0.1:{port}", NEWSLETTER_FROM="Bench <bench@example.com>",
               PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "mailer.cli", "web", "--port", str(port)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"newsletter web exited: {proc.stderr.read().decode(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("newsletter web did not answer /healthz within 60 s")


async def client(port: int, paths: list[str], until: float, latencies: list[float], statuses: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            path = random.choice(paths)
            t0 = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Mozilla/5.0 (X11; Linux "
                         f"x86_64) Chrome/131.0\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            status = head[9:12].decode()
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def load(port: int, paths: list[str], clients: int, seconds: float) -> tuple[list[float], dict, float]:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    start = time.perf_counter()
    until = start + seconds
    await asyncio.gather(*(client(port, paths, until, latencies, statuses) for _ in range(clients)))
    return latencies, statuses, time.perf_counter() - start


def measure(name: str, port: int, paths: list[str], clients: int, seconds: float) -> dict:
    warm, _, _ = asyncio.run(load(port, paths, min(clients, 20), 1.0))  # connections, caches
    latencies, statuses, elapsed = asyncio.run(load(port, paths, clients, seconds))
    q = statistics.quantiles(latencies, n=100)
    return {"name": name, "requests": len(latencies), "sent": len(warm) + len(latencies),
            "rps": len(latencies) / elapsed, "p50": q[49] * 1000, "p99": q[98] * 1000, "statuses": statuses}


def check_redirect(port: int, path: str) -> None:
    """One click answered as a reader's browser sees it: 302 to one of the issue's links."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    r = conn.getresponse()
    if r.status != 302 or r.getheader("Location") not in LINKS:
        raise RuntimeError(f"{path}: {r.status} {r.getheader('Location')}")
    conn.close()


def recorded(url: str, expected: int, timeout: float = 60) -> int:
    engine = create_engine(url)
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        with engine.connect() as c:
            n = c.execute(text("SELECT COUNT(*) FROM engagement_event")).scalar_one()
        if n >= expected:
            break
        time.sleep(0.5)
    engine.dispose()
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432",
                        help="a PostgreSQL server URL without a database name")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()

    from mailer.core import signing
    from mailer.migrate import upgrade

    name = f"nl_bench_redirect_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{args.server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{args.server}/{name}"
    proc = None
    try:
        upgrade(url)
        cid, deliveries = seed(url, args.subscribers)
        rng = random.Random(12)
        paths = ["/r/" + signing.click_tokens(SECRET, cid, d, len(LINKS))[rng.randrange(len(LINKS))]
                 for d in rng.sample(deliveries, min(len(deliveries), 5_000))]
        port = free_port()
        with tempfile.TemporaryDirectory() as var_dir:
            proc = start_web(url, port, var_dir)
            check_redirect(port, paths[0])
            reference = measure("/healthz", port, ["/healthz"], args.clients, args.seconds)
            redirect = measure("/r/<token>", port, paths, args.clients, args.seconds)
            stored = recorded(url, redirect["sent"] + 1)
            proc.terminate()
            proc.wait(15)
        load_avg = os.getloadavg()
        print(f"{args.clients} clients (one keep-alive connection each), {args.seconds:g} s per endpoint, "
              f"{os.cpu_count()} cores, load average {load_avg[0]:.1f} at the end")
        print()
        print("| endpoint | requests/s | p50 ms | p99 ms | answers |")
        print("|---|---:|---:|---:|---|")
        for m in (reference, redirect):
            answers = ", ".join(f"{n:,} × {s}" for s, n in sorted(m["statuses"].items()))
            print(f"| `{m['name']}` | {m['rps']:,.0f} | {m['p50']:.1f} | {m['p99']:.1f} | {answers} |")
        print()
        print(f"redirect / healthz: {redirect['rps'] / reference['rps']:.0%} of the requests per second; "
              f"clicks recorded afterwards: {stored:,} of {redirect['sent'] + 1:,} sent (warm-up included)")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if args.keep:
            print(f"kept database {name}")
        else:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
