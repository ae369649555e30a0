"""Segment expressions over real subscribers (SQLite and PostgreSQL): what they select,
what they refuse, and that nothing typed reaches SQL text."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from mailer.core.db import transaction
from mailer.core.errors import InvalidInput
from mailer.operations import subscribers as ops
from subscribers import segments, service
from subscribers.models import Subscriber

PEOPLE = {
    # email: (tags, attributes, status)
    "ann@example.com": (["founding", "vip"], {"country": "CN", "plan": "pro"}, "active"),
    "bob@example.com": (["founding"], {"country": "FR", "plan": "free"}, "active"),
    "cy@example.com": ([], {"country": "CN"}, "active"),
    "dee@example.com": (["founding"], {"country": "CN", "plan": "free"}, "pending"),
    "eve@example.com": (["vip"], {"country": "CN", "plan": "free", "note": "x' OR '1'='1"}, "active"),
}


@pytest.fixture
def people(engine):
    with transaction(engine) as s:
        for email, (tags, attributes, status) in PEOPLE.items():
            sub = service.add_subscriber(s, email=email, status=status, attributes=attributes, list_name="weekly")
            s.execute(update(Subscriber).where(Subscriber.id == sub.id).values(tags=tags))
    return engine


def _select(engine, expression: str) -> set[str]:
    with transaction(engine) as s:
        return set(s.scalars(select(Subscriber.email).where(segments.segment_filter(s, expression))))


@pytest.mark.parametrize(("expression", "expected"), [
    ('tag:founding AND country = "CN"', {"ann@example.com", "dee@example.com"}),
    ("tag:founding", {"ann@example.com", "bob@example.com", "dee@example.com"}),
    ('tag:vip OR plan = "free"', {"ann@example.com", "bob@example.com", "dee@example.com", "eve@example.com"}),
    ('country = "CN" AND NOT tag:founding', {"cy@example.com", "eve@example.com"}),
    ('plan != "free"', {"ann@example.com", "cy@example.com"}),  # cy has no plan: != holds
    ('(tag:vip or tag:founding) and not (country = "FR")', {"ann@example.com", "dee@example.com", "eve@example.com"}),
    ('email = "bob@example.com"', {"bob@example.com"}),
    ("tag:nobody", set()),
    ("", set(PEOPLE)),
])
def test_a_segment_selects_what_it_says(people, expression, expected):
    assert _select(people, expression) == expected


def test_the_size_counts_the_active_members_of_the_list(people):
    with transaction(people) as s:
        assert ops.segment_size(s, list_name="weekly", segment='tag:founding AND country = "CN"') == 1  # dee: pending
        assert ops.segment_size(s, list_name="weekly", segment="") == 4


def test_what_the_user_typed_is_bound_never_sql_text(people):
    """A value or a name built to break out of a string reaches the database only as a
    parameter: it selects exactly what it spells, and the rendered SQL does not hold it."""
    assert _select(people, '''note = "x' OR '1'='1"''') == {"eve@example.com"}
    assert _select(people, '''country = "CN' OR '1'='1"''') == set()
    condition, _ = segments.parse('''country = "CN'; DROP TABLE subscriber; --"''', dialect=people.dialect.name)
    assert "DROP" not in str(condition.compile(dialect=people.dialect))
    with pytest.raises(InvalidInput, match="position 8"):
        _select(people, '''country') = 'CN' --" = "x"''')


@pytest.mark.parametrize(("expression", "message"), [
    ('tag:founding AND colour = "red"', "unknown attribute 'colour' at position 18"),
    ('country = CN', "unexpected 'CN' at position 11"),
    ('tag:founding AND', "it ends too soon (after position 16)"),
    ('country == "CN"', "unexpected '= \"CN\"' at position 10"),
    ('(tag:vip', "it ends too soon"),
])
def test_a_mistake_is_one_line_naming_the_position(people, expression, message):
    with pytest.raises(InvalidInput) as err:
        _select(people, expression)
    assert message in str(err.value) and "\n" not in str(err.value)
