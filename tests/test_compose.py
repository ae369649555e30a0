"""docker-compose.yml proven without Docker (none runs on these machines; with one, the
image is built from the Dockerfile too): valid against the Compose Specification's JSON
schema (vendored in tests/vendor/, no network), every command of a service of our image
parses as a command of the image's entry points, the healthchecks ask /readyz, beat runs
exactly once, and the bounce listener and Flower have services."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema
import pytest
import typer
import typer.main
import yaml
from typer.exceptions import TyperException

from mailer.cli import app as newsletter_app
from tests.support.example import ROOT as REPO

SCHEMA = json.loads((Path(__file__).parent / "vendor" / "compose-spec.json").read_text())
IMAGE = "newsletter:latest"


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def ours(services: dict) -> dict:
    """The services that run the project's image."""
    return {name: s for name, s in services.items() if s.get("image") == IMAGE or "build" in s}


def test_compose_file_validates_against_the_vendored_spec():
    jsonschema.validate(compose(), SCHEMA, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("breakage", [
    lambda c: c["services"]["web"].update(command=42),
    lambda c: c["services"]["web"].update(healthcheck={"tset": ["CMD", "true"]}),
    lambda c: c["services"]["worker"].update(depends_on="redis"),
    lambda c: c.update(servics={}),
], ids=["command-not-a-list", "healthcheck-typo", "depends-on-a-string", "top-level-typo"])
def test_the_schema_refuses_a_broken_compose_file(breakage):
    broken = compose()
    breakage(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA, cls=jsonschema.Draft202012Validator)


def _parses_as_newsletter(args: list[str]) -> None:
    """The arguments name a command of ``newsletter`` and its options parse (nothing runs)."""
    command = typer.main.get_command(newsletter_app)  # typer's own (bundled) click
    rest = list(args)
    while hasattr(command, "get_command"):  # a group: the next argument names its command
        name, rest = rest[0], rest[1:]
        found = command.get_command(typer.Context(command), name)
        assert found is not None, f"newsletter has no command {name!r}"
        command = found
    command.make_context(command.name, rest)  # raises on an unknown option or a bad value


def _parses_as_celery(args: list[str]) -> None:
    from celery.bin.celery import celery

    # celery's global options (-A APP, --broker=...) come before the subcommand.
    rest = list(args)
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option in ("-A", "--app", "-b", "--broker") and "=" not in option:
            value = rest.pop(0)
            if option in ("-A", "--app"):
                __import__(value)  # the app module exists in the image (pyproject's py-modules)
    assert rest and rest[0] in celery.commands, f"celery has no command {rest[:1]}"


def test_every_command_of_our_image_is_an_entry_point_of_it_and_parses():
    scripts = {ep.name for ep in entry_points(group="console_scripts")}
    services = ours(compose()["services"])
    assert {"migrate", "web", "worker", "beat", "inbound"} <= set(services)
    for name, service in services.items():
        command = service["command"]
        command = shlex.split(command) if isinstance(command, str) else command
        assert command[0] in scripts, f"{name}: {command[0]!r} is not an entry point of the image"
        if command[0] == "newsletter":
            _parses_as_newsletter(command[1:])
        elif command[0] == "celery":
            _parses_as_celery(command[1:])


def test_a_wrong_command_would_be_caught():
    with pytest.raises(AssertionError, match="no command 'wroker'"):
        _parses_as_newsletter(["wroker", "--concurrency", "2"])
    with pytest.raises(TyperException, match="No such option"):
        _parses_as_newsletter(["web", "--hots", "0.0.0.0"])
    with pytest.raises(AssertionError, match="celery has no command"):
        _parses_as_celery(["-A", "worker", "beet"])


def test_healthchecks_ask_readyz():
    services = ours(compose()["services"])
    checked = {name: s["healthcheck"] for name, s in services.items() if "healthcheck" in s}
    assert "web" in checked
    for name, check in checked.items():
        assert "/readyz" in " ".join(check["test"]), name
        assert "--port" in services[name]["command"] and "8000" in " ".join(check["test"])


def _runs_beat(service: dict) -> bool:
    command = service.get("command") or []
    command = shlex.split(command) if isinstance(command, str) else command
    return "beat" in command or "--beat" in command or "-B" in command


def test_beat_runs_exactly_once():
    services = compose()["services"]
    beats = [name for name, s in services.items() if _runs_beat(s)]
    assert beats == ["beat"]
    replicas = services["beat"].get("deploy", {}).get("replicas", 1)
    assert replicas == 1 and services["beat"].get("scale", 1) == 1
    assert not _runs_beat(services["worker"])  # `--scale worker=4` must not start four beats


def test_the_bounce_listener_and_flower_have_services():
    services = compose()["services"]
    inbound = services["inbound"]["command"]
    assert inbound[:4] == ["newsletter", "inbound", "serve", "--smtp"]
    assert any(p.split(":")[-1] == inbound[inbound.index("--port") + 1] for p in services["inbound"]["ports"])
    flower = services["flower"]
    assert flower["image"].startswith("mher/flower")
    assert "flower" in flower["command"]
    broker = next(a.split("=", 1)[1] for a in flower["command"] if a.startswith("--broker="))
    assert broker == services["worker"]["environment"]["NEWSLETTER_BROKER_URL"]


def test_compose_describes_the_production_stack():
    services = compose()["services"]
    assert {"postgres", "redis", "web", "worker", "beat", "mailpit", "inbound", "flower"} <= set(services)
    env = services["worker"]["environment"]
    assert env["NEWSLETTER_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["NEWSLETTER_BROKER_URL"].startswith("redis://")
    # The web app scrapes the metrics every process writes: one shared folder.
    for name in ("web", "worker", "beat", "inbound"):
        assert any(v.endswith(":" + env["NEWSLETTER_METRICS_DIR"]) for v in services[name]["volumes"]), name


def test_the_image_builds_where_a_container_engine_runs():
    engine = next((e for e in ("docker", "podman") if shutil.which(e) and subprocess.run(
        [e, "info"], capture_output=True, timeout=60).returncode == 0), None)  # a client whose engine answers
    dockerfile = (REPO / "Dockerfile").read_text()
    if engine is None:
        # No engine on this machine: what the build would need is there, and its CMD is an
        # entry point that parses.
        for line in dockerfile.splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (REPO / source).exists(), source
        cmd = json.loads(next(line for line in dockerfile.splitlines() if line.startswith("CMD "))[4:])
        assert cmd[0] == "newsletter"
        _parses_as_newsletter(cmd[1:])
        return
    result = subprocess.run([engine, "build", "-t", "newsletter:test", str(REPO)], capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = subprocess.run([engine, "run", "--rm", "newsletter:test", "newsletter", "--help"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and "doctor" in run.stdout, run.stderr
