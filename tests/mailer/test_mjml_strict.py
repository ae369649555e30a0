"""The MJML our templates emit, checked by the reference renderer (npm ``mjml``) in
strict validation mode. mjml-python, which renders in production, does not validate
(it accepts unknown tags and attributes silently), so this is where a template mistake
that some mail client would pay for is caught.

Needs ``node_modules/.bin/mjml`` (``npm ci --no-audit --no-fund`` at the repo root).
Without it the test skips, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mailer.issues import load_issue, parse_issue
from mailer.render import RenderContext, render_issue
from tests.support.example import ROOT

EXAMPLE = ROOT / "examples" / "china-ai-weekly-2022-06-14.md"
MJML_CLI = ROOT / "node_modules" / ".bin" / "mjml"
CTX = RenderContext(
    from_name="Recode China AI",
    postal_address="Example Media Ltd, 1 Example Street, 00000 Example City",
    base_url="https://news.example.com",
    template_folders=[ROOT / "templates"],
)
EVERYTHING = """---
subject: "Everything: 周报 🚀 & <friends>"
preheader: "Élan — 预告 ✨"
---
Intro with **bold**, *em*, `code` and a [link](https://example.com/?a=1&b=2).

## Section

### [A linked story](https://example.com/story)

> A quote with a line  
> break.

1. one
2. two
   - nested

```
code block <tag> & more
```

![An image](https://example.com/a.png)

#### A small heading

* * *

Trailing paragraph with <script>alert(1)</script>.
"""


def strict_check(mjml_source: str, tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    path = tmp_path / f"{name}.mjml"
    path.write_text(mjml_source, encoding="utf-8")
    return subprocess.run(
        [str(MJML_CLI), "-s", "--config.validationLevel=strict", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.fixture(scope="module", autouse=True)
def mjml_cli():
    if not MJML_CLI.exists():
        message = f"{MJML_CLI.relative_to(ROOT)} is missing: run `npm ci --no-audit --no-fund` at the repo root"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def test_validator_refuses_bad_mjml(tmp_path):
    """The control: strict mode does fail on an unknown tag and a bad attribute."""
    bad = "<mjml><mj-body><mj-section><mj-column><mj-txt>x</mj-txt><mj-text colour=\"red\">y</mj-text></mj-column></mj-section></mj-body></mjml>"
    result = strict_check(bad, tmp_path, "bad")
    assert result.returncode != 0
    assert "mj-txt" in result.stdout + result.stderr


def test_example_mjml_is_strictly_valid(tmp_path):
    rendered = render_issue(load_issue(EXAMPLE), ctx=CTX)
    result = strict_check(rendered.mjml, tmp_path, "example")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Megvii Chief Scientist" in result.stdout


def test_every_markdown_construct_gives_strictly_valid_mjml(tmp_path):
    rendered = render_issue(parse_issue(EVERYTHING), ctx=CTX)
    result = strict_check(rendered.mjml, tmp_path, "everything")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
