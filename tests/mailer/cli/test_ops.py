"""``newsletter doctor`` and ``newsletter status`` as an operator runs them: real
processes. Doctor against a DNS server on loopback (its address from
NEWSLETTER_DNS_RESOLVER or --resolver) and a relay with STARTTLS: exit 0 when everything
is right, 2 with one line and the records to publish when not, or when no DNS answers.
Status against a real worker running beat, a real relay, both databases."""

from __future__ import annotations

import json
import re
import time

import pytest

from mailer.campaigns import pause_campaign
from mailer.core.db import transaction
from tests.support.cli import assert_one_line_error, cli
from tests.support.dns import dns_server, right_zone
from tests.support.seed import seed_campaign
from tests.support.services import free_port
from tests.support.smtpd import stop_quietly


def test_doctor_passes_a_right_deployment(deployment, relay, monkeypatch):
    with dns_server(right_zone(deployment)) as where:
        monkeypatch.setenv("NEWSLETTER_DNS_RESOLVER", where)
        result = cli("doctor", "--ca-file", relay.cert_path, "--timeout", "2")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["pass"] * 6
    assert "records to publish" not in result.stdout


def test_doctor_names_what_is_wrong_and_prints_the_record_to_publish(deployment, relay):
    zone = right_zone(deployment)
    zone.remove("_dmarc.example.com", "TXT")
    zone.remove("example.com", "MX")
    with dns_server(zone) as where:
        result = cli("doctor", "--resolver", where, "--ca-file", relay.cert_path, "--mx-host", "inbound.example.com")
    assert_one_line_error(result, "doctor: 2 problem(s): dmarc, mx")
    assert "fail  dmarc: _dmarc.example.com: no DMARC record" in result.stdout
    assert result.stdout.splitlines()[-3:] == [
        "records to publish:",
        '  _dmarc.example.com. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@example.com"',
        "  example.com. IN MX 10 inbound.example.com.",
    ]


def test_doctor_offline_is_one_line_and_still_prints_the_records(deployment, relay):
    result = cli("doctor", "--resolver", f"127.0.0.1:{free_port()}", "--timeout", "1", "--ca-file", relay.cert_path)
    line = assert_one_line_error(result, "DNS does not answer (127.0.0.1:", "the records above were not checked")
    assert line.startswith("error: ")
    assert "records to publish (not checked):" in result.stdout
    assert "s2026._domainkey.example.com. IN TXT" in result.stdout and "_dmarc.example.com. IN TXT" in result.stdout


def test_doctor_with_an_unreadable_ca_file_is_one_line(deployment, tmp_path):
    assert_one_line_error(cli("doctor", "--ca-file", tmp_path / "missing.pem"), "--ca-file: cannot read")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_status_shows_the_workers_beat_the_services_and_the_campaigns_in_flight(settings, engine, smtp_sink,
                                                                                  monkeypatch, start_worker):
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", smtp_sink.url)
    monkeypatch.setenv("NEWSLETTER_SWEEP_SECONDS", "1")
    monkeypatch.setenv("NEWSLETTER_DISPATCH_SECONDS", "1")
    cid = seed_campaign(engine, 5)
    with transaction(engine) as s:
        assert pause_campaign(s, campaign_id=cid)
    worker = start_worker(beat=True, name="statusw")
    deadline = time.monotonic() + 60
    while not all((settings.broker_folder / "beat" / task).exists() for task in ("sweep", "dispatch")):
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)

    result = cli("status", "--json", "--timeout", "5")
    assert result.returncode == 0, (result.stdout, result.stderr)
    found = json.loads(result.stdout)
    assert found["services"] == {"database": "ok", "broker": "ok", "relay": "ok"}
    assert [w.split("@")[0] for w in found["workers"]] == ["statusw"]
    assert found["beat"]["sweep"] is not None and found["beat"]["dispatch"] is not None
    assert found["campaigns"] == [{"id": cid, "status": "paused", "total": 5, "sent": 0, "failed": 0, "bounced": 0,
                                   "skipped": 0}]
    assert found["webhooks"] == {"waiting": 0, "failed": 0, "oldest_waiting": None}

    text = cli("status", "--timeout", "5")
    assert text.returncode == 0, text.stderr
    assert "workers: statusw@" in text.stdout and "beat sweep: " in text.stdout
    assert f"campaign {cid}: paused, 0 of 5 done" in text.stdout


