"""For the fault drills: a private PostgreSQL cluster and a private Redis server (both on
free ports, so a drill can restart them without touching the shared ones), a stack of
settings for worker processes, and the figures each drill reports at the end of the run.

Load as a pytest plugin: its ``pytest_terminal_summary`` prints the drills' figures."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.support.services import free_port, need

_PENDING: list[dict] = []  # reported by the running test, not yet on its report
FIGURES: list[dict] = []  # collected from the reports (under xdist, in the controlling process)


def report(drill: str, **figures) -> None:
    """Keep a drill's figures (delivered, duplicates, seconds...) for the summary."""
    _PENDING.append({"drill": drill, **figures})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item, call):
    # The figures travel on the test's report (user_properties), which pytest-xdist sends
    # from its worker processes to the one that prints the summary.
    while _PENDING:
        item.user_properties.append(("drill", _PENDING.pop(0)))


def pytest_runtest_logreport(report):
    if report.when == "call":
        FIGURES.extend(value for key, value in report.user_properties if key == "drill")


def pytest_terminal_summary(terminalreporter):
    if not FIGURES:
        return
    terminalreporter.section("fault drills")
    for row in FIGURES:
        terminalreporter.write_line("  ".join(f"{k}={v}" for k, v in row.items()))


@dataclass
class PostgresCluster:
    """``pg_createcluster`` on a free port, trust authentication, dropped by its fixture."""

    version: str
    name: str
    port: int

    @classmethod
    def create(cls) -> "PostgresCluster":
        if not shutil.which("pg_createcluster") or not Path("/etc/postgresql").is_dir():
            need("pg_createcluster (Debian's postgresql-common) is not installed")
        version = sorted(os.listdir("/etc/postgresql"), key=lambda v: float(v))[-1]
        cluster = cls(version, f"drill{uuid.uuid4().hex[:8]}", free_port())
        subprocess.run(["pg_createcluster", version, cluster.name, "-p", str(cluster.port), "--",
                        "--auth-host=trust", "--auth-local=trust"], check=True, capture_output=True, timeout=120)
        cluster.start()
        return cluster

    def start(self) -> None:
        subprocess.run(["pg_ctlcluster", self.version, self.name, "start"], check=True, capture_output=True,
                       timeout=120)

    def stop(self) -> None:
        subprocess.run(["pg_ctlcluster", self.version, self.name, "stop", "-m", "fast"], check=True,
                       capture_output=True, timeout=120)

    def restart(self) -> None:
        """``-m fast``: every connection is cut, as in a failover or a crash restart."""
        subprocess.run(["pg_ctlcluster", self.version, self.name, "restart", "-m", "fast"], check=True,
                       capture_output=True, timeout=120)

    def drop(self) -> None:
        subprocess.run(["pg_dropcluster", self.version, self.name, "--stop"], capture_output=True, timeout=120)

    def new_database(self) -> str:
        name = f"drill_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


@dataclass
class RedisServer:
    """``redis-server`` on a free port with no persistence: a restart forgets every task."""

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        if not shutil.which("redis-server"):
            need("redis-server is not installed")
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True,
                             text=True).stdout.strip() != "PONG":
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # as a crash: nothing saved
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def private_redis():
    """A started private Redis server, stopped after the test."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
