"""Each editor action exists once (``mailer.operations``): driven through the CLI, the
admin API and the dashboard, it leaves the same state and gives the same refusal for
the same bad input. One test per action; each adapter works on its own issue, list or
campaign in one database, and the state compared leaves out what differs by design
(ids, slugs)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, update

from mailer.core.db import transaction
from mailer.models import (
    Batch,
    BatchStatus,
    Campaign,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    Issue,
    Schedule,
)
from mailer.operations import campaigns as campaign_ops
from mailer.operations import issues as issue_ops
from subscribers.models import MailingList, Subscriber, SubscriberStatus
from tests.conftest import migrated_database
from tests.support.adapters import (
    ADAPTERS,
    Adapters,
    all_ok,
    from_api,
    from_cli,
    same_refusal,
)
from tests.support.seed import seed_list

pytestmark = pytest.mark.timeout(180)
FUTURE = (datetime.now(timezone.utc) + timedelta(days=40)).replace(second=0, microsecond=0)
LATER = FUTURE + timedelta(days=7)


@pytest.fixture
def database_url(request):
    """These compare adapters, not databases: SQLite only (every operation also runs on
    PostgreSQL in its own tests); a copy of the session's migrated template."""
    with migrated_database(request, "sqlite") as url:
        yield url


@pytest.fixture
def three(api, dashboard, tmp_path) -> Adapters:
    return Adapters(api, dashboard, tmp_path)


def source(slug: str, *, body: str = "Something happened this week.") -> str:
    return (f"---\nsubject: AI this week\npreheader: Models and chips\nslug: {slug}\n---\n\n## Top stories\n\n"
            f"### A new model\n\n{body} [Read more](https://example.com/a)\n")


def ids_out(adapter: str, text: str) -> str:
    """What differs by design between the adapters' runs: their slugs, lists and ids."""
    return re.sub(r"\d+", "N", re.sub(rf"\b{adapter}(?=[-@])", "X", text))


def make_issue(engine, settings, slug: str) -> int:
    with transaction(engine) as s:
        return issue_ops.create_issue(s, source=source(slug), settings=settings).id


def make_list(engine, name: str, n: int = 3) -> int:
    return seed_list(engine, n, list_name=name, start=abs(hash(name)) % 10_000 * 10)


def make_campaign(engine, settings, adapter: str, *, when="now") -> int:
    """A campaign of ``adapter``'s own issue to its own list, started (or scheduled),
    with no task queued."""
    issue_id = make_issue(engine, settings, f"{adapter}-issue")
    make_list(engine, f"{adapter}-list")
    with transaction(engine) as s:
        return campaign_ops.schedule_issue(s, issue_ref=issue_id, list_name=f"{adapter}-list", when=when,
                                           settings=settings).campaign_id


def campaign_state(engine, cid: int) -> tuple:
    with transaction(engine) as s:
        c = s.get(Campaign, cid)
        counts = dict(s.execute(select(Delivery.status, func.count()).where(Delivery.campaign_id == cid)
                                .group_by(Delivery.status)).all())
        batches = dict(s.execute(select(Batch.status, func.count()).where(Batch.campaign_id == cid)
                                 .group_by(Batch.status)).all())
        return c.status, c.pause_reason, c.scheduled_at, tuple(sorted(counts.items())), tuple(sorted(batches.items()))


def queued_tasks(settings) -> int:
    """Send tasks waiting on the embedded broker (one file each)."""
    folder = settings.broker_folder
    return sum(1 for f in folder.iterdir() if f.is_file()) if folder.exists() else 0


