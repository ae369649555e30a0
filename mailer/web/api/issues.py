"""``/api/admin/issues``: save, change, delete, preview and test-send issues."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from mailer.operations import issues as ops
from mailer.web.auth import ApiRoute
from mailer.web.deps import Id, SessionDep, SettingsDep

router = APIRouter(route_class=ApiRoute)


class IssueSourceIn(BaseModel):
    source: str = Field(description="Markdown with YAML front matter ('---', 'subject: ...', '---', content).")


class TestSendIn(BaseModel):
    to: list[str] = Field(min_length=1, description="Addresses to send the test to.")


@router.get("/issues")
def list_issues(session: SessionDep) -> list[dict]:
    return ops.list_issues(session)


@router.post("/issues", status_code=201)
def create_issue(body: IssueSourceIn, session: SessionDep, settings: SettingsDep) -> dict:
    issue = ops.create_issue(session, source=body.source, settings=settings)
    session.commit()
    return ops.describe(session, issue, source=True)


@router.get("/issues/{issue_id}")
def get_issue(issue_id: Id, session: SessionDep) -> dict:
    return ops.describe(session, ops.get_issue(session, issue_id), source=True)


@router.put("/issues/{issue_id}")
def update_issue(issue_id: Id, body: IssueSourceIn, session: SessionDep, settings: SettingsDep) -> dict:
    issue = ops.update_issue(session, issue_id=issue_id, source=body.source, settings=settings)
    session.commit()
    return ops.describe(session, issue, source=True)


@router.delete("/issues/{issue_id}", status_code=204)
def delete_issue(issue_id: Id, session: SessionDep) -> None:
    ops.delete_issue(session, issue_id=issue_id)
    session.commit()


@router.post("/issues/preview")
def preview_issue(body: IssueSourceIn, settings: SettingsDep) -> dict:
    """Render Markdown without saving it: the HTML and text with sample values."""
    return ops.preview(body.source, settings=settings)


@router.post("/issues/{issue_id}/test")
def test_issue(issue_id: Id, body: TestSendIn, session: SessionDep, settings: SettingsDep) -> list[dict]:
    """Send the stored issue, marked [TEST], to a few addresses; outside any campaign."""
    source = ops.get_issue(session, issue_id).source
    session.rollback()  # hold no database lock (SQLite: the write lock) while talking SMTP
    return [{"address": r.address, "code": r.code, "reply": r.reply, "ok": r.ok}
            for r in ops.send_test(source=source, to=body.to, settings=settings)]
