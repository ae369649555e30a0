"""Real ``celery worker`` processes for tests, stopped by their fixture."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent


class WorkerProcess:
    """One ``celery -A worker worker`` process with the given environment."""

    def __init__(self, env: dict[str, str], name: str, log_dir: Path, *, beat: bool = False, forks: int = 0):
        self.env = env
        self.forks = forks  # 0: the solo pool (one process); N: N forked children, as in production
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.beat = beat
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "WorkerProcess":
        cmd = [
            sys.executable, "-m", "celery", "-A", "worker", "worker", "-n", f"{self.name}@%h",
            *(("--pool=prefork", f"--concurrency={self.forks}") if self.forks else ("--pool=solo",)),
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel=INFO",
        ]
        if self.beat:
            cmd += ["--beat", "-s", str(self.log_path.with_suffix(".beat"))]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited early:\n{self.log()}")
            if b" ready." in self.log_path.read_bytes():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.name} not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        """The log's last 5,000 characters: enough to explain a failure in its message."""
        return self.full_log()[-5000:]

    def full_log(self) -> str:
        """The whole log, for assertions on what the worker did at any point of its life."""
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the worker dies mid-whatever, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update({k: v for k, v in os.environ.items() if k.startswith("NEWSLETTER_")})
    env.update(extra or {})
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.fixture
def start_worker(tmp_path):
    """Factory: ``start_worker(env_overrides, name=...)`` starts a worker process with
    the current ``NEWSLETTER_*`` environment plus overrides; all are stopped after."""
    started: list[WorkerProcess] = []

    def _start(extra: dict[str, str] | None = None, *, name: str | None = None, beat: bool = False,
               forks: int = 0) -> WorkerProcess:
        w = WorkerProcess(worker_env(extra), name or f"w{len(started) + 1}", tmp_path, beat=beat, forks=forks)
        started.append(w)
        return w.start()

    yield _start
    for w in started:
        w.stop()


# The two stacks worker tests run on: (database, broker), and their test ids.
STACKS = [("sqlite", "filesystem"), ("postgres", "redis")]
STACK_IDS = ["embedded", "postgres+redis"]


@contextmanager
def worker_stack(request, monkeypatch, tmp_path, smtp_sink, db_kind: str, broker_kind: str,
                 extra: dict[str, str] | None = None) -> Iterator:
    """The environment of a worker test, for the worker processes it starts (they inherit
    it, ``start_worker``) and for this process (settings read afresh): only these
    ``NEWSLETTER_*`` variables, a migrated database of ``db_kind`` of its own (a copy of
    the session's template, as ``database_url``), the broker (``filesystem`` or a Redis
    database of its own), the SMTP sink as relay, then ``extra`` (each test file's
    timings and limits). Yields an engine on the database."""
    from mailer.core.config import get_settings
    from mailer.core.db import make_engine
    from tests.conftest import migrated_database

    with migrated_database(request, db_kind) as url:
        broker = request.getfixturevalue("redis_url") if broker_kind == "redis" else "filesystem://"
        for key in list(os.environ):
            if key.startswith("NEWSLETTER_"):
                monkeypatch.delenv(key)
        env = {
            "NEWSLETTER_VAR_DIR": str(tmp_path / "var"),
            "NEWSLETTER_DATABASE_URL": url,
            "NEWSLETTER_BROKER_URL": broker,
            "NEWSLETTER_SMTP_URL": f"smtp://127.0.0.1:{smtp_sink.port}",
            "NEWSLETTER_FROM": "Weekly China AI <news@example.com>",
            "NEWSLETTER_BASE_URL": "https://news.example.com",
            **(extra or {}),
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()
            get_settings.cache_clear()
