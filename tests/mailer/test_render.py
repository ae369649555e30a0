"""Rendering an issue: the example end to end, markers, warnings, overrides, Unicode."""

from __future__ import annotations

import html as htmllib
import re
import shutil

import pytest

from mailer.core.config import load_settings
from mailer.core.errors import InvalidInput
from mailer.issues import load_issue, parse_issue
from mailer.merge import MARKERS, personalise
from mailer.render import (
    GMAIL_CLIP_BYTES,
    RenderContext,
    context_from_settings,
    preview_html,
    preview_text,
    render_file,
    render_issue,
    validate_mjml,
    write_render_outputs,
)
from tests.support.example import EXAMPLE, EXAMPLE_PREHEADER, ROOT, SAMPLE_SECTIONS, SAMPLE_STORIES

SHIPPED = ROOT / "templates"



def context(**overrides) -> RenderContext:
    values = dict(
        from_name="Recode China AI",
        postal_address="Example Media Ltd, 1 Example Street, 00000 Example City",
        base_url="https://news.example.com",
        template_folders=[SHIPPED],
    )
    values.update(overrides)
    return RenderContext(**values)


@pytest.fixture(scope="module")
def rendered():
    return render_issue(load_issue(EXAMPLE), ctx=context())


def flat(text: str) -> str:
    return " ".join(htmllib.unescape(text).split())


def test_example_renders_small_and_without_warnings(rendered):
    assert rendered.slug == "china-ai-weekly-2022-06-14"
    assert rendered.html.lstrip().lower().startswith("<!doctype html>")
    assert len(rendered.html.encode("utf-8")) < GMAIL_CLIP_BYTES
    assert rendered.warnings == ()
    assert rendered.preheader == EXAMPLE_PREHEADER
    assert re.search(r'<div class="nl-preheader" style="display:none;[^"]*">' + re.escape(htmllib.escape(EXAMPLE_PREHEADER, quote=False)), rendered.html)


def test_every_section_and_story_is_in_html_and_text(rendered):
    html, text = flat(rendered.html), flat(rendered.text)
    for title in SAMPLE_SECTIONS:
        assert title in html
        assert title.upper() in text
    for title in SAMPLE_STORIES:
        assert title in html, title
        assert title in text, title
    for lead_in in ["R.I.P.:", "What’s new:", "Futuristic design:", "Pricing?", "Main features:"]:
        assert f"{lead_in}</strong>" in htmllib.unescape(rendered.html)
        assert lead_in in text
    for company in ["Insilico Medicine", "Hai Robotics", "Motovis"]:
        assert company in html and company in text


def test_every_markdown_link_is_in_the_text_part(rendered):
    urls = re.findall(r"\]\((https?://[^)\s]+)\)", EXAMPLE.read_text(encoding="utf-8"))
    assert len(urls) >= 8
    lines = rendered.text.splitlines()
    for url in urls:
        assert any(line.endswith(" " + url) and line.startswith("[") for line in lines), url
    assert "https://news.example.com/issues/china-ai-weekly-2022-06-14" in rendered.text


def test_text_part_is_wrapped_and_has_numbered_references(rendered):
    for line in rendered.text.splitlines():
        assert len(line) <= 72 or "://" in line, line
    assert "Deep Residual Learning for Image Recognition [1]" in flat(rendered.text)
    assert "Links:\n[1] https://arxiv.org/abs/1512.03385" in rendered.text


