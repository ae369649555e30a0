"""Audience freeze at a million subscribers on PostgreSQL: how long starting a campaign
takes (``campaigns.start_campaign``: the guarded move to 'sending', then one
``INSERT ... SELECT`` of a delivery per active member and the batch rows), next to the
same rows written into a table with no index and no constraint in the same run (what
writing a million rows costs on this machine). Prints figures; asserts nothing.

    .venv/bin/python bench/freeze.py                          # 1,000,000 subscribers
    .venv/bin/python bench/freeze.py --subscribers 100000
    .venv/bin/python bench/freeze.py --server postgresql+psycopg://postgres@127.0.0.1:5432

It creates a database of its own on the server (dropped at the end unless --keep),
seeds the list with SQL (not the importer: that is bench/import_csv.py), runs
VACUUM ANALYZE as a real database would have done by then, and freezes twice: two
campaigns of the same list, each in its own transaction.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text  # noqa: E402


def seed(engine, n: int) -> int:
    with engine.begin() as c:
        list_id = c.execute(text("INSERT INTO mailing_list (name, description, created_at) "
                                 "VALUES ('bench', '', now()) RETURNING id")).scalar_one()
        c.execute(text("INSERT INTO subscriber (email, email_key, name, status, attributes, created_at, updated_at) "
                       "SELECT 'r' || i || '@example.org', 'r' || i || '@example.org', 'Reader ' || i, "
                       "CASE WHEN i % 50 = 0 THEN 'unsubscribed' ELSE 'active' END, '{}', now(), now() "
                       "FROM generate_series(1, :n) i"), {"n": n})
        c.execute(text("INSERT INTO membership (list_id, subscriber_id, created_at) "
                       "SELECT :lid, id, now() FROM subscriber"), {"lid": list_id})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE"))
    return list_id


def freeze(engine, list_id: int, run: str) -> tuple[float, int]:
    from mailer import campaigns
    from mailer.core.db import transaction

    with transaction(engine) as s:
        issue = campaigns.store_issue(s, slug=f"bench-{run}", subject="Bench", preheader="", source="Bench",
                                      html="<p>Bench</p>", text_part="Bench")
        campaign, _ = campaigns.create_campaign(s, issue_id=issue.id, list_id=list_id)
        cid = campaign.id
    t0 = time.perf_counter()
    with transaction(engine) as s:
        total = campaigns.start_campaign(s, campaign_id=cid, batch_size=200)
    return time.perf_counter() - t0, total


def reference(engine, list_id: int) -> float:
    """The same rows into a table with no index, key or constraint, then dropped."""
    t0 = time.perf_counter()
    with engine.begin() as c:
        c.execute(text("CREATE TABLE bench_reference AS "
                       "SELECT 0::bigint AS campaign_id, s.id AS subscriber_id, "
                       "(ROW_NUMBER() OVER (ORDER BY s.id) - 1) / 200 AS batch_seq, 'queued'::varchar(16) AS status, "
                       "0 AS attempts, 0 AS repeats, ''::text AS last_reply, ''::varchar(255) AS message_id, "
                       "now() AS queued_at "
                       "FROM membership m JOIN subscriber s ON s.id = m.subscriber_id "
                       "WHERE m.list_id = :lid AND s.status = 'active'"), {"lid": list_id})
    elapsed = time.perf_counter() - t0
    with engine.begin() as c:
        c.execute(text("DROP TABLE bench_reference"))
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432",
                        help="a PostgreSQL server URL without a database name")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()

    from mailer.core.db import make_engine
    from mailer.migrate import upgrade

    name = f"nl_bench_freeze_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{args.server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{args.server}/{name}"
    try:
        upgrade(url)
        engine = make_engine(url)
        t0 = time.perf_counter()
        list_id = seed(engine, args.subscribers)
        print(f"seeded {args.subscribers:,} subscribers (2% unsubscribed) in {time.perf_counter() - t0:.1f} s")
        ref = reference(engine, list_id)
        runs = [freeze(engine, list_id, uuid.uuid4().hex[:8]) for _ in range(2)]
        with engine.connect() as c:
            version = c.execute(text("SHOW server_version")).scalar_one()
        engine.dispose()
        print()
        print("| subscribers | deliveries | freeze seconds (two runs) | deliveries/s | same rows, no index | "
              "peak RSS of this process (MB) | PostgreSQL |")
        print("|---:|---:|---|---:|---:|---:|---|")
        best = min(t for t, _ in runs)
        print(f"| {args.subscribers:,} | {runs[0][1]:,} | {', '.join(f'{t:.1f}' for t, _ in runs)} "
              f"| {runs[0][1] / best:,.0f} | {ref:.1f} s "
              f"| {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} | {version.split()[0]} |")
    finally:
        if args.keep:
            print(f"kept database {name}")
        else:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
