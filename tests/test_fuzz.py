"""Fuzzing, bounded so the suite stays short: schemathesis generates requests from the
app's own OpenAPI schema (anonymous and with an API token) and no route may answer 500;
hypothesis throws text at the issue parser, rows at the CSV import and bytes at the
inbound-mail handler, which must give a result or a clear ``InvalidInput``, nothing else."""

from __future__ import annotations

import io

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from mailer.core.db import transaction
from mailer.core.errors import InvalidInput, NewsletterError
from mailer.issues import parse_issue
from tests.conftest import migrated_database
from tests.support.web import create

pytestmark = pytest.mark.timeout(600)
FEW = examples(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
def database_url(request):
    """Fuzzing looks for crashes in our code, not in the database: SQLite is enough (a
    copy of the session's migrated template)."""
    with migrated_database(request, "sqlite") as url:
        yield url


@pytest.fixture
def token(engine) -> str:
    from mailer import accounts

    with transaction(engine) as s:
        return accounts.create_token(s, name="fuzz").plaintext


def test_no_route_answers_500(settings, token):
    """Every operation of the schema, a few generated requests each, without and with the
    token (so both the 401 path and the route itself are exercised)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", create())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:

        @given(case=operation.as_strategy())
        @FEW
        def no_500(case):
            for headers in ({}, {"Authorization": f"Bearer {token}"}):
                response = case.call(headers=headers)
                assert response.status_code < 500, (case.method, case.formatted_path, response.status_code,
                                                    response.text[:500])

        no_500()


@given(st.text(max_size=2000))
@FEW
def test_the_issue_parser_gives_an_issue_or_one_line(text):
    try:
        parse_issue(text)
    except InvalidInput as err:
        assert "\n" not in str(err) and str(err)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=600))
@FEW
def test_the_issue_parser_with_front_matter(body):
    try:
        parse_issue(f"---\nsubject: {body[:80]}\nslug: {body[80:100]}\n---\n{body}")
    except InvalidInput as err:
        assert "\n" not in str(err)


@given(st.binary(max_size=1500))
@FEW
def test_the_csv_import_gives_a_report_or_one_line(engine, data):
    from subscribers import csvio

    try:
        report = csvio.import_csv(engine, io.BytesIO(b"email,name\n" + data), list_name="fuzz")
    except InvalidInput as err:
        assert "\n" not in str(err)
    else:
        assert report.imported + report.updated + report.error_count + report.skipped_suppressed >= 0


@given(st.binary(max_size=3000) | st.builds(lambda h, b: h + b"\r\n\r\n" + b, st.binary(max_size=400),
                                             st.binary(max_size=1500)))
@FEW
def test_the_inbound_handler_gives_a_line_or_one_line_refusal(settings, raw):
    from mailer.operations.inbound import receive

    try:
        line = receive(raw, environ={}, settings=settings).line
    except InvalidInput as err:
        assert "\n" not in str(err)
    except NewsletterError as err:  # pragma: no cover - a failure, shown with its message
        pytest.fail(f"not a clear refusal: {err!r}")
    else:
        assert isinstance(line, str) and line
