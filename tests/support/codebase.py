"""Reading the project's own source, for the tests that keep its architecture honest:
status values only in their enums, SQL only in the queries module, one ``utcnow``."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("mailer", "subscribers", "worker.py")
MIGRATIONS = ROOT / "mailer" / "migrations"
# A statement, not prose: a verb and its keyword, in capitals as SQL is written here.
SQL = re.compile(r"\b(SELECT\b[\s\S]*\bFROM|UPDATE\b[\s\S]*\bSET|INSERT\s+INTO|DELETE\s+FROM)\b")


@dataclass(frozen=True)
class Literal:
    path: Path
    line: int
    value: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.value!r}"


def product_files() -> Iterator[Path]:
    for name in PRODUCT:
        path = ROOT / name
        if path.is_file():
            yield path
            continue
        for file in sorted(path.rglob("*.py")):
            if MIGRATIONS not in file.parents:
                yield file


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (module, class, function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _enum_bodies(tree: ast.AST) -> set[int]:
    """ids of the constants inside enum class bodies (where the values are defined)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
                (isinstance(b, ast.Attribute) and b.attr.endswith("Enum"))
                or (isinstance(b, ast.Name) and b.id.endswith("Enum")) for b in node.bases):
            found.update(id(n) for n in ast.walk(node) if isinstance(n, ast.Constant))
    return found


def _names(tree: ast.AST) -> set[int]:
    """ids of the constants that name things rather than hold values: dict keys (field
    names of a record) and the arguments of decorators (command and route names)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            found.update(id(k) for k in node.keys if isinstance(k, ast.Constant))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for decorator in node.decorator_list:
                found.update(id(n) for n in ast.walk(decorator) if isinstance(n, ast.Constant))
    return found


def string_literals(path: Path) -> Iterator[Literal]:
    """Every string constant of a module that is not a docstring, not inside an enum
    class and not a name (``_names``); f-strings give their constant parts."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree) | _enum_bodies(tree) | _names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield Literal(path, node.lineno, node.value)


def quoted_status(value: str, statuses: set[str]) -> str | None:
    """A status written into SQL text by hand (``... status = 'sending'``, ``IN ('a', ...``)."""
    found = re.search(r"\b(?:status|kind|outcome)\s*(?:=|<>|!=|IN)\s*\(?\s*'(" + "|".join(sorted(statuses)) + r")'",
                      value, re.IGNORECASE)
    return found.group(1) if found else None


def settings_reads(path: Path) -> list[str]:
    """Places that read a ``NEWSLETTER_*`` variable from the environment themselves."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        args = []
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "getenv"):
            args = node.args[:1]
        elif isinstance(node, ast.Subscript):
            args = [node.slice]
        for arg in args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("NEWSLETTER_"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {arg.value}")
    return found


def status_values() -> set[str]:
    from mailer import models
    from subscribers import models as people

    enums = (people.SubscriberStatus, people.EventKind, models.IssueStatus, models.CampaignStatus,
             models.BatchStatus, models.DeliveryStatus, models.SlotOutcome, models.InboundStatus)
    return {member.value for enum in enums for member in enum}


def functions_named(name: str) -> list[str]:
    found = []
    for path in product_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found
