"""Render an issue once: Markdown -> Jinja2 -> MJML -> HTML -> CSS inlined.

The output still holds the per-recipient markers of ``mailer.merge`` (greeting name,
unsubscribe and preferences links); filling them is a string replace per recipient,
so the expensive steps here (premailer is ~50 ms) run once per issue, not once per
subscriber. Everything here takes plain values (``RenderContext``) and reads no settings,
except ``render_file`` and ``context_from_settings``, the one door in from the CLI.

Pipeline, top to bottom in ``render_issue``:
    IssueSource (mailer.issues) -> templates/email/issue.mjml.j2 -> validate_mjml
    -> mjml.mjml2html -> premailer.transform -> RenderedIssue (+ issue.txt.j2 for text)
"""

from __future__ import annotations

import logging
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import jinja2

from mailer.core.config import SHIPPED_TEMPLATES
from mailer.core.errors import InvalidInput
from mailer.core.templates import environment
from mailer.issues import TEXT_WIDTH, IssueSource, is_local, load_issue, opening_text
from mailer.merge import MARKERS, personalise
from mailer import tracking

# Gmail clips a message whose HTML is over about 102 KB: the rest (the footer with its
# unsubscribe link) hides behind a "View entire message" link. The markers are shorter
# than the values they become (an unsubscribe URL is ~100 bytes), hence some headroom.
GMAIL_CLIP_BYTES = 102 * 1024
PERSONAL_HEADROOM_BYTES = 1024

ISSUE_TEMPLATE = "email/issue.mjml.j2"
TEXT_TEMPLATE = "email/issue.txt.j2"



def preview_values(base_url: str) -> dict[str, str]:
    """Sample values for previews: the footer links point at the configured site (the
    same paths as a subscriber's, with a token no subscriber has)."""
    base = base_url.rstrip("/")
    return {"name": "Ada", "email": "ada@example.com", "unsubscribe_url": f"{base}/u/preview",
            "preferences_url": f"{base}/p/preview"}


# mjml-python accepts unknown tags silently (FACTS.md); this list is what the reference
# mjml knows, so a typo in an operator's template is caught here, not by a reader.
MJML_TAGS = frozenset(
    """mjml mj-head mj-body mj-attributes mj-all mj-class mj-breakpoint mj-font
    mj-html-attributes mj-html-attribute mj-selector mj-preview mj-style mj-title mj-raw
    mj-accordion mj-accordion-element mj-accordion-title mj-accordion-text mj-button
    mj-carousel mj-carousel-image mj-column mj-divider mj-group mj-hero mj-image mj-navbar
    mj-navbar-link mj-section mj-social mj-social-element mj-spacer mj-table mj-text
    mj-wrapper mj-include""".split()
)
_MJ_TAG = re.compile(r"</?(mj[a-z0-9-]*)\b", re.I)


def _premailer():
    """premailer, cssutils and requests take a third of a second to import: only a render
    pays for them, not every ``newsletter`` command that merely can render."""
    import cssutils
    import premailer

    # cssutils logs every CSS property it does not know (mso-*, -webkit-*) as an error.
    cssutils.log.setLevel(logging.CRITICAL)
    return premailer


@dataclass(frozen=True)
class RenderContext:
    from_name: str
    postal_address: str
    base_url: str
    list_name: str = ""  # "" -> the issue's ``list:``, else from_name
    template_folders: list[Path] = field(default_factory=list)
    web_url: str | None = None  # None -> f"{base_url}/issues/{slug}"
    # Every warning refuses the issue (an image without alt text among them):
    # NEWSLETTER_STRICT_RENDER, or ``--strict`` on the command line.
    strict: bool = False


@dataclass(frozen=True)
class RenderedIssue:
    slug: str
    subject: str
    preheader: str
    html: str  # CSS inlined; per-recipient values are mailer.merge markers
    text: str  # the plain-text part, same markers
    mjml: str  # the generated MJML source
    warnings: tuple[str, ...] = ()
    web_url: str = ""
    date: str = ""  # the issue's own date (ISO 8601) from its front matter, if it has one
    base_url: str = ""  # where previews point the footer links
    # The content links' targets, as click tracking numbers them (``mailer.tracking``).
    links: tuple[str, ...] = ()