def test_create_issue(three, engine, settings):
    outcomes = three.each({
        "cli": lambda: from_cli("issue", "create", three.file("cli.md", source("cli-issue"))),
        "api": lambda: from_api(three.api.post("/api/admin/issues", json={"source": source("api-issue")})),
        "dashboard": lambda: three.post_page("/admin/issues/new", source=source("dashboard-issue")),
    })
    all_ok(outcomes)
    with transaction(engine) as s:
        stored = {i.slug: (i.subject, i.preheader, i.status, i.source.replace(i.slug, "X"))
                  for i in s.scalars(select(Issue))}
    assert set(stored) == {f"{a}-issue" for a in ADAPTERS} and len(set(stored.values())) == 1
    again = three.each({
        "cli": lambda: from_cli("issue", "create", three.file("cli.md", source("cli-issue"))),
        "api": lambda: from_api(three.api.post("/api/admin/issues", json={"source": source("api-issue")})),
        "dashboard": lambda: three.post_page("/admin/issues/new", source=source("dashboard-issue")),
    })
    assert "there is already an issue 'X-issue'" in same_refusal(again, normalise=ids_out)


def test_update_issue(three, engine, settings):
    ids = {a: make_issue(engine, settings, f"{a}-issue") for a in ADAPTERS}
    new = {a: source(f"{a}-issue", body="A later version.") for a in ADAPTERS}
    all_ok(three.each({
        "cli": lambda: from_cli("issue", "update", ids["cli"], three.file("cli.md", new["cli"])),
        "api": lambda: from_api(three.api.put(f"/api/admin/issues/{ids['api']}", json={"source": new["api"]})),
        "dashboard": lambda: three.post_page(f"/admin/issues/{ids['dashboard']}", source=new["dashboard"]),
    }))
    with transaction(engine) as s:
        assert all("A later version." in s.get(Issue, i).source and "A later version." in s.get(Issue, i).html
                   for i in ids.values())
    # Once it is sending, the stored copy is what subscribers got: no more changes.
    for a in ADAPTERS:
        make_list(engine, f"{a}-list")
        with transaction(engine) as s:
            campaign_ops.schedule_issue(s, issue_ref=ids[a], list_name=f"{a}-list", when="now", settings=settings)
    refused = three.each({
        "cli": lambda: from_cli("issue", "update", ids["cli"], three.file("cli.md", source("cli-issue"))),
        "api": lambda: from_api(three.api.put(f"/api/admin/issues/{ids['api']}",
                                              json={"source": source("api-issue")})),
        "dashboard": lambda: three.post_page(f"/admin/issues/{ids['dashboard']}", source=source("dashboard-issue")),
    })
    assert "is already sending" in same_refusal(refused, normalise=ids_out)


def test_delete_issue(three, engine, settings):
    ids = {a: make_issue(engine, settings, f"{a}-issue") for a in ADAPTERS}
    all_ok(three.each({
        "cli": lambda: from_cli("issue", "delete", ids["cli"]),
        "api": lambda: from_api(three.api.delete(f"/api/admin/issues/{ids['api']}")),
        "dashboard": lambda: three.post_page(f"/admin/issues/{ids['dashboard']}/delete"),
    }))
    with transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(Issue)) == 0
    planned = {a: make_campaign(engine, settings, a, when=FUTURE) for a in ADAPTERS}
    with transaction(engine) as s:
        issue_of = {a: s.get(Campaign, cid).issue_id for a, cid in planned.items()}
    refused = three.each({
        "cli": lambda: from_cli("issue", "delete", issue_of["cli"]),
        "api": lambda: from_api(three.api.delete(f"/api/admin/issues/{issue_of['api']}")),
        "dashboard": lambda: three.post_page(f"/admin/issues/{issue_of['dashboard']}/delete"),
    })
    assert "only an issue with no campaign can be deleted" in same_refusal(refused, normalise=ids_out)


