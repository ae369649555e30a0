"""``newsletter issue``: save, preview and test-send issues (Markdown files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mailer.cli.common import IssueId, is_issue_file, session, settings
from mailer.issues import read_issue_file
from mailer.message import Recipient, compile_message
from mailer.operations import issues as ops
from mailer.render import RenderedIssue, write_render_outputs

app = typer.Typer(help="Issues: save, render, preview and test-send.", no_args_is_help=True)

IssueFile = Annotated[Path, typer.Argument(help="The issue: Markdown with YAML front matter.")]


def sample_message(rendered: RenderedIssue) -> bytes:
    """A complete message as a subscriber would receive it, for previews: the footer
    links point at the configured site, with a token no subscriber has."""
    conf = settings()
    template = compile_message(
        subject=rendered.subject, from_=conf.from_address, html=rendered.html, text=rendered.text,
        list_id=f"preview.{conf.sending_domain}", list_name="Preview",
        feedback_id=f"0:0:newsletter:{conf.sending_domain}",
    )
    return template.assemble(Recipient(
        email="reader@example.com", name="Reader", message_id=f"<preview@{conf.sending_domain}>",
        unsubscribe_url=f"{conf.base_url}/u/preview", unsubscribe_mailto=f"mailto:unsubscribe@{conf.sending_domain}",
        preferences_url=f"{conf.base_url}/p/preview",
    ))


@app.command("render")
def issue_render(
    path: IssueFile,
    out: Annotated[Path, typer.Option("--out", help="Folder for index.html, index.txt and message.eml.")],
) -> None:
    """Render an issue to HTML, plain text and a sample message; print warnings."""
    rendered = ops.render_source(read_issue_file(path), settings=settings(), filename=path.name)
    files = write_render_outputs(rendered, out, sample_message=sample_message(rendered))
    for warning in rendered.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for f in files:
        typer.echo(str(f))


@app.command("test")
def issue_test(
    ref: Annotated[str, typer.Argument(help="The issue file, or the id or slug of a saved issue.")],
    to: Annotated[list[str], typer.Option("--to", help="Address to send the test to (repeat for more).")],
) -> None:
    """Send the real rendered message, marked as a test, to a few addresses."""
    if is_issue_file(ref):
        source = read_issue_file(ref)
    else:
        with session() as s:
            source = ops.find_issue(s, ref).source
    results = ops.send_test(source=source, to=to, settings=settings())
    for r in results:
        typer.echo(f"{r.address}: {r.code} {r.reply}".strip())
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@app.command("create")
def issue_create(path: IssueFile) -> None:
    """Save a new issue (refused when an issue with its slug exists)."""
    with session() as s:
        issue = ops.create_issue(s, source=read_issue_file(path), settings=settings(), filename=path.name)
        typer.echo(f"issue {issue.id} {issue.slug} saved")


@app.command("update")
def issue_update(issue_id: IssueId, path: IssueFile) -> None:
    """Replace an issue's content (refused once a campaign of it started)."""
    with session() as s:
        issue = ops.update_issue(s, issue_id=issue_id, source=read_issue_file(path), settings=settings())
        typer.echo(f"issue {issue.id} {issue.slug} saved")


@app.command("delete")
def issue_delete(issue_id: IssueId) -> None:
    """Delete an issue nothing was planned from."""
    with session() as s:
        ops.delete_issue(s, issue_id=issue_id)
    typer.echo(f"issue {issue_id} deleted")


@app.command("list")
def issue_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
    """All issues, newest first, with their campaigns."""
    with session() as s:
        found = ops.list_issues(s)
    if as_json:
        typer.echo(json.dumps(found))
        return
    for i in found:
        planned = ", ".join(f"campaign {c['id']} → {c['list']} ({c['status']})" for c in i["campaigns"])
        typer.echo(f"{i['id']}\t{i['slug']}\t{i['subject']}" + (f"\t{planned}" if planned else ""))