def render_issue(source: IssueSource, *, ctx: RenderContext) -> RenderedIssue:
    """Render ``source`` into HTML and text; problems a sender should know about come
    back as ``warnings``, problems that make the issue unsendable as ``InvalidInput``
    (in strict mode, every warning too)."""
    env = _environment(tuple(ctx.template_folders) or (SHIPPED_TEMPLATES,))
    web_url = ctx.web_url or f"{ctx.base_url.rstrip('/')}/issues/{source.slug}"
    values = {
        "subject": source.subject,
        "preheader": source.preheader,
        "date": _human_date(source),
        "list_name": ctx.list_name or source.list_name or ctx.from_name,
        "from_name": ctx.from_name,
        "postal_address": ctx.postal_address,
        "web_url": web_url,
        "sections": source.sections,
        "markers": MARKERS,
        "lang": source.lang,
        "dir": source.dir,
        "align": "right" if source.dir == "rtl" else "left",
    }
    mjml_source = _render_template(env, ISSUE_TEMPLATE, values)
    html = inline_css(compile_mjml(mjml_source))
    text = _tidy_text(_render_template(env, TEXT_TEMPLATE, values))
    warnings = tuple(check_issue(source, html))
    if ctx.strict and warnings:
        raise InvalidInput(f"{warnings[0]} (strict mode: every warning refuses the issue)")
    return RenderedIssue(
        slug=source.slug,
        subject=source.subject,
        preheader=source.preheader,
        html=html,
        text=text,
        mjml=mjml_source,
        warnings=warnings,
        web_url=web_url,
        date=source.date.isoformat() if source.date else "",
        base_url=ctx.base_url.rstrip("/"),
        links=tuple(tracking.content_links(html, ctx.base_url)),
    )


def validate_mjml(source: str) -> None:
    """Refuse MJML that the renderer cannot compile or that uses unknown tags."""
    compile_mjml(source)


def compile_mjml(source: str) -> str:
    for name in _MJ_TAG.findall(source):
        if name.lower() not in MJML_TAGS:
            raise InvalidInput(f"MJML from the templates uses an unknown tag <{name}>")
    try:
        # fonts={}: no Google Fonts <link>; the layout uses the reader's system fonts.
        import mjml  # imported when first used, as premailer is

        return mjml.mjml2html(source, disable_comments=True, fonts={})
    except ValueError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "invalid MJML"
        raise InvalidInput(f"MJML from the templates is invalid: {reason}") from err


def inline_css(html: str) -> str:
    """Move the CSS of ``<style>`` into ``style=`` attributes (Gmail and Outlook drop or
    ignore much of ``<style>``); media queries stay in a ``<style>`` block."""
    inlined = _premailer().transform(
        html,
        allow_network=False,  # never fetch a stylesheet while rendering
        strip_important=False,  # MJML's responsive rules rely on !important
        keep_style_tags=False,  # inlinable rules go; leftovers (@media) are kept
        remove_classes=False,  # the @media rules select by class
        disable_validation=True,  # keep overflow-wrap:anywhere, mso-* and friends
        disable_link_rewrites=True,
        # premailer copies CSS heights into height= attributes: an image's "height: auto"
        # would replace the real height it is given, and its layout would jump on load.
        disable_basic_attributes=["height"],
        cssutils_logging_level=logging.CRITICAL,
    )
    # lxml drops the doctype; without it a browser (the web archive) renders in quirks mode.
    if html.lstrip()[:9].lower() == "<!doctype" and not inlined.lstrip()[:9].lower() == "<!doctype":
        inlined = "<!doctype html>\n" + inlined
    return inlined


def check_issue(source: IssueSource, html: str) -> list[str]:
    """What a sender should fix before sending, as one-line warnings."""
    warnings: list[str] = []
    if not source.subject.strip():
        warnings.append("no subject")
    if not source.preheader.strip():
        warnings.append("no preheader: inbox lists will show the first words of the body instead")
    elif source.preheader_given and repeats_opening(source):
        warnings.append("the preheader repeats the first words of the issue: inbox lists show it next to them;"
                        " write a line of its own, or leave it out for a summary of the story titles")
    size = len(html.encode("utf-8"))
    if size > GMAIL_CLIP_BYTES - PERSONAL_HEADROOM_BYTES:
        warnings.append(
            f"HTML is {size / 1024:.0f} KB: Gmail clips messages over 102 KB and hides the rest,"
            " including the unsubscribe link; shorten the issue"
        )
    for image in source.images:
        if not image.alt:
            warnings.append(f"image {_short(image.src)} has no alt text: write what it shows in ![...]"
                            " (screen readers read it, and many readers block images)")
        if is_local(image.src) and not image.published:
            warnings.append(f"image {_short(image.src)} is a file next to the issue: it is published when the issue"
                            " is saved from its file (newsletter issue create FILE); until then it shows nowhere")
            continue
        problem = _url_problem(image.published or image.src)
        if problem:
            warnings.append(f"image {_short(image.src)} {problem}")
    for link in source.links:
        problem = _url_problem(link, allow_mailto=True)
        if problem:
            warnings.append(f"link {_short(link)} {problem}")
    return warnings