def test_markers_exactly_where_expected(rendered):
    html, text = rendered.html, rendered.text
    assert html.count(MARKERS["name"]) == 1 and "Hi __NL_NAME__," in html
    assert html.count(MARKERS["unsubscribe_url"]) == 1
    assert re.search(r'<a href="__NL_UNSUBSCRIBE_URL__"[^>]*>Unsubscribe</a>', html)
    assert html.count(MARKERS["preferences_url"]) == 1
    assert re.search(r'<a href="__NL_PREFERENCES_URL__"[^>]*>Manage preferences</a>', html)
    assert text.count(MARKERS["name"]) == 1 and "Hi __NL_NAME__," in text
    assert text.count(MARKERS["unsubscribe_url"]) == 1 and "Unsubscribe: __NL_UNSUBSCRIBE_URL__" in text
    assert text.count(MARKERS["preferences_url"]) == 1 and "preferences: __NL_PREFERENCES_URL__" in text
    # The unsubscribe link comes after the last story: the footer, where readers look.
    assert html.index(MARKERS["unsubscribe_url"]) > html.index("Motovis")
    assert text.index(MARKERS["unsubscribe_url"]) > text.index("Motovis")
    # The footer says who sends it, from where, and why.
    assert "You are receiving this because you subscribed to Recode China AI." in html
    assert "Example Media Ltd, 1 Example Street" in html and "Example Media Ltd, 1 Example Street" in text
    assert 'href="https://news.example.com/issues/china-ai-weekly-2022-06-14"' in html


def test_personalise_fills_markers_and_escapes_names(rendered):
    html = personalise(
        rendered.html,
        {"name": "<b>Bob</b>", "unsubscribe_url": "https://u.example/t?a=1&b=2", "preferences_url": "https://p.example/x"},
        html=True,
    )
    assert "<b>Bob</b>" not in html
    assert "Hi &lt;b&gt;Bob&lt;/b&gt;," in html
    assert 'href="https://u.example/t?a=1&amp;b=2"' in html
    assert "__NL_" not in html
    assert "__NL_" not in preview_html(rendered)


def test_warnings_for_a_careless_issue():
    text = (
        "---\nsubject: Careless\n---\n"
        "![](https://img.example/no-alt.png)\n\n"
        "[plain http](http://insecure.example/page) and [relative](/issues/older) "
        "and [mail us](mailto:editor@example.com)\n\n"
        + ("A long paragraph of words that goes on and on. " * 40 + "\n\n") * 90
    )
    rendered = render_issue(parse_issue(text), ctx=context())
    warnings = "\n".join(rendered.warnings)
    assert "no-alt.png" in warnings and "no alt text" in warnings
    assert "http://insecure.example/page" in warnings and "not https" in warnings
    assert "/issues/older" in warnings and "relative" in warnings
    assert "mailto" not in warnings
    assert "no preheader" in warnings
    assert "Gmail clips" in warnings
    assert all("\n" not in warning for warning in rendered.warnings)


def test_no_warnings_when_clean():
    rendered = render_issue(parse_issue("---\nsubject: Clean\npreheader: p\n---\n[ok](https://ok.example/)\n"), ctx=context())
    assert rendered.warnings == ()


def test_operator_template_override_wins(tmp_path):
    override = tmp_path / "templates"
    (override / "email").mkdir(parents=True)
    footer = (SHIPPED / "email" / "_footer.mjml.j2").read_text(encoding="utf-8")
    (override / "email" / "_footer.mjml.j2").write_text(
        footer.replace("You are receiving this", "OPERATOR FOOTER. You are receiving this"), encoding="utf-8"
    )
    rendered = render_issue(load_issue(EXAMPLE), ctx=context(template_folders=[override, SHIPPED]))
    assert "OPERATOR FOOTER" in rendered.html
    assert "Megvii Chief Scientist" in rendered.html  # the rest still comes from the shipped templates
    plain = render_issue(load_issue(EXAMPLE), ctx=context())
    assert "OPERATOR FOOTER" not in plain.html


def test_broken_operator_template_is_one_line_invalid_input(tmp_path):
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "_footer.mjml.j2").write_text("<mj-section>{% if %}</mj-section>", encoding="utf-8")
    with pytest.raises(InvalidInput) as err:
        render_issue(load_issue(EXAMPLE), ctx=context(template_folders=[tmp_path, SHIPPED]))
    assert "_footer.mjml.j2" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "email" / "_footer.mjml.j2").write_text("<mj-sectoin></mj-sectoin>", encoding="utf-8")
    with pytest.raises(InvalidInput, match="unknown tag <mj-sectoin>"):
        render_issue(load_issue(EXAMPLE), ctx=context(template_folders=[tmp_path, SHIPPED]))


