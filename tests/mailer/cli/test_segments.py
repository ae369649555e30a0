"""``newsletter segments ...`` and ``send --segment NAME`` in real processes over the
test's database (SQLite and PostgreSQL); the bad-input cases of a command after its
first in this process (``cli_in_process``: the same ``main``)."""

from __future__ import annotations

import json

from sqlalchemy import update

from mailer.core.db import transaction
from mailer.models import Campaign
from subscribers.models import Subscriber
from tests.support.cli import assert_one_line_error, cli, cli_in_process
from tests.support.example import EXAMPLE
from tests.support.seed import count_rows, seed_list


def test_save_list_show_and_send_to_a_named_segment(engine):
    seed_list(engine, 6, list_name="weekly")
    with transaction(engine) as s:
        s.execute(update(Subscriber).where(Subscriber.id <= 3).values(tags=["founding"], attributes={"country": "CN"}))
        s.execute(update(Subscriber).where(Subscriber.id == 3).values(attributes={"country": "FR"}))
    added = cli("segments", "add", "founders-cn", 'tag:founding AND country = "CN"', "--list", "weekly")
    assert added.returncode == 0, added.stderr
    assert "segment founders-cn saved" in added.stdout and "(2 active on list weekly)" in added.stdout
    listed = cli("segments", "list", "--json")
    assert [json.loads(line) for line in listed.stdout.splitlines()][0] | {"updated_at": None} == {
        "name": "founders-cn", "list": "weekly", "expression": 'tag:founding AND country = "CN"', "size": 2,
        "updated_at": None}
    shown = cli("segments", "show", "founders-cn")
    assert shown.stdout.splitlines()[-1] == "size: 2", shown.stdout
    assert cli("subscribers", "count", "--list", "weekly", "--segment", "founders-cn").stdout.strip() == "2"
    # Changed under the same name.
    changed = cli("segments", "add", "founders-cn", "tag:founding", "--list", "weekly")
    assert "segment founders-cn changed" in changed.stdout and "(3 active" in changed.stdout

    sent = cli("send", str(EXAMPLE), "--list", "weekly", "--segment", "founders-cn")
    assert sent.returncode == 0, sent.stderr
    # The segment's size is the audience the campaign froze.
    assert "(3 deliveries queued)" in sent.stdout and count_rows(engine, "delivery") == 3
    with transaction(engine) as s:
        assert s.query(Campaign).one().segment == "tag:founding"  # the expression it stood for


def test_segment_mistakes_are_one_line_errors_naming_the_position(engine):
    # Both databases: an expression is parsed for the database's dialect, and an unknown
    # attribute is one no subscriber has (a JSON query). One real process per command.
    seed_list(engine, 2, list_name="weekly")
    seed_list(engine, 1, list_name="other", start=10)
    assert_one_line_error(cli("segments", "add", "bad", "tag:x AND (", "--list", "weekly"), "ends too soon")
    assert_one_line_error(cli_in_process("segments", "add", "bad", 'tag:x AND = "y"', "--list", "weekly"),
                          "at position 11")
    assert_one_line_error(cli_in_process("segments", "add", "bad", 'plan = "x"', "--list", "weekly"),
                          "unknown attribute 'plan' at position 1")
    assert_one_line_error(cli_in_process("segments", "add", "Bad Name", "tag:x", "--list", "weekly"), "segment name")
    assert_one_line_error(cli_in_process("segments", "add", "size", "tag:x", "--list", "weekly"), "taken by the API")
    assert_one_line_error(cli_in_process("segments", "add", "ok", "tag:x", "--list", "nope"), "nope")
    assert_one_line_error(cli("segments", "show", "missing"), "no segment 'missing'")
    assert count_rows(engine, "segment") == 0
    assert cli_in_process("segments", "add", "others", "tag:x", "--list", "other").returncode == 0
    # A saved segment of another list is not this list's.
    assert_one_line_error(cli("send", str(EXAMPLE), "--list", "weekly", "--segment", "others"), "another list")
    assert count_rows(engine, "campaign") == 0
    assert cli("segments", "remove", "others").returncode == 0 and count_rows(engine, "segment") == 0
