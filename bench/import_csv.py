"""Benchmark the streaming CSV import: rows per second, and memory that stays flat.

    .venv/bin/python bench/import_csv.py [--rows 100000] [--database-url URL] [--tracemalloc]
    .venv/bin/python bench/import_csv.py --rows 1000000 --postgres postgresql://postgres@127.0.0.1:5432/test

Generates a CSV (about 1% bad rows, 1% suppressed addresses, 1% duplicates) to a temp
file and imports it into a fresh, migrated temp SQLite database (or the given one, which
should be empty; with --postgres, a fresh database created on that server for each size
and dropped after). Each size runs in a fresh child process so its peak RSS (ru_maxrss)
is its own; with --tracemalloc, Python's allocation peak is measured too (it slows the
import about 3x). Flat memory means the peak barely moves from 10k rows to the largest.

On PostgreSQL the same run also times the reference: ``psql``'s ``\\copy`` of the same
file into a bare table (no index, no parsing, no validation): what the server and the
COPY protocol alone take for those bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def generate(path: Path, rows: int, seed: int = 1) -> list[str]:
    """Write the CSV; returns the addresses to suppress."""
    rng = random.Random(seed)
    suppressed = []
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("email,name,city,plan\n")
        for i in range(rows):
            roll = rng.random()
            if roll < 0.01:
                fh.write(f"not-an-address-{i},Bad {i},Paris,free\n")
                continue
            address = f"reader{i}@example.com"
            if roll < 0.02:
                suppressed.append(address)
            elif roll < 0.03 and i:
                address = f"READER{i - 1}@Example.com"  # a duplicate in other case
            fh.write(f"{address},Reader {i},City {i % 97},{'pro' if i % 5 else 'free'}\n")
    return suppressed


def psql_copy(url: str, path: Path) -> float:
    """Seconds ``psql``'s ``\\copy`` takes to load ``path`` into a bare table (the reference)."""
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run(["psql", plain, "-q", "-c", "CREATE TABLE bare_copy (email text, name text, city text, plan text)"],
                   check=True, capture_output=True)
    start = time.perf_counter()
    subprocess.run(["psql", plain, "-q", "-c", f"\\copy bare_copy FROM '{path}' WITH (FORMAT csv, HEADER true)"],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def run_one(rows: int, database_url: str | None, trace: bool) -> dict:
    from sqlalchemy import insert

    from mailer.core.db import make_engine, transaction
    from mailer.migrate import upgrade
    from mailer.operations.subscribers import import_csv
    from subscribers import service
    from subscribers.models import Suppression

    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        engine = make_engine(url)
        path = Path(tmp) / "subscribers.csv"
        suppressed = generate(path, rows)
        with transaction(engine) as s:
            if suppressed:
                s.execute(insert(Suppression), [{"email_hash": service.hash_key(a.lower()), "reason": "complaint"}
                                                for a in suppressed])
        if trace:
            tracemalloc.start()
        cpu = time.process_time()
        start = time.perf_counter()
        with open(path, "rb") as fh:
            report = import_csv(engine, fh, list_name="bench", confirmed=True, file_name=path.name)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        traced_peak = tracemalloc.get_traced_memory()[1] if trace else 0
        tracemalloc.stop()
        reference = psql_copy(url, path) if engine.dialect.name == "postgresql" else None
        engine.dispose()
    return {
        "rows": rows, "seconds": round(elapsed, 2), "rows_per_s": round(rows / elapsed),
        "client_cpu_s": round(cpu, 1),
        "imported": report.imported, "updated": report.updated, "suppressed": report.skipped_suppressed,
        "errors": report.error_count, "traced_peak_mb": round(traced_peak / 2**20, 1) if trace else "-",
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "copy_s": round(reference, 2) if reference is not None else "-",
        "copy_rows_per_s": round(rows / reference) if reference else "-",
        "database": "sqlite (temp)" if not database_url else database_url.split("@")[-1],
    }


def fresh_database(server_url: str, name: str, *, drop: bool = False) -> str:
    """Create (or drop) database ``name`` on the server of ``server_url``; its URL."""
    from sqlalchemy import create_engine

    admin = make_url(server_url).set(drivername="postgresql+psycopg")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        if not drop:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return admin.set(database=name).render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--postgres", metavar="SERVER_URL", default=None,
                        help="import into a fresh database created on this PostgreSQL server (and dropped after)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also measure Python allocations (slows the import about 3x)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.database_url, args.tracemalloc)))
        return
    sizes = sorted({min(10_000, args.rows), args.rows})
    print(f"{'rows':>8} {'seconds':>8} {'rows/s':>8} {'client CPU s':>12} {'imported':>9} {'updated':>8}"
          f" {'suppr.':>7} {'errors':>7} {'traced peak MB':>15} {'max RSS MB':>11} {'psql copy s':>12}"
          f" {'copy rows/s':>12}")
    if args.database_url:
        print("(with --database-url, each size imports into the same database: give an empty one)")
    for rows in sizes:
        url = args.database_url
        if args.postgres:
            url = fresh_database(args.postgres, f"bench_import_{os.getpid()}")
        cmd = [sys.executable, __file__, "--child", str(rows)]
        if url:
            cmd += ["--database-url", url]
        if args.tracemalloc:
            cmd += ["--tracemalloc"]
        try:
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ}).stdout
        finally:
            if args.postgres:
                fresh_database(args.postgres, f"bench_import_{os.getpid()}", drop=True)
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{r['rows']:>8} {r['seconds']:>8} {r['rows_per_s']:>8} {r['client_cpu_s']:>12} {r['imported']:>9}"
              f" {r['updated']:>8} {r['suppressed']:>7} {r['errors']:>7} {r['traced_peak_mb']:>15}"
              f" {r['max_rss_mb']:>11} {r['copy_s']:>12} {r['copy_rows_per_s']:>12}")


if __name__ == "__main__":
    main()
