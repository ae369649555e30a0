"""How long rendering takes, and what it costs per recipient.

    .venv/bin/python bench/render.py [-n 20]

A full render (Markdown, Jinja2, MJML, premailer) runs once per issue; personalising
(``mailer.merge.personalise``, a few ``str.replace``) runs once per recipient. The ratio
is why the expensive steps must never move into the per-recipient path.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.issues import load_issue  # noqa: E402
from mailer.merge import personalise  # noqa: E402
from mailer.render import RenderContext, render_issue  # noqa: E402

EXAMPLE = ROOT / "examples" / "china-ai-weekly-2022-06-14.md"


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="full renders to time (median)")
    parser.add_argument("--recipients", type=int, default=2000, help="personalisations to time (median of 5 runs)")
    args = parser.parse_args()

    ctx = RenderContext(
        from_name="Recode China AI",
        postal_address="Example Media Ltd, 1 Example Street, 00000 Example City",
        base_url="https://news.example.com",
        template_folders=[ROOT / "templates"],
    )
    render_issue(load_issue(EXAMPLE), ctx=ctx)  # warm-up: imports, template compilation
    full = median_seconds(lambda: render_issue(load_issue(EXAMPLE), ctx=ctx), args.n)
    rendered = render_issue(load_issue(EXAMPLE), ctx=ctx)

    values = [
        {
            "name": f"Reader {i}",
            "email": f"reader{i}@example.com",
            "unsubscribe_url": f"https://news.example.com/u/{i:08d}-Zm9vYmFyYmF6cXV4",
            "preferences_url": f"https://news.example.com/p/{i:08d}-Zm9vYmFyYmF6cXV4",
        }
        for i in range(args.recipients)
    ]

    def personalise_all() -> None:
        for v in values:
            personalise(rendered.html, v, html=True)
            personalise(rendered.text, v, html=False)

    per_recipient = median_seconds(personalise_all, 5) / args.recipients

    print(f"issue: {EXAMPLE.name}: HTML {len(rendered.html.encode()) / 1024:.1f} KB, text {len(rendered.text.encode()) / 1024:.1f} KB")
    print(f"full render (median of {args.n}):            {full * 1000:8.2f} ms")
    print(f"personalise HTML + text, per recipient:     {per_recipient * 1e6:8.1f} µs")
    print(f"ratio (full render / per recipient):        {full / per_recipient:8.0f}x")


if __name__ == "__main__":
    main()
