"""The issue operations: save, change, delete, preview; each refusal before any write."""

from __future__ import annotations

import pytest

from mailer.core.db import transaction
from mailer.core.errors import ConflictError, InvalidInput
from mailer.operations import campaigns as campaign_ops
from mailer.operations import issues as ops
from tests.support.seed import count_rows, seed_list
from tests.support.web import issue_source


def test_create_update_and_save_by_slug(engine, settings):
    with transaction(engine) as s:
        issue = ops.create_issue(s, source=issue_source(), settings=settings)
        assert (issue.slug, issue.subject) == ("ai-this-week", "AI this week") and "__NL_NAME__" in issue.html
        with pytest.raises(ConflictError, match="there is already an issue 'ai-this-week'"):
            ops.create_issue(s, source=issue_source(), settings=settings)
        changed = ops.update_issue(s, issue_id=issue.id, source=issue_source(subject="Chips"), settings=settings)
        assert (changed.id, changed.slug, changed.subject) == (issue.id, "chips", "Chips")
        # `newsletter send FILE` twice: the file's slug finds the same issue.
        assert ops.save_issue(s, source=issue_source(subject="Chips"), settings=settings).id == issue.id
        assert ops.save_issue(s, source=issue_source(), settings=settings, filename="2026-12-01.md").slug == \
            "2026-12-01"


def test_a_started_issue_can_no_longer_change_or_go(engine, settings):
    seed_list(engine, 2)
    with transaction(engine) as s:
        issue = ops.create_issue(s, source=issue_source(), settings=settings)
        campaign_ops.schedule_issue(s, issue_ref=issue.id, list_name="weekly", when="now", settings=settings)
    with transaction(engine) as s:
        with pytest.raises(ConflictError, match="is already sending"):
            ops.update_issue(s, issue_id=issue.id, source=issue_source(body="Later."), settings=settings)
        with pytest.raises(ConflictError, match="only an issue with no campaign can be deleted"):
            ops.delete_issue(s, issue_id=issue.id)
        with pytest.raises(ConflictError, match="has already been sent"):
            ops.save_issue(s, source=issue_source(body="Later."), settings=settings)


@pytest.mark.parametrize("source, message", [
    ("", "the issue is empty"),
    ("subject: no front matter", "no front matter"),
    ("---\nsubject: x\n---\n", "no content"),
])
def test_bad_sources_are_refused_and_nothing_is_stored(engine, settings, source, message):
    with transaction(engine) as s, pytest.raises(InvalidInput, match=message):
        ops.create_issue(s, source=source, settings=settings)
    assert count_rows(engine, "issue") == 0


def test_preview_fills_sample_values(settings):
    shown = ops.preview(issue_source(), settings=settings)
    assert "__NL_" not in shown["html"] + shown["text"] and "Hi Ada" in shown["html"]
    assert shown["slug"] == "ai-this-week" and shown["warnings"] == []
