"""The Jinja2 environment of the web pages (``mailer.core.templates``, the operator's
folder first); every page extends ``web/base.html``."""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi.templating import Jinja2Templates

from mailer.core.config import Settings
from mailer.core.templates import environment


@functools.lru_cache(maxsize=8)
def _templates(folders: tuple[Path, ...]) -> Jinja2Templates:
    return Jinja2Templates(env=environment(folders, strict=False))


def page_templates(settings: Settings) -> Jinja2Templates:
    return _templates(tuple(settings.template_folders))