def repeats_opening(source: IssueSource) -> bool:
    """True when the preheader is the opening of the body word for word: the inbox list
    would show the same words twice (preheader, then the start of the message)."""
    def norm(text: str) -> str:
        return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())

    preheader = norm(source.preheader)
    return bool(preheader) and preheader in norm(opening_text(source))


def preview_html(rendered: RenderedIssue, values: Mapping[str, str] | None = None) -> str:
    """The HTML with sample values in place of the markers, for previews."""
    return personalise(rendered.html, values or preview_values(rendered.base_url), html=True)


def preview_text(rendered: RenderedIssue, values: Mapping[str, str] | None = None) -> str:
    return personalise(rendered.text, values or preview_values(rendered.base_url), html=False)


def write_render_outputs(rendered: RenderedIssue, out_dir: Path, *, sample_message: bytes | None,
                         assets: Mapping[str, bytes] | None = None, asset_url: str = "") -> list[Path]:
    """Write a preview of the rendered issue (sample values in place of the markers):
    ``index.html``, ``index.txt``, if given ``message.eml``, and the issue's images in
    ``assets/`` (``assets``: file name -> bytes); index.html shows those copies in place
    of the published URLs, which start with ``asset_url``."""
    out_dir = Path(out_dir)
    html = preview_html(rendered)
    if assets and asset_url:
        html = html.replace(asset_url, "assets/")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [out_dir / "index.html", out_dir / "index.txt"]
        written[0].write_text(html, encoding="utf-8")
        written[1].write_text(preview_text(rendered), encoding="utf-8")
        if sample_message is not None:
            written.append(out_dir / "message.eml")
            written[-1].write_bytes(sample_message)
        if assets:
            (out_dir / "assets").mkdir(exist_ok=True)
            for name, data in assets.items():
                written.append(out_dir / "assets" / name)
                written[-1].write_bytes(data)
    except OSError as err:
        raise InvalidInput(f"{out_dir}: cannot write: {err.strerror or err}") from err
    return written


def context_from_settings(settings, *, list_name: str = "", web_url: str | None = None,
                          strict: bool | None = None) -> RenderContext:
    """Build a ``RenderContext`` from ``mailer.core.config.Settings`` (``strict``: None
    follows ``NEWSLETTER_STRICT_RENDER``)."""
    return RenderContext(
        from_name=settings.from_address.display_name or settings.from_address.addr_spec,
        postal_address=settings.postal_address,
        base_url=settings.base_url,
        list_name=list_name,
        template_folders=list(settings.template_folders),
        web_url=web_url,
        strict=settings.strict_render if strict is None else strict,
    )


def render_file(path: str | Path, settings) -> RenderedIssue:
    """Load an issue file and render it with the operator's settings."""
    source = load_issue(path)
    return render_issue(source, ctx=context_from_settings(settings, list_name=source.list_name))


# -- helpers -------------------------------------------------------------------------


def _environment(folders: tuple[Path, ...]) -> jinja2.Environment:
    env = environment(folders)
    env.filters.setdefault("wrap", _wrap)
    env.filters.setdefault("underline", _underline)
    return env


def _underline(text: str, char: str = "=") -> str:
    """A setext underline as long as the longest line of ``text`` (as wrapped)."""
    return char * min(max((len(line) for line in str(text).splitlines()), default=0), TEXT_WIDTH)


def _render_template(env: jinja2.Environment, name: str, values: dict) -> str:
    try:
        return env.get_template(name).render(values)
    except jinja2.TemplateSyntaxError as err:
        raise InvalidInput(f"template {err.filename or err.name}, line {err.lineno}: {err.message}") from err
    except jinja2.TemplateNotFound as err:
        raise InvalidInput(f"template {err.name} not found in the template folders") from err
    except jinja2.UndefinedError as err:
        raise InvalidInput(f"template {name}: {err.message}") from err


def _wrap(text: str, prefix: str = "") -> str:
    return textwrap.fill(
        " ".join(str(text).split()),
        TEXT_WIDTH,
        initial_indent=prefix,
        subsequent_indent=" " * len(prefix),
        break_long_words=False,
        break_on_hyphens=False,
    )


def _tidy_text(text: str) -> str:
    lines = [line.rstrip() if line != "-- " else line for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"


def _human_date(source: IssueSource) -> str:
    d = source.date
    return f"{d:%B} {d.day}, {d.year}" if d else ""


def _url_problem(url: str, *, allow_mailto: bool = False) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if allow_mailto and scheme == "mailto":
        return ""
    if not scheme or not parts.netloc:
        return "is relative: a mail client has no page to resolve it against; use an absolute https:// URL"
    if scheme != "https":
        return f"is not https ({scheme}://)"
    return ""


def _short(url: str, limit: int = 80) -> str:
    return repr(url if len(url) <= limit else url[: limit - 1] + "…")
