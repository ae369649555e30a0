"""The Jinja2 environments, built in one place over the template folders (the
operator's override folder first, then the shipped ``templates/``: the first folder
that has a template wins)."""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2


def _autoescape(name: str | None) -> bool:
    # Plain-text templates (*.txt.j2) are not HTML; everything else we ship is.
    return not (name or "").endswith(".txt.j2")


@functools.lru_cache(maxsize=16)
def environment(folders: tuple[Path, ...], *, strict: bool = True) -> jinja2.Environment:
    """``strict``: a missing value is an error (emails, where a blank would go out to
    every subscriber); web pages leave optional values out instead."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(folder) for folder in folders]),
        autoescape=_autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined if strict else jinja2.Undefined,
    )
