"""Segments: a named filter over a list's subscribers, written as a small expression.

    tag:founding AND country = "CN"
    (tag:vip OR plan != "free") AND NOT email = "ann@example.com"

``tag:NAME`` holds when the subscriber has that tag; ``FIELD = "value"`` and
``FIELD != "value"`` compare ``email``, ``name`` or an attribute (``!=`` also holds when
the attribute is missing); AND binds tighter than OR; NOT, parentheses. Keywords are
case-insensitive. The expression is parsed by a grammar (lark) into SQLAlchemy
expressions: every name and value the user typed is a bound parameter, none of it
becomes SQL text. A syntax error, or an attribute no subscriber has, is ``InvalidInput``
naming the position (1-based character) in the expression.

A segment can be saved under a name for its list (``save_segment``); wherever a segment
is taken (``send --segment``, a count, a search), a saved name stands for its expression
(``resolve``). A campaign keeps the expression it was given, so changing a named segment
later does not change whom a scheduled campaign goes to.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from lark import Lark, Token, Transformer, UnexpectedInput, UnexpectedToken, v_args
from lark.exceptions import VisitError
from sqlalchemy import ColumnElement, and_, exists, func, not_, or_, select, true, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.core.db import dialect_name
from mailer.core.clock import utcnow
from mailer.core.errors import ConflictError, InvalidInput
from subscribers.models import Segment, Subscriber

MAX_EXPRESSION = 2000
COLUMNS = {"email": Subscriber.email, "name": Subscriber.name}

_GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr | or_expr _OR and_expr -> or_
?and_expr: not_expr | and_expr _AND not_expr -> and_
?not_expr: _NOT not_expr -> not_ | atom
?atom: "(" or_expr ")" | tag | comparison
tag: TAG
comparison: FIELD OP ESCAPED_STRING
OP: "=" | "!="
_AND.2: /and\b/i
_OR.2: /or\b/i
_NOT.2: /not\b/i
FIELD: /[A-Za-z_][A-Za-z0-9_.-]*/
TAG.3: /tag:[^\s()"]+/i
%import common.ESCAPED_STRING
%import common.WS
%ignore WS
"""
_PARSER = Lark(_GRAMMAR, parser="lalr", propagate_positions=True)


@dataclass(frozen=True)
class _Field:
    name: str
    column: int  # where it was typed, for the error


class _Build(Transformer):
    """The parse tree into a SQLAlchemy expression, noting the attributes it reads."""

    def __init__(self, dialect: str):
        super().__init__()
        self.dialect = dialect
        self.fields: list[_Field] = []

    @v_args(inline=True)
    def tag(self, token: Token) -> ColumnElement:
        name = str(token)[len("tag:"):]
        if self.dialect == "postgresql":
            return type_coerce(Subscriber.tags, JSONB).contains([name])
        each = func.json_each(Subscriber.tags).table_valued("value")
        return exists(select(each.c.value).where(each.c.value == name))

    @v_args(inline=True)
    def comparison(self, field: Token, op: Token, value: Token) -> ColumnElement:
        try:
            text = json.loads(value)  # ESCAPED_STRING is a JSON string: \" and \\ and \uXXXX
        except ValueError as err:
            raise InvalidInput(f"segment: the value at position {value.column} is not a valid string") from err
        column = COLUMNS.get(str(field))
        if column is None:
            self.fields.append(_Field(str(field), field.column))
            column = Subscriber.attributes[str(field)].as_string()
        if op == "=":
            return column == text
        return or_(column.is_(None), column != text)

    @v_args(inline=True)
    def and_(self, left, right) -> ColumnElement:
        return and_(left, right)

    @v_args(inline=True)
    def or_(self, left, right) -> ColumnElement:
        return or_(left, right)

    @v_args(inline=True)
    def not_(self, inner) -> ColumnElement:
        return not_(inner)


