"""What a reader's browser sees, measured: axe-core's accessibility rules (the npm
package, injected into the page through Playwright), contrast ratios computed from the
rendered styles (WCAG 2.x relative luminance), horizontal scroll, and screenshots at
the widths and colour schemes we promise."""

from __future__ import annotations

from pathlib import Path

from tests.support.browser import ARTIFACTS
from tests.support.services import need

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
WIDTHS = (375, 800)
SCHEMES = ("light", "dark")

# The colours an element's text is drawn in and drawn on: its own colour, and the first
# ancestor's background that is not transparent (the page canvas at the end).
CONTRAST_JS = """
(selector) => {
  const el = document.querySelector(selector);
  if (!el) return null;
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const lum = ({r, g, b}) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const background = (node) => { for (let n = node; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor); if (c && c.a > 0) return c; }
    const canvas = parse(getComputedStyle(document.documentElement).backgroundColor);
    return canvas && canvas.a > 0 ? canvas : (matchMedia('(prefers-color-scheme: dark)').matches &&
      getComputedStyle(document.documentElement).colorScheme.includes('dark') ? {r: 18, g: 18, b: 18, a: 1} : {r: 255, g: 255, b: 255, a: 1}); };
  const fg = parse(getComputedStyle(el).color), bg = background(el);
  const [l1, l2] = [lum(fg), lum(bg)].sort((a, b) => b - a);
  return {ratio: (l1 + 0.05) / (l2 + 0.05), color: getComputedStyle(el).color, background: bg, backgroundLuminance: lum(bg)};
}
"""


def axe_path() -> Path:
    if not AXE.exists():
        need(f"axe-core is not installed at {AXE} (npm ci)")
    return AXE


def serious_violations(page) -> list[str]:
    """axe-core's serious and critical findings on ``page``, one line each."""
    page.add_script_tag(path=str(axe_path()))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def contrast(page, selector: str) -> dict:
    found = page.evaluate(CONTRAST_JS, selector)
    assert found is not None, f"nothing matches {selector!r}"
    return found


def horizontal_overflow(page) -> int:
    """How many pixels the content is wider than the window (0: no horizontal scroll)."""
    scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    return max(0, scroll_width - inner_width)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
