"""Benchmark the streaming CSV import: rows per second, and memory that stays flat.

    .venv/bin/python bench/import_csv.py [--rows 100000] [--database-url URL] [--tracemalloc]

Generates a CSV (about 1% bad rows, 1% suppressed addresses, 1% duplicates) to a temp
file and imports it into a fresh, migrated temp SQLite database (or the given one, which
should be empty). Each size runs in a fresh child process so its peak RSS (ru_maxrss) is
its own; with --tracemalloc, Python's allocation peak is measured too (it slows the
import about 3x). Flat memory means the peak barely moves from 10k rows to 100k.
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


def run_one(rows: int, database_url: str | None, trace: bool) -> dict:
    from mailer.core.db import make_engine, transaction
    from mailer.migrate import upgrade
    from subscribers import csvio, service

    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        engine = make_engine(url)
        path = Path(tmp) / "subscribers.csv"
        suppressed = generate(path, rows)
        with transaction(engine) as s:
            for address in suppressed:
                service.suppress(s, email=address, reason="complaint")
        if trace:
            tracemalloc.start()
        start = time.perf_counter()
        with open(path, "rb") as fh:
            report = csvio.import_csv(engine, fh, list_name="bench", confirmed=True)
        elapsed = time.perf_counter() - start
        traced_peak = tracemalloc.get_traced_memory()[1] if trace else 0
        tracemalloc.stop()
        engine.dispose()
    return {
        "rows": rows, "seconds": round(elapsed, 2), "rows_per_s": round(rows / elapsed),
        "imported": report.imported, "updated": report.updated, "suppressed": report.skipped_suppressed,
        "errors": report.error_count, "traced_peak_mb": round(traced_peak / 2**20, 1) if trace else "-",
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "database": "sqlite (temp)" if not database_url else database_url.split("@")[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also measure Python allocations (slows the import about 3x)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.database_url, args.tracemalloc)))
        return
    sizes = sorted({min(10_000, args.rows), args.rows})
    print(f"{'rows':>8} {'seconds':>8} {'rows/s':>8} {'imported':>9} {'updated':>8} {'suppr.':>7} {'errors':>7}"
          f" {'traced peak MB':>15} {'max RSS MB':>11}")
    if args.database_url:
        print("(with --database-url, each size imports into the same database: give an empty one)")
    for rows in sizes:
        cmd = [sys.executable, __file__, "--child", str(rows)]
        if args.database_url:
            cmd += ["--database-url", args.database_url]
        if args.tracemalloc:
            cmd += ["--tracemalloc"]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ}).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{r['rows']:>8} {r['seconds']:>8} {r['rows_per_s']:>8} {r['imported']:>9} {r['updated']:>8}"
              f" {r['suppressed']:>7} {r['errors']:>7} {r['traced_peak_mb']:>15} {r['max_rss_mb']:>11}")


if __name__ == "__main__":
    main()
