"""``newsletter subscribers ...`` in a real process over the test's database (the
many bad-input cases of one command in this process, ``cli_in_process``)."""

from __future__ import annotations

import json

from tests.support.cli import assert_one_line_error, cli, cli_in_process


def test_import_prints_counts_and_bad_rows_then_list_shows_them(settings, engine, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("email,name\nann@example.com,Ann\nbroken,Bob\n", encoding="utf-8")
    result = cli("subscribers", "import", path, "--list", "weekly", "--confirmed")
    assert result.returncode == 0, result.stderr
    assert "imported 1" in result.stdout and "line 3: not an email address" in result.stdout
    listed = cli("subscribers", "list", "--list", "weekly", "--status", "active", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["email"], r["name"], r["status"]) for r in rows] == [("ann@example.com", "Ann", "active")]


def test_import_dry_run_changes_nothing_and_says_so(settings, engine, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("email,name\nann@example.com,Ann\nbob@example.com,Bob\n", encoding="utf-8")
    dry = cli("subscribers", "import", path, "--list", "weekly", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("dry run, nothing changed: would have imported 2, updated 0")
    assert cli("subscribers", "list").stdout == ""
    real = cli("subscribers", "import", path, "--list", "weekly")
    assert real.stdout.startswith("imported 2, updated 0") and "(import 1)" in real.stdout
    assert len(cli("subscribers", "list").stdout.splitlines()) == 2


def test_import_a_platform_export(settings, engine, tmp_path):
    path = tmp_path / "substack.csv"
    path.write_text("email,active_subscription,expiry,plan,email_disabled,created_at,first_payment_at\n"
                    "sam@example.com,true,,founding,false,2021-08-27T15:06:27.713Z,\n"
                    "quiet@example.com,false,,free,true,2020-01-01T00:00:00.000Z,\n", encoding="utf-8")
    result = cli("subscribers", "import", path, "--list", "weekly", "--format", "substack")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("imported 1, updated 0") and "suppressed 1 marked as gone" in result.stdout
    listed = [json.loads(line) for line in cli("subscribers", "list", "--json").stdout.splitlines()]
    assert [(r["email"], r["status"], r["tags"]) for r in listed] == [("sam@example.com", "active", ["founding"])]
    assert listed[0]["attributes"] == {"active_subscription": "true"}
    assert_one_line_error(cli("subscribers", "import", path, "--list", "weekly", "--format", "mailchimp"),
                          "not a Mailchimp audience export")
    assert_one_line_error(cli_in_process("subscribers", "import", path, "--list", "weekly", "--format", "xls"),
                          "unknown format")


def test_count_and_list_a_segment(settings, engine, tmp_path):
    path = tmp_path / "mailchimp.csv"
    path.write_text('"Email Address",OPTIN_TIME,CC,TAGS\n'
                    'ann@example.com,"2021-01-01 00:00:00",CN,"""founding"""\n'
                    'bob@example.com,"2021-01-01 00:00:00",FR,"""founding"""\n'
                    'cy@example.com,"2021-01-01 00:00:00",CN,\n', encoding="utf-8")
    assert cli("subscribers", "import", path, "--list", "weekly", "--format", "mailchimp").returncode == 0
    segment = 'tag:founding AND CC = "CN"'
    counted = cli("subscribers", "count", "--list", "weekly", "--segment", segment)
    assert (counted.returncode, counted.stdout.strip()) == (0, "1")
    listed = cli("subscribers", "list", "--segment", segment, "--json")
    assert [json.loads(line)["email"] for line in listed.stdout.splitlines()] == ["ann@example.com"]
    assert_one_line_error(cli("subscribers", "count", "--list", "weekly", "--segment", 'tag:founding AND city = "X"'),
                          "unknown attribute 'city' at position 18")
    assert_one_line_error(cli_in_process("subscribers", "count", "--list", "weekly", "--segment", "tag:founding AND"),
                          "it ends too soon")


def test_edit_unsubscribe_and_bad_input(settings, engine):
    assert cli("subscribers", "add", "bob@example.com", "--list", "weekly").returncode == 0
    renamed = cli("subscribers", "edit", "bob@example.com", "--name", "Bob B", "--status", "active")
    assert renamed.returncode == 0 and renamed.stdout.strip() == "bob@example.com: active, name 'Bob B'"
    assert cli("subscribers", "unsubscribe", "bob@example.com").stdout.strip() == "bob@example.com: unsubscribed"
    # edit and import have real-process refusals in the tests around this one; list's is here.
    assert_one_line_error(cli_in_process("subscribers", "edit", "bob@example.com", "--status", "active"),
                          "only their own confirmation can bring them back")
    assert_one_line_error(cli("subscribers", "list", "--status", "sleeping"), "unknown status 'sleeping'")
    assert_one_line_error(cli_in_process("subscribers", "edit", "nobody@example.com", "--name", "X"), "no subscriber")
    assert_one_line_error(cli_in_process("subscribers", "import", "/nonexistent.csv", "--list", "weekly"),
                          "cannot read")


def _one(email: str, run=cli) -> dict:
    listed = run("subscribers", "list", "--json")
    return next(r for r in map(json.loads, listed.stdout.splitlines()) if r["email"] == email)


def test_tags_and_attributes_on_add_and_edit(settings, engine):
    added = cli("subscribers", "add", "ann@example.com", "--list", "weekly", "--tag", "founding", "--tag", "vip",
                "--attr", "country=CN", "--attr", "plan=free")
    assert added.returncode == 0, added.stderr
    assert (_one("ann@example.com")["tags"], _one("ann@example.com")["attributes"]) == (
        ["founding", "vip"], {"country": "CN", "plan": "free"})
    edited = cli("subscribers", "edit", "ann@example.com", "--tag", "speaker", "--untag", "vip",
                 "--attr", "plan=paid", "--attr", "note=a = b", "--unset-attr", "country")
    assert edited.returncode == 0, edited.stderr
    assert "tags founding, speaker" in edited.stdout
    ann = _one("ann@example.com")
    assert ann["tags"] == ["founding", "speaker"] and ann["attributes"] == {"plan": "paid", "note": "a = b"}
    # A segment finds them by what was just set.
    assert cli("subscribers", "list", "--segment", 'tag:speaker AND plan = "paid"').stdout.startswith("ann@")


def test_bad_tags_and_attributes_are_one_line_errors_and_change_nothing(settings, engine):
    assert cli("subscribers", "add", "ann@example.com", "--list", "weekly", "--tag", "founding").returncode == 0
    before = _one("ann@example.com", cli_in_process)
    cases = [
        (("--attr", "country"), "not key=value"),
        (("--tag", "two words"), "no spaces"),
        (("--tag", 'x"y'), "no spaces"),
        (("--attr", "email=x@example.com"), "own field"),
        (("--attr", "1st=x"), "a letter or _ first"),
        (("--attr", "bio=" + "x" * 5000), "at most 1000"),
        (("--tag", "t" * 500), "at most 100"),
        (("--name", "Ann", "--tag", "ok", "--attr", "broken"), "not key=value"),
    ]
    # The first case in a real process (the entry point, no traceback), the rest here.
    for n, (args, fragment) in enumerate(cases):
        run = cli if n == 0 else cli_in_process
        assert_one_line_error(run("subscribers", "edit", "ann@example.com", *args), fragment)
    assert_one_line_error(cli("subscribers", "add", "bob@example.com", "--tag", "no good"), "no spaces")
    assert_one_line_error(cli_in_process("subscribers", "add", "bob@example.com", "--attr", "1st=x"),
                          "a letter or _ first")
    assert _one("ann@example.com", cli_in_process) == before
    assert "bob@example.com" not in cli_in_process("subscribers", "list").stdout
