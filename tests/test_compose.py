"""docker-compose.yml is valid against the compose specification (no Docker needed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.example import ROOT as REPO


def test_compose_file_validates_against_the_spec():
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    result = subprocess.run([exe, "--builtin-schema", "vendor.compose-spec", str(REPO / "docker-compose.yml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_describes_the_production_stack():
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert {"postgres", "redis", "web", "worker", "beat", "mailpit", "inbound"} <= set(services)
    assert services["inbound"]["command"][:3] == ["newsletter", "inbound", "serve"]
    env = services["worker"]["environment"]
    assert env["NEWSLETTER_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["NEWSLETTER_BROKER_URL"].startswith("redis://")
