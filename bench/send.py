"""End-to-end send rate: the example issue to N subscribers through real Celery workers
into Postfix's ``smtp-sink`` on loopback, next to ``smtp-source`` -> ``smtp-sink`` with
the same message size in the same run (the ceiling of this machine), plus the peak
memory of each worker. Prints a small table; asserts nothing.

    .venv/bin/python bench/send.py                       # 20,000 subscribers, 2 workers, embedded
    .venv/bin/python bench/send.py --subscribers 100000
    .venv/bin/python bench/send.py --database-url postgresql+psycopg://postgres@127.0.0.1/bench \\
                                   --broker-url redis://127.0.0.1:6379/5
    .venv/bin/python bench/send.py --dkim rsa            # RSA-2048 signatures (both: RSA and Ed25519)
    .venv/bin/python bench/send.py --profile --subscribers 5000   # cProfile of drain(), in process
    .venv/bin/python bench/send.py --cpu --dkim rsa      # drain() in process: CPU per message
    .venv/bin/python bench/send.py --runs 5 --no-naive   # five campaigns, a row each, and the median

Embedded default: SQLite and the filesystem broker in a temporary folder. Without DKIM
unless ``--dkim``. Each run uses its own list and issue, so a PostgreSQL database can be
reused. Three senders in the same run, the same message, the same sink:

- the ceiling: Postfix's ``smtp-source`` (C), as many sessions as the engine opens,
  measured before and after the engine (this shared machine's speed drifts within a
  minute; the mean of the two is the ceiling, both are printed);
- naive Python: one ``EmailMessage`` built per recipient, dkimpy signing,
  ``smtplib.sendmail`` over one kept connection per process, nothing recorded (timed
  over the first ``--naive-messages`` recipients: it is slow, and its rate is flat);
- the engine: real Celery workers, every delivery marked and recorded.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing
import os
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

EXAMPLE = REPO / "examples" / "china-ai-weekly-2022-06-14.md"
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sink(port: int) -> subprocess.Popen:
    """smtp-sink accepts everything and keeps nothing; 1000 is its listen backlog."""
    cmd = [SMTP_SINK]
    if os.geteuid() == 0:
        cmd += ["-u", "root"]  # it refuses to run as root without being told which user to be
    cmd += [f"127.0.0.1:{port}", "1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("smtp-sink did not start: " + proc.stderr.read().decode(errors="replace"))


def smtp_source_rate(port: int, *, messages: int, size: int, sessions: int) -> float:
    """``smtp-source -d`` keeps each session's connection for all its messages, as our
    workers do; ``-s`` sessions run in parallel, one per worker."""
    cmd = [SMTP_SOURCE, "-d", "-s", str(sessions), "-m", str(messages), "-l", str(size),
           "-f", "bounces@example.com", "-t", "reader@example.org", f"127.0.0.1:{port}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=600)
    return messages / (time.perf_counter() - t0)


def naive_rate(port: int, *, html: str, text: str, subject: str, messages: int, processes: int,
               dkim_key: bytes | None) -> float:
    """What a straightforward Python sender gets: ``processes`` processes, each with one
    kept ``smtplib`` connection, building and (with ``dkim_key``) signing one
    ``EmailMessage`` per recipient; no database, nothing recorded."""
    share = [messages // processes + (1 if i < messages % processes else 0) for i in range(processes)]
    ctx = multiprocessing.get_context("fork")
    t0 = time.perf_counter()
    with ctx.Pool(processes) as pool:
        sent = sum(pool.starmap(_naive_sender, [(port, html, text, subject, start, count, dkim_key)
                                                for start, count in zip(_offsets(share), share)]))
    elapsed = time.perf_counter() - t0
    assert sent == messages, (sent, messages)
    return messages / elapsed


def _offsets(share: list[int]) -> list[int]:
    return [sum(share[:i]) for i in range(len(share))]


def _naive_sender(port: int, html: str, text: str, subject: str, start: int, count: int,
                  dkim_key: bytes | None) -> int:
    import smtplib
    from email.message import EmailMessage
    from email.policy import SMTP

    import dkim

    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for i in range(start, start + count):
            to = f"r{i:07d}@example.org"
            msg = EmailMessage()
            msg["From"] = "Recode China AI <news@example.com>"
            msg["To"] = f"Reader {i} <{to}>"
            msg["Subject"] = subject
            msg["Message-ID"] = f"<naive.{i}@example.com>"
            msg["List-Unsubscribe"] = f"<https://news.example.com/u/{i}>"
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            msg.set_content(text)
            msg.add_alternative(html, subtype="html")
            data = msg.as_bytes(policy=SMTP)
            if dkim_key is not None:
                data = dkim.sign(data, b"bench", b"example.com", dkim_key,
                                 include_headers=[b"from", b"to", b"subject", b"message-id"]) + data
            smtp.sendmail("bounces@example.com", [to], data)
    return count


def dkim_keys(folder: Path, which: str) -> tuple[dict[str, str], bytes | None]:
    """Settings for ``--dkim`` (fresh keys in the run's folder) and the RSA key's PEM
    for the naive sender."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if which == "none":
        return {}, None
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (folder / "rsa.pem").write_bytes(pem)
    env = {"NEWSLETTER_DKIM_SELECTOR": "bench", "NEWSLETTER_DKIM_DOMAIN": "example.com",
           "NEWSLETTER_DKIM_PRIVATE_KEY": str(folder / "rsa.pem")}
    if which == "both":  # Ed25519 goes next to RSA (RFC 8463), never alone
        ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        (folder / "ed.pem").write_bytes(ed)
        env.update({"NEWSLETTER_DKIM_ED25519_SELECTOR": "bench-ed", "NEWSLETTER_DKIM_ED25519_PRIVATE_KEY":
                    str(folder / "ed.pem")})
    return env, pem


def configure(args, folder: Path, port: int, dkim_env: dict[str, str]) -> dict[str, str]:
    env = {
        "NEWSLETTER_VAR_DIR": str(folder / "var"),
        "NEWSLETTER_DATABASE_URL": args.database_url or f"sqlite:///{folder / 'var' / 'newsletter.db'}",
        "NEWSLETTER_BROKER_URL": args.broker_url or "filesystem://",
        "NEWSLETTER_SMTP_URL": f"smtp://127.0.0.1:{port}",
        "NEWSLETTER_FROM": "Recode China AI <news@example.com>",
        "NEWSLETTER_BASE_URL": "https://news.example.com",
        "NEWSLETTER_SECRET_KEY": "bench-secret",
        "NEWSLETTER_BATCH_SIZE": str(args.batch_size),
        "NEWSLETTER_SMTP_CONNECTIONS": str(args.connections),
        "NEWSLETTER_SEND_WINDOW": str(args.window),
        **dkim_env,
    }
    for key in [k for k in os.environ if k.startswith("NEWSLETTER_")]:
        del os.environ[key]
    os.environ.update(env)
    from mailer.core.config import get_settings

    get_settings.cache_clear()
    return env


def seed(engine, n: int, run: str) -> int:
    """A list of ``n`` active subscribers, inserted in chunks (no ORM objects)."""
    from sqlalchemy import insert

    from mailer.core.db import transaction
    from mailer.queries import text
    from subscribers.models import MailingList, Subscriber

    with transaction(engine) as s:
        list_id = s.execute(insert(MailingList).values(name=f"bench-{run}", description="Recode China AI")
                            .returning(MailingList.id)).scalar_one()
    chunk = 5000
    for start in range(0, n, chunk):
        rows = [{"email": f"r{i:07d}.{run}@example.org", "email_key": f"r{i:07d}.{run}@example.org",
                 "name": f"Reader {i}", "status": "active", "attributes": {}}
                for i in range(start, min(n, start + chunk))]
        with transaction(engine) as s:
            s.execute(insert(Subscriber), rows)
    with transaction(engine) as s:
        s.execute(text("INSERT INTO membership (list_id, subscriber_id, created_at) "
                       "SELECT :lid, id, :now FROM subscriber WHERE email_key LIKE :pat"),
                  {"lid": list_id, "pat": f"%.{run}@example.org", "now": _now()})
    return list_id


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def prepare(engine, settings, n: int, run: str):
    """Seed, store the rendered example issue, create and start the campaign.
    Returns (campaign id, batches, size in bytes of one assembled message, the rendered
    issue)."""
    from mailer import campaigns, queries
    from mailer.core.db import transaction
    from mailer.dispatch import engine_config
    from mailer.render import render_file
    from mailer.sending import prepare_campaign, recipient_for

    list_id = seed(engine, n, run)
    rendered = render_file(EXAMPLE, settings)
    with transaction(engine) as s:
        issue = campaigns.store_issue(s, slug=f"{rendered.slug}-{run}", subject=rendered.subject,
                                      preheader=rendered.preheader, source=EXAMPLE.read_text(encoding="utf-8"),
                                      html=rendered.html, text_part=rendered.text)
        campaign, _ = campaigns.create_campaign(s, issue_id=issue.id, list_id=list_id)
        total = campaigns.start_campaign(s, campaign_id=campaign.id, batch_size=settings.batch_size)
        cid = campaign.id
    assert total == n, (total, n)
    with transaction(engine) as s:
        cfg = engine_config(settings)
        prepared = prepare_campaign(s, cid, cfg)
        r = queries.batch_recipients(s, campaign_id=cid, seq=0, now=_now())[0]
        size = len(prepared.template.assemble(recipient_for(r, cid, cfg)))
    return cid, -(-n // settings.batch_size), size, rendered


def start_workers(env: dict[str, str], count: int, folder: Path, *, extra: tuple[str, ...] = (),
                  name: str = "bench") -> list[subprocess.Popen]:
    """``count`` solo-pool workers; ``extra`` arguments go to ``celery worker`` (``-Q``...)."""
    procs = []
    worker_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    for i in range(count):
        log = open(folder / f"{name}{i}.log", "wb")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "worker", "-n", f"{name}{i}@%h", "--pool=solo",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=WARNING", *extra],
            cwd=REPO, env=worker_env, stdout=log, stderr=subprocess.STDOUT))
    # Ready when each has connected to the broker: give them a moment, then check they live.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(b"ready" in (folder / f"{name}{i}.log").read_bytes() or _started(p) for i, p in enumerate(procs)):
            break
        time.sleep(0.2)
    for i, p in enumerate(procs):
        if p.poll() is not None:
            raise RuntimeError(f"worker {i} died:\n" + (folder / f"{name}{i}.log").read_text(errors="replace"))
    return procs


