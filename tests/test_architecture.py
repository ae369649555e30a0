"""The architecture holds, and would be caught if it drifted: the import-linter
contracts in ``.importlinter`` (layers, no circles, plumbing that knows nothing of the
web or the CLI), status values only in their enums, SQL only in ``mailer.queries``, one
``utcnow``, settings read in one place."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.codebase import (
    ROOT,
    SQL,
    functions_named,
    product_files,
    quoted_status,
    settings_reads,
    status_values,
    string_literals,
)

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# Constants that equal a status value but are not one, each with the reason.
NOT_STATUSES = {
    ("mailer/web/dashboard/pages.py", "done"),  # the ``?done=`` query parameter's name
    # Mailchimp's own status names in its exports, mapped to ours there.
    ("subscribers/presets.py", "unsubscribed"),
    ("subscribers/presets.py", "pending"),
}


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` over the packages found in ``tree`` (its copy of them first)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    return subprocess.run([str(LINT_IMPORTS), "--config", str(tree / ".importlinter"), "--no-cache"], cwd=tree,
                          env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture
def tree_copy(tmp_path) -> Path:
    for name in ("mailer", "subscribers"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def _add_import(tree: Path, module: str, statement: str) -> None:
    path = tree.joinpath(*module.split(".")).with_suffix(".py")
    path.write_text(path.read_text(encoding="utf-8") + f"\n{statement}  # noqa\n", encoding="utf-8")


@pytest.mark.parametrize("module, statement, broken", [
    # The sending side reaching up into an adapter.
    ("mailer.queries", "import mailer.web.app", "Layers: adapters, operations"),
    # People depending on the sending side.
    ("subscribers.service", "from mailer import campaigns", "Layers: adapters, operations"),
    # The core depending on a feature.
    ("mailer.core.db", "import subscribers.models", "Layers: adapters, operations"),
    # Two siblings of one layer importing each other.
    ("mailer.bounces", "import mailer.sending", "Layers: adapters, operations"),
    # The plumbing importing the web framework.
    ("mailer.core.config", "import fastapi", "know nothing of the web"),
])
def test_an_upward_import_breaks_a_contract(tree_copy, module, statement, broken):
    _add_import(tree_copy, module, statement)
    result = lint_imports(tree_copy)
    assert result.returncode == 1, result.stdout
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout, result.stdout


def test_a_new_import_circle_breaks_a_contract(tree_copy):
    # operations.issues <- operations.campaigns already; the other way round closes a circle.
    _add_import(tree_copy, "mailer.operations.issues", "from mailer.operations import campaigns")
    result = lint_imports(tree_copy)
    assert result.returncode == 1, result.stdout
    assert "No import circles between sibling modules anywhere BROKEN" in result.stdout, result.stdout


def test_no_status_value_is_written_as_a_bare_string():
    statuses = status_values()
    found = [str(lit) for path in product_files() for lit in string_literals(path)
             if lit.value in statuses and (str(path.relative_to(ROOT)), lit.value) not in NOT_STATUSES]
    quoted = [f"{lit} holds '{q}'" for path in product_files() for lit in string_literals(path)
              if (q := quoted_status(lit.value, statuses))]
    assert found == [] and quoted == [], "\n".join(found + quoted)


def test_sql_text_lives_in_the_queries_module_only():
    found = [str(lit) for path in product_files() if path != ROOT / "mailer" / "queries.py"
             for lit in string_literals(path) if SQL.search(lit.value)]
    assert found == [], "\n".join(found)


def test_one_utcnow_and_settings_read_in_one_place():
    assert functions_named("utcnow") == ["mailer/core/clock.py:10"]
    reads = [r for path in product_files() if path != ROOT / "mailer" / "core" / "config.py"
             for r in settings_reads(path)]
    assert reads == [], reads


def test_no_import_guards_and_nothing_imports_the_worker_module():
    for path in product_files():
        text = path.read_text(encoding="utf-8")
        assert "ModuleNotFoundError" not in text and "importlib" not in text, path
        assert "import worker" not in text and "from worker" not in text, path


def test_nothing_deletes_the_rows_deliveries_point_to():
    """``delivery`` and ``membership`` have no foreign keys (``mailer.models.Delivery``,
    ``subscribers.models.Membership``): that is safe only while no product code deletes
    a subscriber, a campaign or a list."""
    deleting = re.compile(r"delete\(\s*(Subscriber|Campaign|MailingList)\b"
                          r"|DELETE\s+FROM\s+(subscriber|campaign|mailing_list)\b"
                          r"|session\.delete\(\s*(subscriber|campaign|mailing_list)\b", re.IGNORECASE)
    found = [f"{path.relative_to(ROOT)}:{n}" for path in product_files()
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if deleting.search(line)]
    assert found == [], found
    probe = ["session.execute(delete(Subscriber).where(Subscriber.id == 1))", "DELETE FROM campaign WHERE id = 1",
             "session.execute(delete(MailingList))"]
    assert all(deleting.search(line) for line in probe)  # the pattern catches what it is for
