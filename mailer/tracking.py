"""Click and open tracking, as pure functions over a rendered issue's HTML.

Which links are tracked: every ``<a href>`` to an ``http(s)`` address that is not our own
(unsubscribe, preferences and archive pages live on ``NEWSLETTER_BASE_URL`` and are never
rewritten; ``mailto:`` and in-page anchors neither). Their targets, in order of first
appearance and each once, are the issue's ``links``: stored with the rendered issue, so a
click URL carries only a signed token (``/r/<token>``) and never a target.

A campaign whose list tracks clicks rewrites its issue's HTML once: each tracked href
becomes ``{base}/r/`` and a marker for that link's per-recipient token, which the message
template fills like any other merge field (``mailer.message``). The open pixel is one
more marker, at the end of the HTML. The plain-text part is never rewritten.
"""

from __future__ import annotations

import html as _html
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from mailer.merge import MARKERS

REDIRECT_PATH = "/r/"
PIXEL_PATH = "/o/"
OPEN_MARKER = "__NL_OPEN__"
# A link's marker: upper-case letters, digits and underscores survive MJML's output,
# HTML attributes and quoted-printable encoding unchanged, like the merge fields'.
_CLICK_MARKER = "__NL_CLICK_{}__"
CLICK_MARKER_RE = re.compile(r"__NL_CLICK_(\d{1,4})__")
MAX_LINKS = 1000
# premailer writes every attribute double-quoted; single quotes are read as well.
_HREF = re.compile(r"""(<a\b[^>]*?\shref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f]")
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def click_marker(index: int) -> str:
    return _CLICK_MARKER.format(index)


def _ours(url: str, base_url: str) -> bool:
    return any(m in url for m in MARKERS.values()) or url.rstrip("/") == base_url or url.startswith(base_url + "/")


def is_tracked(url: str, base_url: str) -> bool:
    """A content link: http(s), with a host, not one of our own pages. A URL with a
    space or a control character in it is left alone: it could not be a Location."""
    if _UNSAFE.search(url):
        return False
    parts = urlsplit(url)
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc) and not _ours(url, base_url.rstrip("/"))


def content_links(html: str, base_url: str) -> list[str]:
    """The targets of the tracked links in ``html``, each once, in order of first
    appearance: what a click token's link index counts."""
    found: dict[str, None] = {}
    for match in _HREF.finditer(html):
        url = _html.unescape(match.group(3)).strip()
        if is_tracked(url, base_url):
            found.setdefault(url, None)
    return list(found)[:MAX_LINKS]


def rewrite_links(html: str, links: Sequence[str], base_url: str) -> str:
    """``html`` with each href to one of ``links`` pointing at ``{base}/r/`` and the
    marker of that link's token; every other href as it was."""
    index = {url: i for i, url in enumerate(links)}
    prefix = base_url.rstrip("/") + REDIRECT_PATH

    def swap(match: re.Match) -> str:
        i = index.get(_html.unescape(match.group(3)).strip())
        if i is None:
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}{prefix}{click_marker(i)}{match.group(2)}"

    return _HREF.sub(swap, html)


def add_pixel(html: str, base_url: str) -> str:
    """A 1x1 image at the very end of the HTML body: ``{base}/o/`` and the open marker."""
    pixel = (f'<img src="{base_url.rstrip("/")}{PIXEL_PATH}{OPEN_MARKER}" width="1" height="1" alt="" '
             'style="display:block;width:1px;height:1px;border:0" aria-hidden="true">')
    ends = list(_BODY_END.finditer(html))
    if not ends:
        return html + pixel
    at = ends[-1].start()
    return html[:at] + pixel + html[at:]