def _started(proc: subprocess.Popen) -> bool:
    """A --loglevel=WARNING worker prints nothing when ready; its resident size settles
    once Celery has imported everything. Good enough to start a stopwatch after."""
    try:
        status = Path(f"/proc/{proc.pid}/status").read_text()
    except OSError:
        return False
    return _kb(status, "VmRSS") > 40_000 and time.sleep(1.5) is None


def _kb(status: str, field: str) -> int:
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (/proc/stat):
    whether a run had idle cores left, or the machine itself was the limit."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks[:8]) - idle) / hz, sum(ticks[:8]) / hz


def postgres_cpu() -> float:
    """CPU seconds of this machine's PostgreSQL processes alive now (0 without any):
    a backend that starts in a stretch counts from zero, so a difference over the
    stretch is what the server did for it, as long as the backends outlive it."""
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "postgres":
                total += cpu_seconds(int(comm.parent.name))
        except (OSError, ValueError, IndexError):
            pass  # gone meanwhile
    return total


class CpuWatch:
    """The machine's busy share and the sink's CPU seconds over a stretch of the run."""

    def __init__(self, sink: subprocess.Popen):
        self.sink = sink
        self.busy0, self.total0 = machine_cpu()
        self.sink0 = cpu_seconds(sink.pid)
        self.pg0 = postgres_cpu()

    def done(self, messages: int, sender_cpu: float | None = None) -> str:
        """``sender_cpu``: the CPU seconds the senders used, when known, to say what the
        rest of the machine (the database, the broker, the kernel) used per message."""
        busy, total = machine_cpu()
        share = (busy - self.busy0) / max(1e-9, total - self.total0)
        sink = cpu_seconds(self.sink.pid) - self.sink0
        # The sink is one process: near one core busy, it is what bounds the ceiling.
        of_a_core = sink / max(1e-9, (total - self.total0) / (os.cpu_count() or 1))
        line = (f"machine {share:.0%} busy ({os.cpu_count()} cores), smtp-sink {sink / max(1, messages) * 1000:.2f} "
                f"ms CPU per message ({of_a_core:.2f} of one core)")
        if sender_cpu is not None:
            pg = postgres_cpu() - self.pg0
            rest = (busy - self.busy0) - sink - sender_cpu - pg
            if pg / max(1, messages) >= 5e-6:  # a server that did anything for the run
                line += f", PostgreSQL {pg / max(1, messages) * 1000:.2f} ms"
            line += f", everything else (broker, kernel) {rest / max(1, messages) * 1000:.2f} ms"
        return line