def test_validate_mjml():
    validate_mjml("<mjml><mj-body><mj-section><mj-column><mj-text>ok</mj-text></mj-column></mj-section></mj-body></mjml>")
    with pytest.raises(InvalidInput):
        validate_mjml("<mjml><mj-body><mj-section>")
    with pytest.raises(InvalidInput):
        validate_mjml("not mjml at all")


def test_unicode_survives():
    text = (
        "---\nsubject: 中国AI周报 🚀 Café\npreheader: Élan — 预告 ✨\nlist: Ñandú 新闻\n---\n"
        "## 新闻 🚀\n\n### 孙剑 (Jian Sun) 😀\n\nCrème brûlée für Jürgen, 孙剑, 😀, naïve.\n"
    )
    rendered = render_issue(parse_issue(text), ctx=context())
    html, plain = htmllib.unescape(rendered.html), rendered.text
    for fragment in ["中国AI周报 🚀 Café", "Élan — 预告 ✨", "Ñandú 新闻", "新闻 🚀", "孙剑 (Jian Sun) 😀", "Crème brûlée für Jürgen, 孙剑, 😀, naïve."]:
        assert fragment in html, fragment
    for fragment in ["中国AI周报 🚀 Café", "Ñandú 新闻", "新闻 🚀", "孙剑 (Jian Sun) 😀", "Crème brûlée für Jürgen, 孙剑, 😀, naïve."]:
        assert fragment in plain, fragment
    assert rendered.subject == "中国AI周报 🚀 Café"


def test_subject_and_body_are_escaped_in_html():
    rendered = render_issue(
        parse_issue('---\nsubject: "Tom & Jerry <script>"\npreheader: "<b>pre</b>"\n---\nHello <script>x</script>\n'),
        ctx=context(),
    )
    assert "<script>" not in rendered.html and "<b>pre</b>" not in rendered.html
    assert "Tom &amp; Jerry &lt;script&gt;" in rendered.html


def test_write_render_outputs(tmp_path, rendered):
    written = write_render_outputs(rendered, tmp_path / "out", sample_message=b"Subject: x\r\n\r\nbody\r\n")
    assert [path.name for path in written] == ["index.html", "index.txt", "message.eml"]
    assert "__NL_" not in written[0].read_text(encoding="utf-8")
    assert "Megvii" in written[1].read_text(encoding="utf-8")
    assert written[2].read_bytes().startswith(b"Subject: x")
    assert [p.name for p in write_render_outputs(rendered, tmp_path / "two", sample_message=None)] == ["index.html", "index.txt"]


def test_render_file_reads_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray .env
    override = tmp_path / "tpl"
    shutil.copytree(SHIPPED / "email", override / "email")
    masthead = override / "email" / "_masthead.mjml.j2"
    masthead.write_text(masthead.read_text(encoding="utf-8").replace("View in browser", "Read online"), encoding="utf-8")
    settings = load_settings(
        base_url="https://letters.example.org/",
        postal_address="PO Box 42, Utopia",
        NEWSLETTER_FROM="Dispatch Team <dispatch@example.org>",
        templates_dir=override,
    )
    rendered = render_file(EXAMPLE, settings)
    assert "PO Box 42, Utopia" in rendered.html and "PO Box 42, Utopia" in rendered.text
    assert "Dispatch Team" in rendered.text
    assert "https://letters.example.org/issues/china-ai-weekly-2022-06-14" in rendered.html
    assert "Read online" in rendered.html


def test_preview_links_point_at_the_configured_site(rendered):
    html, text = preview_html(rendered), preview_text(rendered)
    assert 'href="https://news.example.com/u/preview"' in html and 'href="https://news.example.com/p/preview"' in html
    assert "Unsubscribe: https://news.example.com/u/preview" in text
    assert "example.com/unsubscribe/preview" not in html + text


