"""Pre-flight: what is checked before a campaign starts, on the message exactly as the
workers would mail it (compiled, personalised for a sample recipient, DKIM-signed):

- size: the HTML under Gmail's 102 KB clip (past it the footer, with the unsubscribe
  link, hides behind "View entire message");
- links: every link well-formed and https (mailto: aside);
- one-click: List-Unsubscribe with an https URL and List-Unsubscribe-Post (RFC 8058),
  both covered by the DKIM signature;
- dkim: the signature verifies (dkimpy) against the configured key's own record;
- spamassassin: its score below its threshold, with the rules that fired, when the
  ``spamassassin`` command is installed (``NEWSLETTER_SPAMASSASSIN=off`` skips it);
- complaints: the list's complaint rate over its recent campaigns under 0.3%.

A failed check blocks the start (``PreflightFailed``, one line naming each) unless the
editor overrides it explicitly. Development allows what only production needs (http
links to ``NEWSLETTER_BASE_URL``, no DKIM key): those show as warnings. The CLI, the API
and the dashboard call ``check`` through ``mailer.operations.campaigns``."""

from __future__ import annotations

import email
import email.policy
import functools
import hashlib
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from mailer import dispatch, queries
from mailer.core.config import Settings
from mailer.core.errors import ConflictError, InvalidInput
from mailer.models import Campaign, Issue
from mailer.render import GMAIL_CLIP_BYTES
from mailer.sending import assemble, compile_campaign
from subscribers.models import MailingList

COMPLAINT_RATE_LIMIT = 0.003  # Gmail's and Yahoo's line: 0.3% of the mail delivered
RECENT_CAMPAIGNS = 5  # the campaigns of a list whose complaints count
ONE_CLICK = "List-Unsubscribe=One-Click"
SAMPLE = queries.Recipient(delivery_id=1, subscriber_id=1, email="preflight@example.com", name="Reader",
                           attempts=0, status="")
SPAMASSASSIN_TIMEOUT = 60
_STATUS = re.compile(r"score=(-?[\d.]+)\s+required=(-?[\d.]+)")
_RULE = re.compile(r"^\s*(-?\d+\.\d+)\s+([A-Z0-9_]+)\s+(.*)$")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    blocking: bool = True  # a failure that stops the start (False: shown as a warning)
    lines: tuple[str, ...] = ()  # more to show: the rules SpamAssassin fired, the bad links

    @property
    def state(self) -> str:
        return "pass" if self.ok else "fail" if self.blocking else "warn"


@dataclass(frozen=True)
class Preflight:
    checks: tuple[Check, ...]
    overridden: bool = False

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.state == "fail")

    def summary(self) -> str:
        if self.passed:
            return "pre-flight passed"
        return "pre-flight failed: " + "; ".join(f"{c.name}: {c.detail}" for c in self.failures)

    def as_dict(self) -> dict:
        return {"passed": self.passed, "overridden": self.overridden,
                "checks": [{**asdict(c), "lines": list(c.lines), "state": c.state} for c in self.checks]}


class PreflightFailed(ConflictError):
    """A start refused by pre-flight; ``preflight`` says which checks failed."""

    def __init__(self, preflight: Preflight, override_hint: str):
        super().__init__(f"{preflight.summary()} ({override_hint})")
        self.preflight = preflight


# --- the checks, each on the message's bytes or parts ---------------------------------

class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.extend(v or "" for k, v in attrs if k == "href")


def check_size(html: str) -> Check:
    size = len(html.encode("utf-8"))
    ok = size <= GMAIL_CLIP_BYTES
    what = f"the HTML is {size / 1024:.1f} KB"
    return Check("size", ok, f"{what}, under Gmail's 102 KB clip" if ok else
                 f"{what}: Gmail clips it at 102 KB and hides the rest, the unsubscribe link with it; shorten the issue")


def _link_problem(href: str) -> str:
    if href.startswith("mailto:"):
        return ""
    try:
        parts = urlsplit(href)
        parts.port  # noqa: B018 - a bad port raises
    except ValueError:
        return "not a well-formed URL"
    if re.search(r"\s", href) or (parts.scheme in ("http", "https") and not parts.hostname):
        return "not a well-formed URL"
    if parts.scheme != "https":
        return "not https" if parts.scheme == "http" else f"not an https link ({parts.scheme or 'relative'})"
    return ""


