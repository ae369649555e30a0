"""``newsletter campaign ...`` as a script or an editor runs it: a real process, real
database (SQLite and PostgreSQL), one line on error with exit code 2. A refusal that
looks something up runs in a real process on SQLite and, on PostgreSQL, through the same
``main`` in this process (``run_on``): the database's part is what differs there."""

from __future__ import annotations

import json

import pytest

from mailer.core.db import transaction
from mailer.models import Campaign, Issue
from mailer.sending import drain
from tests.support.cli import assert_one_line_error, cli, cli_in_process
from tests.support.delivery import assert_counters_match, config, transport_for
from tests.support.example import EXAMPLE
from tests.support.seed import count_rows, seed_campaign, seed_list

pytestmark = pytest.mark.timeout(120)
REPORT_FIELDS = {"id", "issue", "list", "status", "total", "sent", "failed", "bounced", "skipped", "queued",
                 "repeated", "rate_per_minute", "eta_seconds", "pause_reason", "relay_down_since", "relay_error",
                 "scheduled_at", "started_at", "finished_at", "held_checks"}


def run_on(engine):
    """``cli`` (a real process: the entry point, no traceback) on SQLite; on PostgreSQL
    ``cli_in_process`` (the same exit code and line, the same transaction rolled back)."""
    return cli if engine.dialect.name == "sqlite" else cli_in_process


@pytest.fixture
def half_sent(engine, smtp_sink):
    """40 subscribers in batches of 10: two batches sent (one address bounced, one
    failed for good), two still queued."""
    cid = seed_campaign(engine, 40, batch_size=10)
    transport = transport_for(smtp_sink)
    smtp_sink.reject["reader000003@example.com"] = (550, "5.1.1 User unknown")
    smtp_sink.reject["reader000004@example.com"] = (554, "5.7.1 Rejected by policy")
    outcomes = drain(engine, cid, transport=transport, cfg=config(), time_budget=0)  # budget 0: no batch
    assert outcomes == []
    from mailer.sending import send_batch

    for _ in range(2):
        send_batch(engine, cid, transport=transport, cfg=config())
    return cid