def test_send_a_test(three, engine, settings):
    ids = {a: make_issue(engine, settings, f"{a}-issue") for a in ADAPTERS}
    all_ok(three.each({
        "cli": lambda: from_cli("issue", "test", "cli-issue", "--to", "cli@example.com"),
        "api": lambda: from_api(three.api.post(f"/api/admin/issues/{ids['api']}/test",
                                               json={"to": ["api@example.com"]})),
        "dashboard": lambda: three.post_page(f"/admin/issues/{ids['dashboard']}/test", to="dashboard@example.com"),
    }))
    sent = sorted(settings.outbox_dir.glob("*.eml"))
    heads = [f.read_bytes().split(b"\r\n\r\n", 1)[0] for f in sent]
    assert len(sent) == 3 and all(b"Subject: [TEST] AI this week" in h for h in heads)
    assert sorted(re.search(rb"\nTo: <?([^>\r]+)", h).group(1) for h in heads) == [
        b"api@example.com", b"cli@example.com", b"dashboard@example.com"]
    refused = three.each({
        "cli": lambda: from_cli("issue", "test", "cli-issue", "--to", "not an address"),
        "api": lambda: from_api(three.api.post(f"/api/admin/issues/{ids['api']}/test",
                                               json={"to": ["not an address"]})),
        "dashboard": lambda: three.post_page(f"/admin/issues/{ids['dashboard']}/test", to="not an address"),
    })
    assert same_refusal(refused).startswith("not an address: 'not an address'")
    assert len(list(settings.outbox_dir.glob("*.eml"))) == 3


def test_schedule_an_issue_at_a_time(three, engine, settings):
    ids = {a: make_issue(engine, settings, f"{a}-issue") for a in ADAPTERS}
    for a in ADAPTERS:
        make_list(engine, f"{a}-list")
    at, tz = FUTURE.strftime("%Y-%m-%dT%H:%M"), "Asia/Shanghai"

    def run(when_at: str, zone: str):
        return three.each({
            "cli": lambda: from_cli("send", "cli-issue", "--list", "cli-list", "--at", when_at, "--tz", zone),
            "api": lambda: from_api(three.api.post("/api/admin/campaigns", json={
                "issue": ids["api"], "list": "api-list", "at": when_at, "tz": zone})),
            "dashboard": lambda: three.post_page(f"/admin/issues/{ids['dashboard']}/schedule", list="dashboard-list",
                                                 when="at", at=when_at, tz=zone),
        })

    all_ok(run(at, tz))
    with transaction(engine) as s:
        found = {(c.status, c.scheduled_at) for c in s.scalars(select(Campaign))}
    assert found == {(CampaignStatus.scheduled, FUTURE - timedelta(hours=8))}  # 09:00 in Shanghai is 01:00 UTC
    assert "unknown time zone 'Mars/Olympus'" in same_refusal(run(at, "Mars/Olympus"))


def test_start_an_issue_now(three, engine, settings):
    ids = {a: make_issue(engine, settings, f"{a}-issue") for a in ADAPTERS}
    lists = {a: make_list(engine, f"{a}-list", n=5) for a in ADAPTERS}

    def run():
        return three.each({
            "cli": lambda: from_cli("send", "cli-issue", "--list", "cli-list"),
            "api": lambda: from_api(three.api.post("/api/admin/campaigns", json={
                "issue": ids["api"], "list": "api-list", "now": True})),
            "dashboard": lambda: three.post_page(f"/admin/issues/{ids['dashboard']}/schedule", list="dashboard-list",
                                                 when="now"),
        })

    before = queued_tasks(settings)
    all_ok(run())
    assert queued_tasks(settings) - before == 3  # one batch each, one task each
    with transaction(engine) as s:
        cids = s.scalars(select(Campaign.id)).all()
    assert len(cids) == len(lists) == 3
    assert {campaign_state(engine, cid)[::3] for cid in cids} == {(CampaignStatus.sending, ((DeliveryStatus.queued, 5),))}
    assert "is already sending; nothing new was started" in same_refusal(run(), normalise=ids_out)