def check_links(html: str, *, base_url: str, production: bool) -> Check:
    parser = _Links()
    parser.feed(html)
    bad, ours = [], []
    for href in dict.fromkeys(parser.hrefs):
        problem = _link_problem(href)
        if not problem:
            continue
        # Our own pages (unsubscribe, preferences) follow NEWSLETTER_BASE_URL: http is
        # fine on a development machine, a blocker in production.
        (ours if href.startswith(base_url + "/") and problem == "not https" else bad).append(f"{href}: {problem}")
    if bad or (ours and production):
        found = bad + (ours if production else [])
        return Check("links", False, f"{len(found)} link(s) not well-formed https: {found[0]}", lines=tuple(found))
    if ours:
        return Check("links", False, "the links to this site are http (NEWSLETTER_BASE_URL): fine for development, "
                     "refused in production", blocking=False, lines=tuple(ours))
    return Check("links", True, f"{len(parser.hrefs)} link(s), all https")


def _dkim_signed(message: bytes) -> list[set[str]]:
    """The h= header lists of each DKIM-Signature in the message."""
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    found = []
    for value in parsed.get_all("DKIM-Signature") or []:
        tags = dict(t.strip().split("=", 1) for t in "".join(value.split()).split(";") if "=" in t)
        found.append({h.strip().lower() for h in tags.get("h", "").split(":") if h.strip()})
    return found


def check_one_click(message: bytes, *, production: bool) -> Check:
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    unsubscribe, post = parsed.get("List-Unsubscribe"), parsed.get("List-Unsubscribe-Post")
    if not unsubscribe:
        return Check("one-click", False, "no List-Unsubscribe header: Gmail and Yahoo require one-click unsubscribe")
    if (post or "").strip() != ONE_CLICK:
        return Check("one-click", False, f"List-Unsubscribe-Post is {post!r}, not {ONE_CLICK!r} (RFC 8058)")
    urls = re.findall(r"<([^>]*)>", " ".join(unsubscribe.split()))
    if not any(u.startswith("https://") for u in urls):
        return Check("one-click", False, "List-Unsubscribe has no https URL (RFC 8058 one-click needs one)",
                     blocking=production, lines=tuple(urls))
    signed = _dkim_signed(message)
    if signed and not all({"list-unsubscribe", "list-unsubscribe-post"} <= h for h in signed):
        return Check("one-click", False, "List-Unsubscribe and List-Unsubscribe-Post are not both DKIM-signed")
    return Check("one-click", True, "List-Unsubscribe (https) and List-Unsubscribe-Post"
                 + (", both DKIM-signed" if signed else ""))


def check_dkim(message: bytes, records: dict[str, str], *, production: bool) -> Check:
    """``records``: selector._domainkey.domain -> the TXT record of the configured key."""
    if not records:
        return Check("dkim", False, "no DKIM key (NEWSLETTER_DKIM_*): Gmail and Yahoo require DKIM for bulk mail",
                     blocking=production)
    count = len(_dkim_signed(message))
    if not count:
        return Check("dkim", False, "the message carries no DKIM-Signature")
    import dkim  # dkimpy brings dnspython (~0.1 s): imported by the check, not every command

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        record = records.get(name.decode("ascii").rstrip(".").lower())
        return record.encode("ascii") if record else None

    verifier = dkim.DKIM(message)
    failed = []
    for idx in range(count):
        try:
            ok = verifier.verify(idx=idx, dnsfunc=lookup)
        except dkim.DKIMException as err:
            ok, why = False, str(err)
        else:
            why = "does not verify"
        if not ok:
            failed.append(f"signature {idx + 1}: {why}")
    if failed:
        return Check("dkim", False, f"the DKIM signature does not verify against the configured key: {failed[0]}",
                     lines=tuple(failed))
    return Check("dkim", True, f"{count} signature(s) verify against {', '.join(sorted(records))}")


@functools.lru_cache(maxsize=32)
def _spamassassin(digest: str, message: bytes) -> tuple[float, float, tuple[str, ...]]:
    # ``digest`` keys the cache: the same message is not scored twice in one process.
    run = subprocess.run(["spamassassin", "-L", "-t"], input=message, capture_output=True,
                         timeout=SPAMASSASSIN_TIMEOUT)
    out = run.stdout.decode("utf-8", "replace")
    status = re.search(r"^X-Spam-Status:.*?(?=^\S)", out, re.M | re.S)
    found = _STATUS.search(" ".join(status.group(0).split())) if status else None
    if not found:
        raise RuntimeError(" ".join(run.stderr.decode("utf-8", "replace").split())[:200] or "no X-Spam-Status")
    report = out.partition("Content analysis details:")[2]
    # The report comes twice (the text part and the one kept with the original): once each.
    rules = tuple(dict.fromkeys(f"{m.group(1)} {m.group(2)} {m.group(3).strip()}"
                                for line in report.splitlines() if (m := _RULE.match(line))))
    return float(found.group(1)), float(found.group(2)), rules