def test_status_json_has_every_field_and_counters_equal_delivery_counts(engine, half_sent):
    result = cli("campaign", "status", str(half_sent), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == REPORT_FIELDS
    counts = assert_counters_match(engine, half_sent)
    assert counts == {"sent": 18, "bounced": 1, "failed": 1, "queued": 20}
    assert (report["id"], report["status"], report["issue"], report["list"]) == (half_sent, "sending", "weekly-1",
                                                                                   "weekly")
    assert report["total"] == sum(counts.values()) == 40
    for field in ("sent", "failed", "bounced", "skipped", "queued"):
        assert report[field] == counts.get(field, 0), field
    assert report["rate_per_minute"] == 18.0 and report["eta_seconds"] > 0
    assert report["started_at"] and report["finished_at"] is None


def test_status_without_json_is_one_line(engine, half_sent):
    result = cli("campaign", "status", str(half_sent))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "18/40 sent, 1 failed, 1 bounced, 0 skipped, 20 queued" in lines[0]


def test_list_json_reports_every_campaign(engine, half_sent):
    result = cli("campaign", "list", "--json")
    assert result.returncode == 0, result.stderr
    assert [r["id"] for r in json.loads(result.stdout)] == [half_sent]


@pytest.mark.parametrize("action", ["status", "pause", "resume", "cancel", "retry"])
def test_a_missing_campaign_is_one_line_and_exit_2(engine, action):
    result = run_on(engine)("campaign", action, "424242")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: no campaign 424242"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # a usage error: before the database
def test_a_non_numeric_campaign_id_is_a_usage_error(engine):
    result = cli("campaign", "pause", "abc")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Invalid value" in result.stderr


def test_pause_resume_cancel_and_retry_change_state_once(engine, half_sent):
    cid = str(half_sent)
    paused = cli("campaign", "pause", cid)
    assert paused.returncode == 0 and paused.stdout.strip() == f"campaign {cid}: paused"
    again = cli("campaign", "pause", cid)
    # The same refusal as the API's and the dashboard's (one operation): one line on stderr, exit 2.
    assert_one_line_error(again, f"campaign {cid} is paused; it cannot be paused")
    resumed = cli("campaign", "resume", cid)
    assert resumed.returncode == 0 and resumed.stdout.strip() == f"campaign {cid}: sending"
    retried = cli("campaign", "retry", cid)
    assert retried.returncode == 0 and retried.stdout.strip() == f"campaign {cid}: 1 failed deliveries queued again"
    assert assert_counters_match(engine, half_sent) == {"sent": 18, "bounced": 1, "queued": 21}
    cancelled = cli("campaign", "cancel", cid)
    assert cancelled.returncode == 0 and cancelled.stdout.strip() == f"campaign {cid}: cancelled"
    assert assert_counters_match(engine, half_sent) == {"sent": 18, "bounced": 1, "skipped": 21}
    with transaction(engine) as s:
        assert s.get(Campaign, half_sent).status == "cancelled"
    refused = cli("campaign", "retry", cid)
    assert refused.returncode == 2 and refused.stderr.strip() == f"error: campaign {cid} was cancelled"
    report = json.loads(cli("campaign", "status", cid, "--json").stdout)
    assert (report["status"], report["queued"], report["skipped"]) == ("cancelled", 0, 21)


# --- refusals of `newsletter send` (one line, and nothing half-done left behind) ---------------


def test_send_to_a_list_without_active_members_is_refused_in_one_line(engine):
    seed_list(engine, 3, list_name="empty", status="unsubscribed")
    result = run_on(engine)("send", str(EXAMPLE), "--list", "empty")
    assert_one_line_error(result, "has no active subscribers")
    # Nothing half-done is left behind: the whole start was one transaction.
    assert count_rows(engine, "campaign") == 0 and count_rows(engine, "delivery") == 0


def test_send_to_a_missing_list_is_refused_in_one_line(engine):
    assert_one_line_error(run_on(engine)("send", str(EXAMPLE), "--list", "no-such-list"),
                          "no list named 'no-such-list'")
    assert count_rows(engine, "campaign") == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the file is read before the database
def test_send_of_a_missing_issue_file_is_refused_in_one_line(engine, tmp_path):
    seed_list(engine, 3, list_name="weekly")
    assert_one_line_error(cli("send", str(tmp_path / "missing.md"), "--list", "weekly"), "no such file")
    assert count_rows(engine, "campaign") == 0


def test_a_subject_with_cr_lf_in_the_front_matter_is_refused_by_the_issue_parser(engine, tmp_path):
    seed_list(engine, 3, list_name="weekly")
    issue = tmp_path / "evil.md"
    issue.write_text('---\nsubject: "Hello\\r\\nBcc: victim@example.org"\nslug: evil\n---\n\nBody.\n', encoding="utf-8")
    result = run_on(engine)("send", str(issue), "--list", "weekly")
    assert_one_line_error(result, "subject")
    assert count_rows(engine, "campaign") == 0 and count_rows(engine, "issue") == 0


def test_issue_row_is_unchanged_by_a_refused_send(engine):
    """A refused send leaves no issue row half-written either (same transaction)."""
    seed_list(engine, 2, list_name="empty", status="unsubscribed")
    assert run_on(engine)("send", str(EXAMPLE), "--list", "empty").returncode == 2
    with transaction(engine) as s:
        assert s.query(Issue).count() == 0


LONG_ISSUE = "---\nsubject: Too long\n---\n\n" + "\n\n".join(["A long paragraph about models and chips. " * 40] * 70)


def test_send_is_refused_by_preflight_in_one_line_and_override_starts_it(engine, tmp_path):
    seed_list(engine, 2)
    path = tmp_path / "too-long.md"
    path.write_text(LONG_ISSUE, encoding="utf-8")
    refused = cli("send", path, "--list", "weekly")
    assert_one_line_error(refused, "pre-flight failed: size: the HTML is ", "--override-preflight")
    assert count_rows(engine, "delivery") == 0
    assert count_rows(engine, "issue") == 0  # the refused send saved nothing either

    assert cli("issue", "create", path).returncode == 0
    checked = cli("campaign", "preflight", "too-long", "--list", "weekly", "--json")
    assert checked.returncode == 2 and json.loads(checked.stdout)["passed"] is False
    assert "pre-flight failed: size" in checked.stderr

    started = cli("send", path, "--list", "weekly", "--override-preflight")
    assert started.returncode == 0, started.stderr
    assert "is sending (2 deliveries queued)" in started.stdout
    assert "fail  size: the HTML is" in started.stderr
    assert "pre-flight failed and was overridden" in started.stderr
    assert count_rows(engine, "delivery") == 2


def test_preflight_command_prints_every_check(engine):
    seed_list(engine, 1)
    assert cli("issue", "create", EXAMPLE).returncode == 0
    result = cli("campaign", "preflight", "china-ai-weekly-2022-06-14", "--list", "weekly")
    assert result.returncode == 0, result.stderr
    names = [line.split()[1].rstrip(":") for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert names == ["size", "links", "one-click", "dkim", "spamassassin", "complaints"]


def test_send_to_a_segment_queues_exactly_its_members(engine):
    from sqlalchemy import update

    from subscribers.models import Subscriber

    seed_list(engine, 6, list_name="weekly")
    with transaction(engine) as s:
        s.execute(update(Subscriber).where(Subscriber.id <= 2).values(tags=["founding"]))
    counted = cli("subscribers", "count", "--list", "weekly", "--segment", "tag:founding")
    assert counted.stdout.strip() == "2", counted.stderr
    sent = cli("send", str(EXAMPLE), "--list", "weekly", "--segment", "tag:founding")
    assert sent.returncode == 0, sent.stderr
    assert "(2 deliveries queued)" in sent.stdout and count_rows(engine, "delivery") == 2
    with transaction(engine) as s:
        assert s.query(Campaign).one().segment == "tag:founding"


def test_send_to_a_bad_segment_is_refused_in_one_line(engine):
    seed_list(engine, 3, list_name="weekly")
    assert_one_line_error(run_on(engine)("send", str(EXAMPLE), "--list", "weekly", "--segment", 'plan = "x"'),
                          "unknown attribute 'plan' at position 1")
    assert count_rows(engine, "campaign") == 0 and count_rows(engine, "delivery") == 0


def test_dispatch_runs_preflight_again_and_holds_what_now_fails(engine, tmp_path):
    """Scheduled days ahead with a clean pre-flight, the issue then grew past Gmail's clip:
    at its time the dispatcher checks again and holds it with the failing checks. One
    scheduled with the override starts (the editor decided); a clean one starts. The
    set-up (the sends, the update) runs in this process through the same ``main``; the
    commands under test, dispatch and status, in real processes."""
    seed_list(engine, 2)
    files = {}
    for name, body in (("changed", "Short and clean."), ("clean", "Also short."), ("overridden", None)):
        files[name] = tmp_path / f"{name}.md"
        files[name].write_text(LONG_ISSUE if body is None else f"---\nsubject: {name}\n---\n\n{body}\n",
                               encoding="utf-8")
    for name in ("changed", "clean"):
        scheduled = cli_in_process("send", files[name], "--list", "weekly", "--at", "2099-03-01T09:00Z")
        assert scheduled.returncode == 0, scheduled.stderr
    assert cli_in_process("send", files["overridden"], "--list", "weekly", "--at", "2099-03-02T09:00Z",
                          "--override-preflight").returncode == 0
    with transaction(engine) as s:
        ids = {issue.slug: c.id for c, issue in s.query(Campaign, Issue).join(Issue, Issue.id == Campaign.issue_id)}
        changed_issue = s.get(Campaign, ids["changed"]).issue_id
    assert len(ids) == 3, ids
    overridden = next(cid for slug, cid in ids.items() if slug not in ("changed", "clean"))

    files["changed"].write_text(LONG_ISSUE.replace("Too long", "changed"), encoding="utf-8")
    updated = cli_in_process("issue", "update", changed_issue, files["changed"])
    assert updated.returncode == 0, updated.stderr
    with transaction(engine) as s:  # the days pass
        s.query(Campaign).update({Campaign.scheduled_at: Campaign.created_at})

    run = cli("dispatch")
    assert run.returncode == 0, run.stderr
    assert f"held [{ids['changed']}]" in run.stdout, run.stdout
    with transaction(engine) as s:
        held = s.get(Campaign, ids["changed"])
        assert held.status == "draft" and held.pause_reason.startswith("pre-flight failed: size: the HTML is ")
        assert [c["name"] for c in held.held_checks["checks"] if c["state"] == "fail"] == ["size"]
        assert s.get(Campaign, ids["clean"]).status == "sending"
        assert s.get(Campaign, overridden).status == "sending"
    assert count_rows(engine, "delivery") == 4  # the two that started, two readers each

    shown = cli("campaign", "status", ids["changed"])
    assert shown.returncode == 0, shown.stderr
    first, *checks = shown.stdout.strip().splitlines()
    assert ": draft;" in first and "; held: pre-flight failed: size: the HTML is " in first
    assert checks and checks[0].startswith("fail  size: the HTML is ")
    as_json = json.loads(cli_in_process("campaign", "status", ids["changed"], "--json").stdout)
    assert {c["name"]: c["state"] for c in as_json["held_checks"]["checks"]}["size"] == "fail"
    assert cli_in_process("dispatch").stdout.startswith("started none; held none")  # held once, not again
