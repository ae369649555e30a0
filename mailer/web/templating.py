"""The one Jinja2 environment for web pages: the operator's template folder first, then
the shipped ``templates/``; every page extends ``web/base.html``."""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2
from fastapi.templating import Jinja2Templates

from mailer.config import Settings


@functools.lru_cache(maxsize=8)
def _templates(folders: tuple[Path, ...]) -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(folder) for folder in folders]),
        autoescape=jinja2.select_autoescape(["html", "xml"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return Jinja2Templates(env=env)


def page_templates(settings: Settings) -> Jinja2Templates:
    return _templates(tuple(settings.template_folders))
