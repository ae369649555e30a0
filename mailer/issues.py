"""An issue as its author writes it: Markdown with YAML front matter.

    ---
    subject: What happened this week        (required, one line)
    preheader: The line inbox lists show    (optional: else a summary of the story titles)
    date: 2022-06-14                        (optional)
    slug: china-ai-weekly-2022-06-14        (optional: else the file name, else the subject)
    list: Recode China AI                   (optional: the list's display name)
    lang: en                                (optional: the language, BCP 47; default en)
    dir: ltr                                (optional: ltr, rtl or auto; default from lang)
    ---
    Intro paragraphs...
    ## A section
    ### A story
    Paragraphs, **bold lead-ins:**, [links](https://...), ![images](https://...),
    ![local images](chart.png) next to the Markdown file (published with the issue).

Parsing is pure: text in, an ``IssueSource`` out, each story already in both forms the
renderer needs (sanitised HTML and plain text with link references numbered through the
whole issue), so the HTML and the text part of a message are made from the same parsed
content. Raw HTML in the Markdown is never passed through: markdown-it runs with
``html`` off (``<script>`` shows as text) and its output goes through nh3 as well.

A local image (a relative ``src``) is resolved through ``images``, a mapping from the
name as written to its published ``ImageRef`` (an absolute URL, width and height): the
caller publishes the files (``mailer.images``) and passes the result in.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
import textwrap
import unicodedata
from dataclasses import dataclass
from collections.abc import Mapping
from pathlib import Path

import nh3
import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token

from mailer.core.errors import InvalidInput

# A newsletter issue is a few tens of KB of Markdown; Gmail clips HTML over 102 KB anyway.
# The limit keeps a wrong file (a log, a data dump) from tying up the renderer.
MAX_ISSUE_BYTES = 1_000_000
TEXT_WIDTH = 72
FRONT_MATTER_KEYS = ("subject", "preheader", "date", "slug", "list", "lang", "dir")
DIRECTIONS = ("ltr", "rtl", "auto")
# Scripts written right to left (the primary language subtag), for the default ``dir``.
RTL_LANGUAGES = frozenset({"ar", "arc", "ckb", "dv", "fa", "he", "iw", "ku", "ps", "sd", "ug", "ur", "yi"})
LANG_RE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")
# What inbox lists show after the subject: about 90-140 characters depending on the client.
PREHEADER_CHARS = 140
# RFC 5322 2.1.1: a header line must not exceed 998 characters.
MAX_SUBJECT_CHARS = 998
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,198}[a-z0-9])?$")
# Names the archive uses for its own pages under /issues/ (``mailer.web.public.archive``):
# an issue slugged so could never be reached.
RESERVED_SLUGS = frozenset({"latest"})

_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?)(?:\r?\n)?^(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S | re.M)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


@dataclass(frozen=True)
class Image:
    src: str  # as written in the Markdown
    alt: str
    published: str = ""  # a local image: the URL it was published at


@dataclass(frozen=True)
class ImageRef:
    """Where a local image was published, and its display size in CSS pixels."""

    url: str
    width: int
    height: int


def is_local(src: str) -> bool:
    """A relative image reference (``chart.png``, ``img/a.jpg``): a file next to the issue."""
    return bool(src) and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", src) and not src.startswith(("/", "\\"))


@dataclass(frozen=True)
class Story:
    """A ``###`` story (``title`` is "" for paragraphs before a section's first story)."""

    title: str  # plain text
    title_html: str  # inline HTML (the title may be a link)
    title_text: str  # for the text part: the title with its links as [n]
    html: str  # sanitised HTML of the body
    text: str  # plain text of the body, wrapped, links as [n]
    links: tuple[str, ...]  # every href of the story, title link first
    images: tuple[Image, ...]
    # (n, href) for each of ``links``: [n] is numbered through the whole issue, so one
    # number means one URL everywhere in the text part.
    refs: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Section:
    """A ``##`` section (``title`` is "" for the intro before the first section)."""

    title: str
    stories: tuple[Story, ...]


@dataclass(frozen=True)
class IssueSource:
    slug: str
    subject: str
    preheader: str
    date: _dt.date | None
    list_name: str
    body: str  # the Markdown after the front matter
    sections: tuple[Section, ...]
    lang: str = "en"
    dir: str = "ltr"
    preheader_given: bool = True  # False: ``preheader`` is the summary made from the titles

    @property
    def stories(self) -> tuple[Story, ...]:
        return tuple(story for section in self.sections for story in section.stories)

    @property
    def links(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(link for story in self.stories for link in story.links))

    @property
    def images(self) -> tuple[Image, ...]:
        return tuple(image for story in self.stories for image in story.images)