def test_dark_mode_is_declared_and_styled(rendered):
    html = rendered.html
    assert '<meta name="color-scheme" content="light dark">' in html
    assert '<meta name="supported-color-schemes" content="light dark">' in html
    assert "@media (prefers-color-scheme: dark)" in html
    assert '<html lang="en" dir="ltr"' in html


def test_the_hidden_preheader_has_no_colour_of_its_own(rendered):
    hidden = re.search(r'<div class="nl-preheader" style="([^"]*)"', rendered.html).group(1)
    assert "display:none" in hidden and "color" not in hidden  # white-on-white is "low contrast" to filters
    assert "mj-preview" not in rendered.mjml


def test_a_preheader_that_repeats_the_opening_is_a_warning():
    text = "---\nsubject: s\npreheader: Weekly news from June 6\n---\nWeekly news from June 6 to June 12. More.\n"
    warnings = render_issue(parse_issue(text), ctx=context()).warnings
    assert any("the preheader repeats the first words of the issue" in w for w in warnings)
    summary = render_issue(parse_issue("---\nsubject: s\n---\nIntro.\n\n### A story\n\nText.\n"), ctx=context())
    assert summary.preheader == "A story" and summary.warnings == ()


def test_right_to_left_issues_render_right_to_left():
    rendered = render_issue(parse_issue("---\nsubject: نشرة\nlang: ar\n---\n### خبر\n\nمرحبا بكم.\n"), ctx=context())
    assert '<html lang="ar" dir="rtl"' in rendered.html
    assert "direction:rtl" in rendered.html and "text-align:right" in rendered.html


def test_the_text_part_has_one_heading_style_and_issue_wide_link_numbers(rendered):
    text = rendered.text
    assert "###" not in text
    lines = text.splitlines()
    stories = re.findall(r"\n\n(.+(?:\n.+)*)\n(-+)\n", text)  # setext: the title, then a "-" underline
    for title, underline in stories:
        assert len(underline) == max(len(line) for line in title.splitlines()), title
    assert [re.sub(r" \[\d+\]$", "", " ".join(title.split())) for title, _ in stories] == SAMPLE_STORIES
    for section in SAMPLE_SECTIONS:
        at = lines.index(section.upper())
        assert lines[at + 1] == "=" * len(section)
    numbers = [int(n) for n in re.findall(r"^\[(\d+)\] ", text, re.M)]
    assert numbers == sorted(set(numbers)) and numbers[0] == 1  # every list continues the last one
    assert numbers[-1] == len(set(re.findall(r"^\[\d+\] (\S+)", text, re.M)))


def test_alt_text_is_a_warning_and_an_error_in_strict_mode():
    text = "---\nsubject: s\npreheader: p\n---\n![](https://cdn.example/chart.png)\n"
    warnings = render_issue(parse_issue(text), ctx=context()).warnings
    assert warnings == ("image 'https://cdn.example/chart.png' has no alt text: write what it shows in ![...]"
                        " (screen readers read it, and many readers block images)",)
    with pytest.raises(InvalidInput) as err:
        render_issue(parse_issue(text), ctx=context(strict=True))
    assert "chart.png" in str(err.value) and "has no alt text" in str(err.value) and "strict mode" in str(err.value)
    clean = "---\nsubject: s\npreheader: p\n---\n![A chart](https://cdn.example/chart.png)\n"
    assert render_issue(parse_issue(clean), ctx=context(strict=True)).warnings == ()


def test_strict_mode_follows_the_setting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert context_from_settings(load_settings(strict_render=True)).strict
    assert not context_from_settings(load_settings()).strict
    assert not context_from_settings(load_settings(strict_render=True), strict=False).strict


def test_an_unpublished_local_image_says_how_to_publish_it():
    text = "---\nsubject: s\npreheader: p\n---\n![A chart](chart.png)\n"
    (warning,) = render_issue(parse_issue(text), ctx=context()).warnings
    assert warning.startswith("image 'chart.png' is a file next to the issue") and "issue create FILE" in warning
