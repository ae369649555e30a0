"""`newsletter demo` on the embedded default: a real worker process, the outbox folder,
and no second copy when it runs again."""

from __future__ import annotations

import csv
import email
import email.policy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.example import ROOT as REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def run_demo(var: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_VAR_DIR"] = str(var)
    return subprocess.run([sys.executable, "-m", "mailer.cli", "demo", "--timeout", "200"], cwd=var.parent,
                          env=env, capture_output=True, text=True, timeout=280)


def test_demo_sends_one_message_per_subscriber_and_never_twice(tmp_path):
    var = tmp_path / "var"
    with open(REPO / "examples" / "subscribers.csv", newline="", encoding="utf-8") as fh:
        expected = {row["email"].lower() for row in csv.DictReader(fh)}

    first = run_demo(var)
    assert first.returncode == 0, first.stdout + first.stderr
    files = sorted((var / "outbox").glob("*.eml"))
    assert len(files) == len(expected) == 300
    recipients = set()
    for f in files:
        msg = email.message_from_bytes(f.read_bytes(), policy=email.policy.default)
        recipients.add(msg["To"].addresses[0].addr_spec.lower())
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert recipients == expected
    assert "sent 300" in first.stdout and str(var / "outbox") in first.stdout

    second = run_demo(var)
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(list((var / "outbox").glob("*.eml"))) == 300
    assert "nothing was sent again" in second.stdout