def load_issue(path: str | Path, *, images: Mapping[str, ImageRef] | None = None) -> IssueSource:
    """Read and parse an issue file; every problem is a one-line ``InvalidInput``."""
    return parse_issue(read_issue_file(path), filename=Path(path).name, images=images)


def read_issue_file(path: str | Path) -> str:
    """An issue file's text; a missing, unreadable, huge or non-UTF-8 file is a one-line
    ``InvalidInput`` naming it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise InvalidInput(f"{path}: is a directory, not an issue file")
        if not path.is_file():  # a FIFO or a device would block or never end
            raise InvalidInput(f"{path}: not a regular file")
        if size > MAX_ISSUE_BYTES:  # refuse before reading a huge file
            raise InvalidInput(_too_big(path.name, size))
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise InvalidInput(f"{path}: no such file") from err
    except PermissionError as err:
        raise InvalidInput(f"{path}: permission denied") from err
    except OSError as err:
        raise InvalidInput(f"{path}: cannot read: {err.strerror or err}") from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidInput(f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})") from err
    return text


def parse_issue(text: str, *, filename: str | None = None,
                images: Mapping[str, ImageRef] | None = None) -> IssueSource:
    """Parse an issue; every problem is a one-line ``InvalidInput``. ``images`` maps a
    local image's name (as written) to where it was published."""
    where = f"{filename}: " if filename else ""
    # len() of a str is O(1), so a 10 MB string is refused before any work on it.
    if len(text) > MAX_ISSUE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_ISSUE_BYTES:
        raise InvalidInput(where + _too_big("the issue", len(text.encode("utf-8", "surrogatepass"))))
    match = _FRONT_MATTER.match(text)
    if not match:
        raise InvalidInput(where + "no front matter: the issue must start with a '---' line, then 'subject: ...', then '---'")
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" (line {mark.line + 2})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InvalidInput(f"{where}front matter is not valid YAML{line}: {problem}") from err
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise InvalidInput(f"{where}front matter must be 'key: value' lines, got a {type(meta).__name__}")
    unknown = sorted(str(key) for key in meta if key not in FRONT_MATTER_KEYS)
    if unknown:
        raise InvalidInput(f"{where}unknown front matter key {unknown[0]!r}; known keys: {', '.join(FRONT_MATTER_KEYS)}")

    subject = _one_line_field(meta, "subject", where)
    if not subject:
        raise InvalidInput(f"{where}front matter has no subject: add 'subject: ...'")
    if len(subject) > MAX_SUBJECT_CHARS:
        raise InvalidInput(f"{where}subject is {len(subject)} characters; the limit is {MAX_SUBJECT_CHARS}")
    preheader = _one_line_field(meta, "preheader", where)
    list_name = _one_line_field(meta, "list", where)
    issue_date = _date_field(meta.get("date"), where)
    slug = _slug_field(meta.get("slug"), where) or derive_slug(subject, filename=filename)
    lang = _one_line_field(meta, "lang", where) or "en"
    if not LANG_RE.match(lang):
        raise InvalidInput(f"{where}lang {lang[:40]!r} is not a language tag; use e.g. en, zh-Hans or pt-BR")
    direction = _one_line_field(meta, "dir", where).lower() or default_dir(lang)
    if direction not in DIRECTIONS:
        raise InvalidInput(f"{where}dir {direction[:40]!r} must be one of {', '.join(DIRECTIONS)}")

    body = text[match.end():]
    if not body.strip():
        raise InvalidInput(f"{where}the issue has no content after the front matter")
    sections = _parse_body(body, images or {})
    return IssueSource(
        slug=slug,
        subject=subject,
        preheader=preheader or summarize(sections),
        date=issue_date,
        list_name=list_name,
        body=body,
        sections=sections,
        lang=lang,
        dir=direction,
        preheader_given=bool(preheader),
    )


def default_dir(lang: str) -> str:
    return "rtl" if lang.split("-")[0].lower() in RTL_LANGUAGES else "ltr"


def summarize(sections: tuple[Section, ...], limit: int = PREHEADER_CHARS) -> str:
    """The preheader an issue gets when it gives none: its story titles (else its section
    titles), cut at a word before ``limit``. A summary, so it never repeats the opening
    paragraph an inbox list would show anyway."""
    titles = [story.title for section in sections for story in section.stories if story.title]
    titles = titles or [section.title for section in sections if section.title]
    summary = " · ".join(titles)
    if len(summary) <= limit:
        return summary
    cut = summary[: limit - 1].rsplit(" ", 1)[0].rstrip(" ·,;:")
    return cut + "…"