def test_pause(three, engine, settings):
    cids = {a: make_campaign(engine, settings, a) for a in ADAPTERS}
    run = lambda: three.each({  # noqa: E731
        "cli": lambda: from_cli("campaign", "pause", cids["cli"]),
        "api": lambda: from_api(three.api.post(f"/api/admin/campaigns/{cids['api']}/pause")),
        "dashboard": lambda: three.post_page(f"/admin/campaigns/{cids['dashboard']}/pause"),
    })
    all_ok(run())
    assert len({campaign_state(engine, cid) for cid in cids.values()}) == 1
    assert campaign_state(engine, cids["cli"])[:2] == (CampaignStatus.paused, "paused by the editor")
    assert same_refusal(run(), normalise=ids_out) == "campaign N is paused; it cannot be paused"


def test_resume_queues_one_task_per_claimable_batch(three, engine, settings):
    cids = {}
    for a in ADAPTERS:
        issue_id = make_issue(engine, settings, f"{a}-issue")
        make_list(engine, f"{a}-list", n=5)
        with transaction(engine) as s:
            cids[a] = campaign_ops.schedule_issue(s, issue_ref=issue_id, list_name=f"{a}-list", when="now",
                                                  settings=settings.model_copy(update={"batch_size": 2})).campaign_id
            campaign_ops.pause(s, campaign_id=cids[a])
    run = lambda: three.each({  # noqa: E731
        "cli": lambda: from_cli("campaign", "resume", cids["cli"]),
        "api": lambda: from_api(three.api.post(f"/api/admin/campaigns/{cids['api']}/resume")),
        "dashboard": lambda: three.post_page(f"/admin/campaigns/{cids['dashboard']}/resume"),
    })
    before = queued_tasks(settings)
    all_ok(run())
    assert queued_tasks(settings) - before == 3 * 3  # 5 deliveries in batches of 2: three tasks each
    assert {campaign_state(engine, cid)[0] for cid in cids.values()} == {CampaignStatus.sending}
    assert same_refusal(run(), normalise=ids_out) == "campaign N is sending; it cannot be resumed"


def test_cancel(three, engine, settings):
    cids = {a: make_campaign(engine, settings, a) for a in ADAPTERS}
    run = lambda: three.each({  # noqa: E731
        "cli": lambda: from_cli("campaign", "cancel", cids["cli"]),
        "api": lambda: from_api(three.api.post(f"/api/admin/campaigns/{cids['api']}/cancel")),
        "dashboard": lambda: three.post_page(f"/admin/campaigns/{cids['dashboard']}/cancel"),
    })
    all_ok(run())
    states = {campaign_state(engine, cid)[::3] for cid in cids.values()}
    assert states == {(CampaignStatus.cancelled, ((DeliveryStatus.skipped, 3),))}
    assert same_refusal(run(), normalise=ids_out) == "campaign N is cancelled; it cannot be cancelled"


def test_retry_the_failed(three, engine, settings):
    cids = {a: make_campaign(engine, settings, a) for a in ADAPTERS}
    with transaction(engine) as s:  # two of each campaign's three deliveries failed for good
        for cid in cids.values():
            failed = s.scalars(select(Delivery.id).where(Delivery.campaign_id == cid).limit(2)).all()
            s.execute(update(Delivery).where(Delivery.id.in_(failed)).values(status=DeliveryStatus.failed))
            s.execute(update(Campaign).where(Campaign.id == cid).values(failed=2))
            s.execute(update(Batch).where(Batch.campaign_id == cid).values(status=BatchStatus.done))
    run = lambda: three.each({  # noqa: E731
        "cli": lambda: from_cli("campaign", "retry", cids["cli"]),
        "api": lambda: from_api(three.api.post(f"/api/admin/campaigns/{cids['api']}/retry")),
        "dashboard": lambda: three.post_page(f"/admin/campaigns/{cids['dashboard']}/retry"),
    })
    before = queued_tasks(settings)
    all_ok(run())
    assert queued_tasks(settings) - before == 3
    states = {campaign_state(engine, cid)[::3] for cid in cids.values()}
    assert states == {(CampaignStatus.sending, ((DeliveryStatus.queued, 3),))}
    with transaction(engine) as s:
        for cid in cids.values():
            campaign_ops.cancel(s, campaign_id=cid)
    assert same_refusal(run(), normalise=ids_out) == "campaign N was cancelled"


