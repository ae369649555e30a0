"""Per-recipient merge fields.

An issue is rendered once (Markdown, MJML and premailer are the expensive steps) with a
marker where each per-recipient value goes. Markers are upper-case letters and
underscores only, so they survive MJML, premailer, HTML serialisation, URL attributes
and quoted-printable encoding unchanged, and no editor writes them by accident.
"""

from __future__ import annotations

import html as _html
from collections.abc import Mapping

FIELDS = ("name", "email", "unsubscribe_url", "preferences_url")
MARKERS = {field: f"__NL_{field.upper()}__" for field in FIELDS}


# "Hi there," rather than "Hi ," for a subscriber who gave no name.
NAME_FALLBACK = "there"


def marker(field: str) -> str:
    return MARKERS[field]


def personalise(body: str, values: Mapping[str, str], *, html: bool) -> str:
    """Fill every marker in ``body`` with ``values`` (missing ones become empty).

    In HTML the values are escaped, so a subscriber's name can never inject markup.
    This is the simple path (previews, test sends, web pages); the send path uses
    ``mailer.message`` which works on the encoded MIME bytes instead.
    """
    for field, mark in MARKERS.items():
        if mark in body:
            value = values.get(field, "") or (NAME_FALLBACK if field == "name" else "")
            body = body.replace(mark, _html.escape(value, quote=True) if html else value)
    return body