def check_spamassassin(message: bytes, *, enabled: bool) -> Check:
    if not enabled:
        return Check("spamassassin", True, "skipped (NEWSLETTER_SPAMASSASSIN=off)", blocking=False)
    if not shutil.which("spamassassin"):
        return Check("spamassassin", True, "skipped: spamassassin is not installed", blocking=False)
    try:
        score, required, rules = _spamassassin(hashlib.sha256(message).hexdigest(), message)
    except (OSError, subprocess.SubprocessError, RuntimeError) as err:
        return Check("spamassassin", False, f"could not score the message: {err}", blocking=False)
    ok = score < required
    return Check("spamassassin", ok, f"score {score:g} ({required:g} is spam)" if ok else
                 f"score {score:g}, at or over {required:g}: SpamAssassin calls it spam", lines=rules)


def check_complaints(complaints: int, delivered: int) -> Check:
    if not delivered:
        return Check("complaints", True, "no messages delivered to this list yet")
    rate = complaints / delivered
    shown = f"{complaints} complaint(s) per {delivered} delivered over the last {RECENT_CAMPAIGNS} campaigns " \
            f"({rate:.2%})"
    if rate >= COMPLAINT_RATE_LIMIT:
        return Check("complaints", False, f"{shown}: at or over Gmail's and Yahoo's 0.3%; clean the list first")
    return Check("complaints", True, f"{shown}, under 0.3%")


# --- the one entry point --------------------------------------------------------------

def check(session: Session, *, issue: Issue, mlist: MailingList, settings: Settings) -> Preflight:
    """Every check on the issue as this list would get it."""
    cfg = dispatch.engine_config(settings)
    prepared = compile_campaign(issue, mlist, 0, cfg)
    message = assemble(prepared, SAMPLE, cfg).message
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    html_part = parsed.get_body(("html",))
    html = html_part.get_content() if html_part is not None else ""
    production = settings.env == "production"
    records = {signer.record_name: signer.dns_record for signer in cfg.signers}
    complaints, delivered = queries.list_complaints(session, list_id=mlist.id, campaigns=RECENT_CAMPAIGNS)
    return Preflight((
        check_size(html),
        check_links(html, base_url=settings.base_url, production=production),
        check_one_click(message, production=production),
        check_dkim(message, records, production=production),
        check_spamassassin(message, enabled=settings.spamassassin),
        check_complaints(complaints, delivered),
    ))


@dataclass(frozen=True)
class Gate:
    """How a start is asked for: whether the editor overrides a failed pre-flight, and
    what the adapter calls the override (for the refusal's one line)."""

    override: bool = False
    hint: str = field(default="override it to start anyway")


def enforce(session: Session, *, issue: Issue, mlist: MailingList, settings: Settings, gate: Gate) -> Preflight:
    """``check``, then refuse the start when a check failed and the editor did not
    override it."""
    found = check(session, issue=issue, mlist=mlist, settings=settings)
    if not found.passed:
        if not gate.override:
            raise PreflightFailed(found, gate.hint)
        return Preflight(found.checks, overridden=True)
    return found


def recheck(session: Session, *, campaign_id: int, settings: Settings) -> tuple[str, dict] | None:
    """The dispatcher's check at a scheduled campaign's time, on the issue as stored
    (what the workers will mail) and the list as it is now: None when it passes, else
    the one line naming the failed checks and every check (``Preflight.as_dict``)."""
    campaign = session.get(Campaign, campaign_id)
    try:
        found = check(session, issue=session.get(Issue, campaign.issue_id),
                      mlist=session.get(MailingList, campaign.list_id), settings=settings)
    except InvalidInput as err:  # the stored issue no longer becomes a message: held too, not a crash
        found = Preflight((Check("message", False, f"the message cannot be built: {err}"),))
    return None if found.passed else (found.summary(), found.as_dict())