def test_reschedule(three, engine, settings):
    cids = {a: make_campaign(engine, settings, a, when=FUTURE) for a in ADAPTERS}
    at = LATER.strftime("%Y-%m-%dT%H:%M")
    run = lambda: three.each({  # noqa: E731
        "cli": lambda: from_cli("campaign", "reschedule", cids["cli"], "--at", at, "--tz", "UTC"),
        "api": lambda: from_api(three.api.post(f"/api/admin/campaigns/{cids['api']}/reschedule",
                                               json={"at": at, "tz": "UTC"})),
        "dashboard": lambda: three.post_page(f"/admin/campaigns/{cids['dashboard']}/reschedule", at=at, tz="UTC"),
    })
    all_ok(run())
    assert {campaign_state(engine, cid)[:3] for cid in cids.values()} == {(CampaignStatus.scheduled, "", LATER)}
    with transaction(engine) as s:
        for cid in cids.values():
            s.execute(update(Campaign).where(Campaign.id == cid).values(status=CampaignStatus.sending))
    assert same_refusal(run(), normalise=ids_out) == (
        "campaign N is sending; only a draft or scheduled one can be moved")


def test_set_a_weekly_slot(three, engine, settings):
    lists = {a: make_list(engine, f"{a}-list") for a in ADAPTERS}

    def run(zone: str):
        return three.each({
            "cli": lambda: from_cli("schedule", "set", "--list", "cli-list", "--day", "tuesday", "--time", "09:00",
                                    "--tz", zone),
            "api": lambda: from_api(three.api.put("/api/admin/schedules/api-list", json={
                "weekday": "tuesday", "time": "09:00", "timezone": zone})),
            "dashboard": lambda: three.post_page(f"/admin/schedules/{lists['dashboard']}", weekday="tuesday",
                                                 time="09:00", timezone=zone),
        })

    all_ok(run("Asia/Shanghai"))
    with transaction(engine) as s:
        slots = {(sch.weekday, sch.local_time, sch.timezone, sch.active) for sch in s.scalars(select(Schedule))}
    assert slots == {(1, "09:00", "Asia/Shanghai", True)}
    assert "unknown time zone 'Atlantis/Capital'" in same_refusal(run("Atlantis/Capital"))
    with transaction(engine) as s:
        assert {sch.timezone for sch in s.scalars(select(Schedule))} == {"Asia/Shanghai"}


def test_add_a_subscriber(three, engine, settings):
    def run(email: str):
        return three.each({
            "cli": lambda: from_cli("subscribers", "add", email.format("cli"), "--name", "Ann", "--list", "weekly"),
            "api": lambda: from_api(three.api.post("/api/admin/subscribers", json={
                "email": email.format("api"), "name": "Ann", "list": "weekly"})),
            "dashboard": lambda: three.post_page("/admin/subscribers", email=email.format("dashboard"), name="Ann",
                                                 list="weekly"),
        })

    all_ok(run("{}@example.com"))
    with transaction(engine) as s:
        found = {(sub.name, sub.status) for sub in s.scalars(select(Subscriber))}
        members = s.scalar(select(func.count()).select_from(MailingList))
    assert found == {("Ann", SubscriberStatus.pending)} and members == 1
    assert same_refusal(run("{}@"), normalise=ids_out).startswith("not an email address: 'X@'")


