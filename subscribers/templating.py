"""Jinja2 environments over ``settings.template_folders`` (operator overrides first):
``web/`` for the subscriber pages, ``email/`` for the confirmation mail."""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2
from fastapi.templating import Jinja2Templates

from mailer.web.templating import page_templates

from mailer.config import get_settings


@functools.lru_cache(maxsize=8)
def _environment(folders: tuple[Path, ...], autoescape: bool) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(f) for f in folders]),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _folders() -> tuple[Path, ...]:
    return tuple(get_settings().template_folders)


def web_templates() -> Jinja2Templates:
    return page_templates(get_settings())


def render_email(name: str, context: dict) -> str:
    autoescape = name.endswith(".html.j2")
    return _environment(_folders(), autoescape).get_template(f"email/{name}").render(**context)