def peak_rss_mb(proc: subprocess.Popen) -> float:
    """VmHWM: the peak resident set size of the process over its life."""
    return _kb(Path(f"/proc/{proc.pid}/status").read_text(), "VmHWM") / 1024


def run_workers(args, env, folder, engine, settings, cid: int, batches: int, *, extra: tuple[str, ...] = (),
                sink: subprocess.Popen | None = None):
    """(seconds, peak RSS per worker, delivery counts, CPU seconds the workers used, and
    with ``sink`` what the machine did meanwhile: ``CpuWatch.done``), over the sending
    alone (the workers' start and stop left out)."""
    from mailer import queries
    from mailer.core.db import transaction
    from mailer.dispatch import enqueue_campaign

    procs = start_workers(env, args.workers, folder, extra=extra)
    try:
        started_cpu = [cpu_seconds(p.pid) for p in procs]
        watch = CpuWatch(sink) if sink is not None else None
        t0 = time.perf_counter()
        enqueue_campaign(cid, batches)
        while True:
            with transaction(engine) as s:
                status = s.execute(queries.text("SELECT status FROM campaign WHERE id = :c"), {"c": cid}).scalar_one()
            if status != "sending":
                break
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker died; see " + str(folder))
            time.sleep(0.1)
        elapsed = time.perf_counter() - t0
        peaks = [peak_rss_mb(p) for p in procs]
        cpu = sum(cpu_seconds(p.pid) - cpu0 for p, cpu0 in zip(procs, started_cpu))
        with transaction(engine) as s:
            counts = queries.delivery_counts(s, campaign_id=cid)
        machine = watch.done(counts.get("sent", 0), cpu) if watch is not None else ""
        return elapsed, peaks, counts, cpu, machine
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def profile(engine, settings, cid: int, top: int, folder: Path, *, cprofile: bool = True) -> None:
    """The engine's own loop in this process against smtp-sink, one connection: under
    cProfile, or (``cprofile=False``) plainly, to print its CPU time per message, with
    log lines written to a file as a worker writes them."""
    from mailer.core import logs
    from mailer.dispatch import engine_config
    from mailer.sending import drain
    from mailer.transports import transport_from_settings

    transport = transport_from_settings(settings.smtp_url, settings.outbox_dir, settings.smtp_timeout)
    if not cprofile:
        with open(folder / "drain.log", "w") as log:
            logs.configure(fmt=settings.log_format, level=settings.log_level, stream=log)
            t0, c0 = time.perf_counter(), time.process_time()
            outcomes = drain(engine, cid, transport=transport, cfg=engine_config(settings), time_budget=3600)
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        sent = sum(o.sent for o in outcomes)
        print(f"in-process drain(), one connection: {sent} messages in {elapsed:.2f} s = {sent / elapsed:.0f} msg/s; "
              f"CPU {cpu / max(1, sent) * 1000:.3f} ms per message (this process, signing included)")
        return
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    outcomes = drain(engine, cid, transport=transport, cfg=engine_config(settings), time_budget=3600)
    prof.disable()
    elapsed = time.perf_counter() - t0
    sent = sum(o.sent for o in outcomes)
    print(f"in-process drain(): {sent} messages in {elapsed:.2f} s = {sent / elapsed:.0f} msg/s (under cProfile)")
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).sort_stats("tottime")
    stats.print_stats(top)
    if os.environ.get("BENCH_CALLERS"):
        stats.print_callers(os.environ["BENCH_CALLERS"])
    print(out.getvalue())