def test_edit_a_subscriber(three, engine, settings):
    with transaction(engine) as s:
        from subscribers import service

        subs = {a: service.add_subscriber(s, email=f"{a}@example.com", list_name="weekly").id for a in ADAPTERS}

    def run(status: str):
        return three.each({
            "cli": lambda: from_cli("subscribers", "edit", "cli@example.com", "--name", "Bo", "--status", status),
            "api": lambda: from_api(three.api.patch(f"/api/admin/subscribers/{subs['api']}",
                                                    json={"name": "Bo", "status": status})),
            "dashboard": lambda: three.post_page(f"/admin/subscribers/{subs['dashboard']}", name="Bo", status=status),
        })

    all_ok(run(SubscriberStatus.active))
    all_ok(run(SubscriberStatus.unsubscribed))
    with transaction(engine) as s:
        assert {(sub.name, sub.status) for sub in s.scalars(select(Subscriber))} == {
            ("Bo", SubscriberStatus.unsubscribed)}
    refusal = same_refusal(run(SubscriberStatus.active), normalise=ids_out)
    assert refusal == "X@example.com is unsubscribed; only their own confirmation can bring them back"


def test_import_subscribers(three, engine, settings):
    rows = "email,name,city\n{a}1@example.com,Ann,Paris\n{a}2@example.com,Bob,Rome\nbroken,Cy,Oslo\n"

    def run(content: str):
        return three.each({
            "cli": lambda: from_cli("subscribers", "import", three.file("cli.csv", content.format(a="cli")),
                                    "--list", "cli-list", "--confirmed"),
            "api": lambda: from_api(three.api.post("/api/admin/subscribers/import", data={
                "list": "api-list", "confirmed": "true"}, files={"file": ("a.csv", content.format(a="api"))})),
            "dashboard": lambda: three.upload_page("/admin/subscribers/import", {
                "file": ("d.csv", content.format(a="dashboard"))}, list="dashboard-list", confirmed="yes"),
        })

    all_ok(run(rows))
    with transaction(engine) as s:
        found = {(sub.email.split("@")[0][-1], sub.name, sub.status, sub.attributes["city"])
                 for sub in s.scalars(select(Subscriber))}
        lists = s.scalars(select(MailingList.name)).all()
    assert found == {("1", "Ann", SubscriberStatus.active, "Paris"), ("2", "Bob", SubscriberStatus.active, "Rome")}
    assert sorted(lists) == ["api-list", "cli-list", "dashboard-list"]
    assert "the CSV header has no email column" in same_refusal(run("name,city\nAnn,Paris\n"))


def test_import_a_platform_export_and_a_dry_run(three, engine, settings):
    rows = ('"Email Address","First Name",OPTIN_TIME,TAGS\n'
            '{a}@example.com,Ann,"2021-03-01 10:00:00","""founding"""\n')

    def run(content: str, **extra):
        return three.each({
            "cli": lambda: from_cli("subscribers", "import", three.file("cli.csv", content.format(a="cli")),
                                    "--list", "weekly", "--format", "mailchimp",
                                    *(["--dry-run"] if extra else [])),
            "api": lambda: from_api(three.api.post("/api/admin/subscribers/import", data={
                "list": "weekly", "format": "mailchimp", **extra},
                files={"file": ("a.csv", content.format(a="api"))})),
            "dashboard": lambda: three.upload_page("/admin/subscribers/import", {
                "file": ("d.csv", content.format(a="dashboard"))}, list="weekly", format="mailchimp",
                **({"dry_run": "yes"} if extra else {})),
        })

    all_ok(run(rows, dry_run="true"))
    with transaction(engine) as s:
        assert s.scalars(select(Subscriber)).all() == []
    all_ok(run(rows))
    with transaction(engine) as s:
        found = {(sub.name, sub.status, tuple(sub.tags)) for sub in s.scalars(select(Subscriber))}
    assert found == {("Ann", SubscriberStatus.active, ("founding",))}
    assert "not a Mailchimp audience export" in same_refusal(run("email,name\n{a}@example.com,Ann\n"))