def opening_text(source: IssueSource, chars: int = 400) -> str:
    """The first words a reader sees in the body, as plain text without link numbers."""
    first = next((story for section in source.sections for story in section.stories), None)
    if first is None:
        return ""
    body = re.sub(r"\s*\[\d+\]", "", first.text)
    return " ".join(f"{first.title} {body}".split())[:chars]


def derive_slug(subject: str, *, filename: str | None = None) -> str:
    """A URL-safe slug from the file name (``x/2022-06-14-news.md`` -> ``2022-06-14-news``),
    else from the subject; a subject with no Latin letters gets a stable hash."""
    for candidate in (Path(filename).stem if filename else "", subject):
        slug = _slugify(candidate)
        if slug in RESERVED_SLUGS:
            return f"{slug}-issue"
        if slug:
            return slug
    return "issue-" + hashlib.sha256(subject.encode("utf-8")).hexdigest()[:10]


def _slugify(value: str) -> str:
    ascii_only = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_only.lower()).strip("-")
    return slug[:80].rstrip("-")


def _too_big(what: str, size: int) -> str:
    return f"{what} is {size / 1_000_000:.1f} MB; the limit is {MAX_ISSUE_BYTES // 1_000_000} MB"


def _one_line_field(meta: dict, key: str, where: str) -> str:
    value = meta.get(key)
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise InvalidInput(f"{where}{key} must be text, not a {type(value).__name__}")
    value = str(value).strip()
    # A subject goes into a mail header: a CR or LF in it would start a new header
    # (header injection), so a line break anywhere in these one-line fields is refused.
    if _CONTROL.search(value.replace("\t", " ")):
        raise InvalidInput(f"{where}{key} must be one line without control characters (no CR or LF)")
    return " ".join(value.split())


def _date_field(value, where: str) -> _dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    try:
        return _dt.date.fromisoformat(str(value).strip())
    except ValueError as err:
        raise InvalidInput(f"{where}date {str(value)[:40]!r} is not a date; use YYYY-MM-DD") from err


def _slug_field(value, where: str) -> str:
    if value is None or value == "":
        return ""
    slug = str(value).strip()
    if not SLUG_RE.match(slug):
        raise InvalidInput(f"{where}slug {slug[:60]!r} must be lower-case letters, digits and '-' (it goes into URLs)")
    if slug in RESERVED_SLUGS:
        raise InvalidInput(f"{where}slug {slug!r} is the archive's link to the newest issue; choose another")
    return slug


# -- Markdown body -------------------------------------------------------------------


def _parse_body(body: str, images: Mapping[str, ImageRef]) -> tuple[Section, ...]:
    env: dict = {"images": images}
    tokens = _md.parse(body, env)
    refs: list[str] = []  # every href of the issue, in order: [n] is refs[n-1]
    sections: list[tuple[str, list[tuple[Token | None, list[Token]]]]] = []
    current_title = ""
    current_stories: list[tuple[Token | None, list[Token]]] = []

    def close_section() -> None:
        stories = [(title, toks) for title, toks in current_stories if title is not None or toks]
        if current_title or stories:
            sections.append((current_title, stories))

    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == "heading_open" and tok.level == 0 and tok.tag in ("h1", "h2", "h3"):
            inline = tokens[i + 1]
            if tok.tag in ("h1", "h2"):
                close_section()
                current_title = _inline_plain(inline.children or [])
                current_stories = []
            else:
                current_stories.append((inline, []))
            i += 3  # heading_open, inline, heading_close
            continue
        if not current_stories:
            current_stories.append((None, []))
        current_stories[-1][1].append(tok)
        i += 1
    close_section()
    return tuple(
        Section(title=title, stories=tuple(_make_story(inline, toks, env, refs) for inline, toks in stories))
        for title, stories in sections
    )


def _make_story(title_inline: Token | None, tokens: list[Token], env: dict, refs: list[str]) -> Story:
    links: list[str] = []
    images: list[Image] = []
    title = title_html = title_text = ""
    if title_inline is not None:
        children = title_inline.children or []
        title = _inline_plain(children)
        title_html = _clean(_md.renderer.renderInline(children, _md.options, env))
        _collect(children, links, images, env["images"])
        # The title's link gets a reference too, so the text part carries it.
        title_text = _inline_text(children, refs).strip()
    for tok in tokens:
        if tok.type == "inline":
            _collect(tok.children or [], links, images, env["images"])
    html = _clean(_md.renderer.render(tokens, _md.options, env)) if tokens else ""
    text = _blocks_to_text(tokens, refs)
    return Story(
        title=title,
        title_html=title_html,
        title_text=title_text,
        html=html,
        text=text,
        links=tuple(links),
        images=tuple(images),
        refs=tuple((_ref(refs, href), href) for href in links),
    )


