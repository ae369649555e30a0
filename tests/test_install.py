"""A clean install runs the product: a venv made by ``pip install .`` alone (no test
extras, no checkout on the path) sends a real campaign through PostgreSQL, the Redis
broker and an SMTP relay, serves the web app, and runs the embedded demo. Test extras
would hide a runtime dependency nothing declares (kombu's Redis transport imports
``packaging``, for one); this venv has none of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.example import EXAMPLE, ROOT
from tests.support.dns import rsa_pem
from tests.support.services import free_port

# One xdist process runs the whole module, so the clean venv is built once.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.xdist_group("clean-venv")]


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("clean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)], capture_output=True, text=True,
                               timeout=480)
    assert installed.returncode == 0, installed.stderr[-3000:]
    extras = subprocess.run([str(venv / "bin" / "python"), "-c", "import pytest"], capture_output=True)
    assert extras.returncode != 0, "the clean venv must not have the test extras"
    return venv


def run(venv: Path, *args, env: dict, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([str(venv / "bin" / "newsletter"), *map(str, args)], env=env, cwd=cwd, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def clean_env(venv: Path, **settings: str) -> dict[str, str]:
    """Only what a user's shell would have: no PYTHONPATH, no test settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NEWSLETTER_", "PYTHON", "VIRTUAL_ENV", "PYTEST"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update({f"NEWSLETTER_{k.upper()}": v for k, v in settings.items()})
    return env


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_the_production_path_from_a_clean_install(clean_venv, tmp_path, postgres_url, redis_url, smtp_sink):
    env = clean_env(clean_venv, database_url=postgres_url, broker_url=redis_url, var_dir=str(tmp_path / "var"),
                    smtp_url=f"smtp://127.0.0.1:{smtp_sink.port}", secret_key="a production secret",
                    env="production", base_url="https://news.example.com",
                    # Pre-flight refuses a production start without DKIM (Gmail and Yahoo require it).
                    dkim_selector="s2026", dkim_domain="example.com", dkim_private_key=rsa_pem(tmp_path / "dkim.pem"))
    run(clean_venv, "db", "upgrade", env=env, cwd=tmp_path)
    for who in ("ann", "bob", "cy"):
        run(clean_venv, "subscribers", "add", f"{who}@example.com", "--list", "weekly", "--confirmed", env=env,
            cwd=tmp_path)
    run(clean_venv, "send", EXAMPLE, "--list", "weekly", env=env, cwd=tmp_path)
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen([str(clean_venv / "bin" / "newsletter"), "worker", "--concurrency", "1",
                               "--without-gossip", "--without-mingle", "--without-heartbeat"],
                              env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    port = free_port()
    web = subprocess.Popen([str(clean_venv / "bin" / "newsletter"), "web", "--port", str(port)], env=env, cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while len(smtp_sink.messages) < 3:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        assert sorted(r for m in smtp_sink.messages for r in m.rcpt_tos) == [
            "ann@example.com", "bob@example.com", "cy@example.com"]
        assert all(b"DKIM-Signature:" in m.content.split(b"\r\n\r\n", 1)[0] for m in smtp_sink.messages)
        archive = ""
        while "Megvii" not in archive:
            assert web.poll() is None and time.monotonic() < deadline, "the web app did not answer"
            try:
                archive = urllib.request.urlopen(f"http://127.0.0.1:{port}/issues/", timeout=5).read().decode()
            except OSError:
                time.sleep(0.2)
    finally:
        stop(worker)
        stop(web)
        log.close()
    status = run(clean_venv, "campaign", "status", "--json", env=env, cwd=tmp_path)
    assert '"sent": 3' in status.stdout


def test_the_embedded_demo_from_a_clean_install(clean_venv, tmp_path):
    result = run(clean_venv, "demo", "--timeout", "200", env=clean_env(clean_venv), cwd=tmp_path, timeout=280)
    assert "sent 300" in result.stdout
    assert len(list((tmp_path / "var" / "outbox").glob("*.eml"))) == 300
