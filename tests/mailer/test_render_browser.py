"""The rendered issue in a real browser (headless Chromium through Playwright), as a
reader sees it on a phone (375 px) and a desktop pane (800 px), in the light and the
dark colour scheme: no horizontal scroll, readable text size, a masthead whose title
keeps its contrast (computed from the rendered styles), links that look like links,
and no serious or critical axe-core finding. Screenshots go to test-artifacts/.

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
from tests.support.reader import SCHEMES, WIDTHS, contrast, horizontal_overflow, screenshot, serious_violations

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


def open_page(browser, html: str, width: int, name: str, scheme: str = "light"):
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.html"
    path.write_text(html, encoding="utf-8")
    page = browser.new_page(viewport={"width": width, "height": 800})
    page.emulate_media(color_scheme=scheme)
    # Nothing leaves the machine: a rendered issue must not need the network to lay out.
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:")) else route.abort())
    page.goto(path.as_uri())
    return page


def assert_no_horizontal_scroll(page) -> None:
    scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll_width <= inner_width, f"horizontal scroll: content {scroll_width}px in a {inner_width}px window"


@pytest.fixture(scope="module")
def example_html() -> str:
    return preview_html(render_issue(load_issue(EXAMPLE), ctx=CTX))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", WIDTHS)
def test_example_fits_the_screen_in_both_schemes(browser, example_html, width, scheme):
    page = open_page(browser, example_html, width, f"example-{width}-{scheme}", scheme)
    try:
        screenshot(page, f"example-{width}-{scheme}")
        assert horizontal_overflow(page) == 0, "horizontal scroll"
        sizes = page.evaluate(TEXT_SIZES_JS)
        assert any("Megvii" in text for _tag, _size, text in sizes)
        if width == 375:
            small = [(tag, size, text) for tag, size, text in sizes if size < 14]
            assert not small, f"text under 14px on a phone: {small[:5]}"
            paragraph = page.evaluate("parseFloat(getComputedStyle(document.querySelector('.nl-story p')).fontSize)")
            assert paragraph >= 14
        # WCAG AA: 4.5:1 for text, the masthead's title first.
        title = contrast(page, ".nl-masthead-title div")
        assert title["ratio"] >= 4.5, title
        for selector in (".nl-story p", ".nl-story h3", ".nl-story h3 a", ".nl-section-title", ".nl-footer p",
                         ".nl-footer a", ".nl-masthead-line div"):
            found = contrast(page, selector)
            assert found["ratio"] >= 4.5, (selector, found)
        page_bg = contrast(page, ".nl-body")["background"]
        masthead = contrast(page, ".nl-masthead-title div")["background"]
        if scheme == "dark":
            # The dark scheme is ours, not the light page left as it is: a dark page and
            # a masthead that stands out from it instead of melting into it.
            assert contrast(page, ".nl-story p")["backgroundLuminance"] < 0.05
            assert masthead != page_bg
            assert _ratio(page, masthead, page_bg) >= 1.5
    finally:
        page.close()


def _ratio(page, a: dict, b: dict) -> float:
    return page.evaluate("""([a, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
        const lum = (c) => 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
        const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); }""", [a, b])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_email_has_no_serious_accessibility_violation(browser, example_html, scheme):
    page = open_page(browser, example_html, 800, f"example-axe-{scheme}", scheme)
    try:
        assert serious_violations(page) == []
    finally:
        page.close()


def test_axe_catches_what_it_is_run_for(browser):
    # The check above is only worth something if axe-core really runs and reports.
    page = open_page(browser, '<!doctype html><html><body><img src="x.png"><button></button></body></html>', 800,
                     "axe-self-test")
    try:
        found = "\n".join(serious_violations(page))
        assert "image-alt (critical)" in found and "button-name (critical)" in found, found
    finally:
        page.close()


def test_a_linked_story_title_looks_like_a_link_not_a_heading(browser, example_html):
    page = open_page(browser, example_html, 800, "example-links")
    try:
        styles = page.evaluate("""() => {
            const linked = [...document.querySelectorAll('.nl-story h3 a')].find(a => a.textContent.includes('Vision GNN'));
            const plain = [...document.querySelectorAll('.nl-story h3')].find(h => !h.querySelector('a'));
            const body = document.querySelector('.nl-story p a');
            const s = (e) => getComputedStyle(e);
            return {linked: [s(linked).color, s(linked).textDecorationLine], heading: s(plain).color,
                    body: [s(body).color, s(body).textDecorationLine]}; }""")
        assert styles["linked"][1] == "underline" and styles["body"][1] == "underline", styles
        assert styles["linked"][0] != styles["heading"], styles
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