def one_run(args, env, folder, engine, settings, sink, port: int, setup: str, rsa_pem, *, naive: bool):
    """One campaign of its own: the ceiling before, the naive sender (``naive``), the
    engine, the ceiling after. Returns (its row of the closing table, engine / ceiling),
    or (None, 0) after ``--profile`` or ``--cpu``."""
    run = uuid.uuid4().hex[:8]
    t0 = time.perf_counter()
    cid, batches, size, rendered = prepare(engine, settings, args.subscribers, run)
    print(f"seeded {args.subscribers} subscribers and froze the audience in {time.perf_counter() - t0:.1f} s; "
          f"message size {size / 1000:.1f} KB; {setup}; DKIM {args.dkim}")
    if args.profile or args.cpu:
        profile(engine, settings, cid, args.top, folder, cprofile=not args.cpu)
        return None, 0.0
    sessions = args.workers * args.connections
    watch = CpuWatch(sink)
    ceiling = smtp_source_rate(port, messages=min(args.subscribers, args.ceiling_messages), size=size,
                               sessions=sessions)
    print(f"smtp-source: {watch.done(min(args.subscribers, args.ceiling_messages))}")
    naive_msgs = naive_rate(
        port, html=rendered.html, text=rendered.text, subject=rendered.subject,
        messages=min(args.subscribers, args.naive_messages),
        processes=args.workers, dkim_key=rsa_pem) if naive else None
    elapsed, peaks, counts, cpu, machine = run_workers(args, env, folder, engine, settings, cid, batches, sink=sink)
    rate = counts.get("sent", 0) / elapsed
    print(f"engine: {machine}")
    after = smtp_source_rate(port, messages=min(args.subscribers, args.ceiling_messages), size=size,
                             sessions=sessions)
    print(f"smtp-source: {ceiling:.0f} msg/s before the engine, {after:.0f} msg/s after")
    ceiling = (ceiling + after) / 2
    print(f"the workers used {cpu:.1f} CPU seconds: {cpu / max(1, counts.get('sent', 0)) * 1000:.2f} ms "
          "per message sent")
    other = {k: v for k, v in counts.items() if k != "sent"}
    if other:
        print(f"not sent: {other}")
    row = (f"| {setup} | {args.dkim} | {args.subscribers:,} | {args.workers} x {args.connections} | {args.window} "
           f"| {counts.get('sent', 0):,} | {elapsed:.1f} | {rate:.0f} "
           f"| {'—' if naive_msgs is None else f'{naive_msgs:.0f}'} | {ceiling:.0f} "
           f"| {'—' if naive_msgs is None else f'{naive_msgs / ceiling:.0%}'} | {rate / ceiling:.0%} "
           f"| {', '.join(f'{p:.0f}' for p in peaks)} |")
    return row, rate / ceiling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    from mailer.core.config import Settings

    defaults = Settings.model_fields  # the engine's own defaults unless told otherwise
    parser.add_argument("--connections", type=int, default=defaults["smtp_connections"].default,
                        help="NEWSLETTER_SMTP_CONNECTIONS (per worker)")
    parser.add_argument("--window", type=int, default=defaults["send_window"].default, help="NEWSLETTER_SEND_WINDOW")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--dkim", choices=["none", "rsa", "both"], default="none",
                        help="sign with RSA-2048, or RSA-2048 and Ed25519")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temporary folder")
    parser.add_argument("--broker-url", default="", help="default: the filesystem broker in that folder")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive Python sender")
    parser.add_argument("--ceiling-messages", type=int, default=100_000,
                        help="smtp-source sends at most this many (its rate is flat; a million would take minutes)")
    parser.add_argument("--naive-messages", type=int, default=4000,
                        help="messages the naive sender times (it is slow; its rate is flat, so a sample does)")
    parser.add_argument("--profile", action="store_true", help="cProfile drain() in this process instead")
    parser.add_argument("--cpu", action="store_true",
                        help="run drain() in this process without a profiler; print its CPU time per message")
    parser.add_argument("--runs", type=int, default=1,
                        help="campaigns one after the other, each between two ceilings (this machine drifts): "
                             "a row each, and the median engine/ceiling")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    for tool in (SMTP_SINK, SMTP_SOURCE):
        if not os.access(tool, os.X_OK):
            sys.exit(f"{tool} not found: apt-get install postfix (the daemon need not run)")

    folder = Path(tempfile.mkdtemp(prefix="nl-bench-"))
    port = free_port()
    sink = start_sink(port)
    try:
        dkim_env, rsa_pem = dkim_keys(folder, args.dkim)
        env = configure(args, folder, port, dkim_env)
        from mailer.core.config import get_settings
        from mailer.core.db import make_engine
        from mailer.migrate import upgrade

        settings = get_settings()
        upgrade(settings.database)
        engine = make_engine(settings.database)
        setup = (f"{'PostgreSQL' if engine.url.get_backend_name() == 'postgresql' else 'SQLite'} + "
                 f"{settings.broker.split(':')[0]}")
        rows, ratios = [], []
        for n in range(1, args.runs + 1):
            if args.runs > 1:
                print(f"--- run {n} of {args.runs}")
            row, ratio = one_run(args, env, folder, engine, settings, sink, port, setup, rsa_pem,
                                 naive=not args.no_naive and n == 1)
            if row is None:  # --profile, --cpu
                return
            rows.append(row)
            ratios.append(ratio)
        print()
        print("| setup | DKIM | subscribers | workers x connections | window | sent | seconds | engine msg/s "
              "| naive msg/s | smtp-source msg/s | naive/ceiling | engine/ceiling | peak RSS per worker (MB) |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for row in rows:
            print(row)
        if len(ratios) > 1:
            print(f"engine/ceiling over {len(ratios)} runs: median {statistics.median(ratios):.0%}, "
                  f"lowest {min(ratios):.0%}, highest {max(ratios):.0%}")
        engine.dispose()
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(10)
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