def test_status_without_a_worker_or_a_relay_is_one_line_naming_them(settings, smtp_sink, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", smtp_sink.url)
    stop_quietly(smtp_sink)
    result = cli("status", "--timeout", "1")
    assert_one_line_error(result, "status: relay, no worker answered")
    assert "workers: none answered" in result.stdout and "beat sweep: never seen" in result.stdout
    assert "campaigns in flight: none" in result.stdout
    assert "webhooks: 0 waiting; 0 given up" in result.stdout


def test_status_shows_the_webhooks_waiting_and_how_old_the_oldest_is(settings, engine, smtp_sink, monkeypatch):
    from datetime import timedelta

    from mailer.core.clock import utcnow
    from mailer.models import WebhookDelivery
    from mailer.operations import webhooks

    monkeypatch.setenv("NEWSLETTER_SMTP_URL", smtp_sink.url)
    with transaction(engine) as s:
        endpoint = webhooks.add(s, url="https://hooks.example.com/in", events=["subscriber.unsubscribed"])
        written = utcnow() - timedelta(minutes=30)
        for n, status in enumerate(["pending", "pending", "failed"]):
            s.add(WebhookDelivery(endpoint_id=endpoint.id, event_id=f"e{n}", message_id=f"m{n}",
                                  event_type="subscriber.unsubscribed", body="{}", status=status,
                                  created_at=written + timedelta(minutes=n), next_attempt_at=written))
    result = cli("status", "--json", "--timeout", "1")  # no worker: exit 2, the report all the same
    found = json.loads(result.stdout)
    assert found["webhooks"]["waiting"] == 2 and found["webhooks"]["failed"] == 1
    assert found["webhooks"]["oldest_waiting"] == written.isoformat()
    text = cli("status", "--timeout", "1")
    line = re.search(r"webhooks: 2 waiting, the oldest written (\d+) s ago \((.+)\); 1 given up", text.stdout)
    assert line and 1800 <= int(line.group(1)) < 1900, text.stdout


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_status_on_the_redis_broker_sees_the_worker_and_beat_and_then_their_silence(settings, engine, smtp_sink,
                                                                                    redis_url, monkeypatch,
                                                                                    start_worker):
    """The production path: Celery's remote control over Redis finds the worker, and
    beat's runs are read back from the Redis keys each run writes."""
    import redis

    monkeypatch.setenv("NEWSLETTER_BROKER_URL", redis_url)
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", smtp_sink.url)
    monkeypatch.setenv("NEWSLETTER_SWEEP_SECONDS", "1")
    monkeypatch.setenv("NEWSLETTER_DISPATCH_SECONDS", "1")
    client = redis.Redis.from_url(redis_url)
    assert client.get("newsletter:beat:sweep") is None
    worker = start_worker(beat=True, name="redisw")
    deadline = time.monotonic() + 60
    while not all(client.get(f"newsletter:beat:{task}") for task in ("sweep", "dispatch")):
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.2)

    stamp = float(client.get("newsletter:beat:sweep"))
    result = cli("status", "--json", "--timeout", "5")
    assert result.returncode == 0, (result.stdout, result.stderr)
    found = json.loads(result.stdout)
    assert found["services"] == {"database": "ok", "broker": "ok", "relay": "ok"}
    assert [w.split("@")[0] for w in found["workers"]] == ["redisw"]
    from datetime import datetime

    # What status shows is what beat wrote on Redis: that run, or a later one (every second).
    assert datetime.fromisoformat(found["beat"]["sweep"]).timestamp() >= stamp - 0.001
    assert found["beat"]["dispatch"] is not None and found["campaigns"] == []

    worker.stop()
    silent = cli("status", "--timeout", "2")
    assert_one_line_error(silent, "no worker answered")
    assert "workers: none answered" in silent.stdout and "beat sweep: " in silent.stdout
    assert "never seen" not in silent.stdout  # beat's last runs stay on the broker
    client.close()