def parse(expression: str, *, dialect: str) -> tuple[ColumnElement, list[_Field]]:
    """The filter for ``expression`` and the attributes it names; ``InvalidInput`` with
    the position of a syntax error."""
    if not expression or not expression.strip():
        return true(), []
    if len(expression) > MAX_EXPRESSION:
        raise InvalidInput(f"a segment expression is at most {MAX_EXPRESSION} characters")
    try:
        tree = _PARSER.parse(expression)
    except UnexpectedInput as err:
        if isinstance(err, UnexpectedToken) and err.token.type == "$END":
            where = f"it ends too soon (after position {len(expression.rstrip())})"
        else:
            near = expression[err.pos_in_stream:err.pos_in_stream + 12]
            where = f"unexpected {near!r} at position {err.column}"
        raise InvalidInput(f"segment: {where} in {expression!r}") from err
    build = _Build(dialect)
    try:
        return build.transform(tree), build.fields
    except VisitError as err:  # lark wraps what a rule raised
        if isinstance(err.orig_exc, InvalidInput):
            raise err.orig_exc from err
        raise


def segment_filter(session: Session, expression: str) -> ColumnElement:
    """The filter for ``expression``, checked against the database: an attribute that no
    subscriber has is a typing mistake, refused with its position."""
    condition, fields = parse(expression, dialect=dialect_name(session))
    for field in fields:
        known = session.scalar(select(exists().where(Subscriber.attributes[field.name].as_string().is_not(None))))
        if not known:
            raise InvalidInput(f"segment: unknown attribute {field.name!r} at position {field.column}; "
                               f"known: email, name, tag:NAME and the attributes subscribers have")
    return condition


# --- named segments ----------------------------------------------------------------------
# A name is one word, so it can never be read as an expression (a bare word is not one:
# ``FIELD`` needs ``=`` or ``!=`` after it): wherever a segment is taken, a saved name
# and an expression can share the one argument.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
RESERVED_NAMES = frozenset({"size"})


def clean_name(raw: str) -> str:
    name = (raw or "").strip()
    if not NAME_RE.fullmatch(name):
        raise InvalidInput(f"segment name {name[:40]!r}: lower-case letters, digits, _ and -, at most 100")
    if name in RESERVED_NAMES:
        raise InvalidInput(f"segment name {name!r} is taken by the API (/api/admin/segments/{name}); choose another")
    return name


def find_segment(session: Session, name: str) -> Segment | None:
    return session.scalar(select(Segment).where(Segment.name == name.strip())) if NAME_RE.fullmatch(
        (name or "").strip()) else None


def save_segment(session: Session, *, name: str, expression: str, list_id: int) -> tuple[Segment, bool]:
    """Save (or change) a named segment of a list; the expression is checked first, so
    a syntax error or an unknown attribute (with its position) changes nothing.
    Returns (segment, created). A name another list's segment has is refused."""
    name = clean_name(name)
    if not (expression or "").strip():
        raise InvalidInput("a segment needs an expression, e.g. 'tag:founding AND country = \"CN\"'")
    segment_filter(session, expression)
    found = find_segment(session, name)
    if found is not None and found.list_id != list_id:
        raise ConflictError(f"segment {name!r} belongs to another list; give this one another name")
    if found is None:
        found = Segment(name=name, list_id=list_id, expression=expression.strip(), created_at=utcnow(),
                        updated_at=utcnow())
        session.add(found)
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError as err:  # saved at the same time under the same name
            raise ConflictError(f"segment {name!r} was saved at the same time by someone else; try again") from err
        return found, True
    found.expression, found.updated_at = expression.strip(), utcnow()
    session.flush()
    return found, False


def resolve(session: Session, ref: str, *, list_id: int | None = None) -> str:
    """The expression ``ref`` stands for: a saved segment's (of ``list_id``, when given),
    or ``ref`` itself, an expression."""
    found = find_segment(session, ref or "")
    if found is None:
        return ref
    if list_id is not None and found.list_id != list_id:
        raise InvalidInput(f"segment {found.name!r} is a segment of another list")
    return found.expression


def list_segments(session: Session, *, list_id: int | None = None) -> list[Segment]:
    query = select(Segment).order_by(Segment.name)
    if list_id is not None:
        query = query.where(Segment.list_id == list_id)
    return list(session.scalars(query))