def _render_image(self, tokens: list[Token], idx: int, options, env: dict) -> str:
    """A local image points at where it was published, with its size, so the layout
    does not jump while it loads; any other image renders as markdown-it writes it."""
    token = tokens[idx]
    published = (env.get("images") or {}).get(str(token.attrGet("src") or ""))
    if published is None:
        return self.image(tokens, idx, options, env)
    # A copy: the token still names the file as written, for the checks and the text part.
    shown = token.copy(attrs={**token.attrs, "src": published.url, "width": str(published.width),
                              "height": str(published.height)})
    return self.image([shown], 0, options, env)


_md.add_render_rule("image", _render_image)


def _clean(html: str) -> str:
    # markdown-it with html off already escapes raw HTML; nh3 is the second lock on the
    # door (and keeps hrefs as written: no rel= rewriting, relative links allowed;
    # img keeps src, alt, width and height).
    return nh3.clean(html, link_rel=None)


def _collect(children: list[Token], links: list[str], images: list[Image], published: Mapping[str, ImageRef]) -> None:
    for child in children:
        if child.type == "link_open":
            _ref(links, str(child.attrGet("href") or ""))
        elif child.type == "image":
            src = str(child.attrGet("src") or "")
            ref = published.get(src)
            images.append(Image(src=src, alt=_inline_plain(child.children or []).strip(), published=ref.url if ref else ""))


def _ref(links: list[str], href: str) -> int:
    if href not in links:
        links.append(href)
    return links.index(href) + 1


def _inline_plain(children: list[Token]) -> str:
    parts: list[str] = []
    for child in children:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(_inline_plain(child.children or []))
    return "".join(parts).strip()


def _inline_text(children: list[Token], links: list[str]) -> str:
    """Inline Markdown as plain text: links become ``label [n]`` (a bare URL stays as
    it is), images ``[image: alt]``, hard breaks newlines."""
    parts: list[str] = []
    open_links: list[tuple[str, int]] = []
    for child in children:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type == "softbreak":
            parts.append(" ")
        elif child.type == "hardbreak":
            parts.append("\n")
        elif child.type == "link_open":
            open_links.append((str(child.attrGet("href") or ""), len(parts)))
        elif child.type == "link_close" and open_links:
            href, start = open_links.pop()
            label = "".join(parts[start:]).strip()
            if label not in (href, href.removeprefix("mailto:")):
                parts.append(f" [{_ref(links, href)}]")
        elif child.type == "image":
            alt = _inline_plain(child.children or []).strip()
            parts.append(f"[image: {alt}]" if alt else "[image]")
    return "".join(parts)


def _blocks_to_text(tokens: list[Token], links: list[str]) -> str:
    """Block Markdown as plain text: paragraphs wrapped at 72 columns, lists with
    ``*``/``1.`` markers, quotes with ``> ``, code as it is, indented."""
    blocks: list[str] = []
    quote = 0
    lists: list[list] = []  # [ordered, counter] per open list
    item_marker: str | None = None
    heading = False
    for tok in tokens:
        kind = tok.type
        if kind == "blockquote_open":
            quote += 1
        elif kind == "blockquote_close":
            quote -= 1
        elif kind == "bullet_list_open":
            lists.append([False, 0])
        elif kind == "ordered_list_open":
            lists.append([True, int(tok.attrGet("start") or 1) - 1])
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif kind == "list_item_open":
            lists[-1][1] += 1
            item_marker = f"{lists[-1][1]}." if lists[-1][0] else "*"
        elif kind == "heading_open":
            heading = True
        elif kind == "hr":
            blocks.append("> " * quote + "* * *")
        elif kind in ("fence", "code_block"):
            pad = "> " * quote + "    " * (len(lists) + 1)
            blocks.append("\n".join(pad + line for line in tok.content.rstrip("\n").split("\n")))
        elif kind == "inline":
            base = "> " * quote
            depth = len(lists)
            cont = base + "    " * depth
            first = base + "    " * (depth - 1) + f"{item_marker:<3} " if item_marker and depth else cont
            item_marker = None
            text = _inline_text(tok.children or [], links)
            if heading:
                text = text.upper()
                heading = False
            lines = []
            for n, line in enumerate(text.split("\n")):
                lines.append(
                    textwrap.fill(
                        " ".join(line.split()),
                        TEXT_WIDTH,
                        initial_indent=first if n == 0 else cont,
                        subsequent_indent=cont,
                        break_long_words=False,  # a URL must stay whole to stay clickable
                        break_on_hyphens=False,
                    )
                )
            blocks.append("\n".join(lines))
    return "\n\n".join(block for block in blocks if block.strip())
