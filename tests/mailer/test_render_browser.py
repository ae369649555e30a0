"""The rendered issue in a real browser (headless Chromium through Playwright): no
horizontal scroll on a phone (375 px) or a desktop pane (800 px), readable text size.

Never downloads a browser: it uses the system Chromium. Without one the test skips,
except in CI (CI=true), where a missing browser is a failure, not a pass.
"""

from __future__ import annotations

import struct
import zlib

import pytest

from mailer.issues import load_issue, parse_issue
from mailer.render import RenderContext, preview_html, render_issue
from tests.support.example import ROOT

pytestmark = pytest.mark.browser

EXAMPLE = ROOT / "examples" / "china-ai-weekly-2022-06-14.md"
ARTIFACTS = ROOT / "test-artifacts"
CTX = RenderContext(
    from_name="Recode China AI",
    postal_address="Example Media Ltd, 1 Example Street, 00000 Example City",
    base_url="https://news.example.com",
    template_folders=[ROOT / "templates"],
)

# Every visible element that holds text of its own, with its computed font size.
TEXT_SIZES_JS = """
() => {
  const out = [];
  for (const el of document.body.querySelectorAll('*')) {
    const own = Array.from(el.childNodes).filter(n => n.nodeType === 3 && n.textContent.trim()).map(n => n.textContent.trim()).join(' ');
    if (!own) continue;
    const style = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    if (style.display === 'none' || style.visibility === 'hidden' || box.width === 0 || box.height === 0) continue;
    if (parseFloat(style.opacity) === 0 || parseFloat(style.maxHeight) === 0) continue;
    out.push([el.tagName, parseFloat(style.fontSize), own.slice(0, 60)]);
  }
  return out;
}
"""


def wide_png(width: int = 1400, height: int = 20) -> bytes:
    row = b"\x00" + b"\x80\x80\x80" * width
    raw = zlib.compress(row * height)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def open_page(browser, html: str, width: int, name: str):
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.html"
    path.write_text(html, encoding="utf-8")
    page = browser.new_page(viewport={"width": width, "height": 800})
    # Nothing leaves the machine: a rendered issue must not need the network to lay out.
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:")) else route.abort())
    page.goto(path.as_uri())
    return page


def assert_no_horizontal_scroll(page) -> None:
    scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll_width <= inner_width, f"horizontal scroll: content {scroll_width}px in a {inner_width}px window"


@pytest.mark.parametrize("width", [375, 800])
def test_example_fits_the_screen(browser, width):
    html = preview_html(render_issue(load_issue(EXAMPLE), ctx=CTX))
    page = open_page(browser, html, width, f"example-{width}")
    try:
        assert_no_horizontal_scroll(page)
        sizes = page.evaluate(TEXT_SIZES_JS)
        assert any("Megvii" in text for _tag, _size, text in sizes)
        if width == 375:
            small = [(tag, size, text) for tag, size, text in sizes if size < 14]
            assert not small, f"text under 14px on a phone: {small[:5]}"
            paragraph = page.evaluate("parseFloat(getComputedStyle(document.querySelector('p')).fontSize)")
            assert paragraph >= 14
        page.screenshot(path=str(ARTIFACTS / f"example-{width}.png"), full_page=True)
    finally:
        page.close()


def test_long_words_urls_and_wide_images_wrap_on_a_phone(browser):
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "wide-chart.png").write_bytes(wide_png())
    long_url = "https://example.com/" + "a-very-long-path-segment" * 12
    text = (
        "---\nsubject: Long things\npreheader: p\n---\n"
        f"### {'Supercalifragilistic' * 8}\n\n"
        f"Here is a URL as text: {long_url} and as a link [{long_url}]({long_url}).\n\n"
        f"{'孙剑' * 200}\n\n"
        "![wide chart](wide-chart.png)\n\n"  # next to the page in test-artifacts/
        "```\n" + "code_that_never_breaks_" * 20 + "\n```\n"
    )
    html = preview_html(render_issue(parse_issue(text), ctx=CTX))
    page = open_page(browser, html, 375, "long-things-375")
    try:
        assert_no_horizontal_scroll(page)
        natural, shown = page.evaluate(
            "(() => { const img = document.querySelector('img[alt=\"wide chart\"]');"
            " return [img.naturalWidth, img.getBoundingClientRect().width]; })()"
        )
        assert natural == 1400, "the test image did not load"
        assert 0 < shown <= 375
        page.screenshot(path=str(ARTIFACTS / "long-things-375.png"), full_page=True)
    finally:
        page.close()
