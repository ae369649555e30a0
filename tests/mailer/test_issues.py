"""Parsing an issue file: the example, and every kind of bad input."""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mailer.core.errors import InvalidInput
from mailer.issues import MAX_ISSUE_BYTES, derive_slug, load_issue, parse_issue
from mailer.issues import ImageRef, is_local
from tests.support.example import EXAMPLE, EXAMPLE_PREHEADER, SAMPLE_SECTIONS, SAMPLE_STORIES


def issue(body: str = "Hello.\n", **meta: str) -> str:
    meta = {"subject": "Weekly news", **meta}
    lines = "".join(f"{key}: {value}\n" for key, value in meta.items())
    return f"---\n{lines}---\n{body}"


def assert_one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message and "\r" not in message, message
    assert "Traceback" not in message
    return message


def test_example_parses_into_sections_and_stories():
    source = load_issue(EXAMPLE)
    assert source.subject.startswith("Megvii Chief Scientist, ResNet Creator Dies;")
    assert source.preheader == EXAMPLE_PREHEADER
    assert source.date == dt.date(2022, 6, 14)
    assert source.slug == "china-ai-weekly-2022-06-14"
    assert source.list_name == "Recode China AI"
    titled = [section.title for section in source.sections if section.title]
    assert titled == SAMPLE_SECTIONS
    assert [story.title for story in source.stories if story.title] == SAMPLE_STORIES
    # Bold lead-ins stay bold, in the story they belong to.
    megvii = source.stories[1]
    assert "<strong>R.I.P.:</strong>" in megvii.html
    assert "https://arxiv.org/abs/1512.03385" in megvii.links
    # The Rising Startups paragraphs have no ### titles; they are kept, untitled.
    startups = source.sections[-1]
    assert "Insilico Medicine" in startups.stories[0].html and "Motovis" in startups.stories[0].text


def test_sample_text_is_all_there():
    """Every paragraph of the original sample survives (modulo markup and the
    "this https URL" placeholders that became links)."""
    source = load_issue(EXAMPLE)
    text = " ".join(" ".join(story.text.split()) for story in source.stories)
    for phrase in [
        "passed away at midnight on June 14",
        "Ho Leung Ho Lee Foundation Young Innovator Prize in 2019",
        "it has not been confirmed by other media outlets or Megvii",
        "priced above RMB200,000 (~$30,000)",
        "said Alibaba Cloud Intelligence President Jeff Zhang",
        "Intel’s infrastructure processing units",
        "without a global loss",
        "put into commercial use",
        "autonomous driving products and solutions",
    ]:
        assert phrase in text, phrase


def test_links_are_numbered_references_in_text():
    source = parse_issue(issue("### [Title](https://a.example/t)\n\nSee [this](https://b.example/x) and <https://c.example/>.\n"))
    story = source.stories[0]
    assert story.links == ("https://a.example/t", "https://b.example/x", "https://c.example/")
    assert story.title_text == "Title [1]"
    assert "this [2]" in story.text and "https://c.example/" in story.text


def test_link_numbers_run_through_the_whole_issue():
    source = parse_issue(issue("### One\n\n[a](https://a.example/) and [b](https://b.example/)\n\n"
                               "### Two\n\n[c](https://c.example/) and [a again](https://a.example/)\n"))
    one, two = source.stories
    assert one.refs == ((1, "https://a.example/"), (2, "https://b.example/"))
    assert two.refs == ((3, "https://c.example/"), (1, "https://a.example/"))  # one number, one URL
    assert "c [3]" in two.text and "a again [1]" in two.text


def test_language_and_direction():
    plain = parse_issue(issue())
    assert (plain.lang, plain.dir) == ("en", "ltr")
    assert (parse_issue(issue(lang="ar")).lang, parse_issue(issue(lang="ar")).dir) == ("ar", "rtl")
    assert parse_issue(issue(lang="he-IL")).dir == "rtl"
    assert parse_issue(issue(lang="zh-Hans", dir="auto")).dir == "auto"
    with pytest.raises(InvalidInput, match="lang 'english please' is not a language tag"):
        parse_issue(issue(lang="english please"))
    with pytest.raises(InvalidInput, match="dir 'sideways' must be one of ltr, rtl, auto"):
        parse_issue(issue(dir="sideways"))


def test_without_a_preheader_the_story_titles_are_the_summary():
    source = parse_issue(issue("Intro words that open the issue.\n\n## News\n\n### First story\n\nA.\n\n"
                               "### Second story\n\nB.\n"))
    assert source.preheader == "First story · Second story" and not source.preheader_given
    long = parse_issue(issue("".join(f"### A rather long story title number {n}\n\nText.\n\n" for n in range(10))))
    assert len(long.preheader) <= 140 and long.preheader.endswith("…")
    assert parse_issue(issue(preheader="Mine")).preheader_given


def test_a_local_image_points_where_it_was_published():
    ref = ImageRef(url="https://news.example.com/issues/assets/abc.png", width=552, height=276)
    source = parse_issue(issue("![A chart](img/chart.png) ![Remote](https://cdn.example/x.png)\n"),
                         images={"img/chart.png": ref})
    html = source.stories[0].html
    assert '<img src="https://news.example.com/issues/assets/abc.png" alt="A chart" width="552" height="276">' in html
    assert 'src="img/chart.png"' not in html and 'src="https://cdn.example/x.png"' in html
    local, remote = source.images
    assert (local.src, local.published) == ("img/chart.png", ref.url) and remote.published == ""
    assert is_local("img/chart.png") and not is_local("https://cdn.example/x.png") and not is_local("/abs.png")


def test_slug_from_file_name_then_subject():
    assert parse_issue(issue(), filename="2022-06-14 Big News.md").slug == "2022-06-14-big-news"
    assert parse_issue(issue(subject='"Café Ünïcode: news!"')).slug == "cafe-unicode-news"
    assert derive_slug("中国人工智能周报").startswith("issue-")
    assert derive_slug("中国人工智能周报") == derive_slug("中国人工智能周报")


def test_no_issue_takes_the_archive_link_to_the_newest_one():
    """/issues/latest redirects to the newest issue: an issue slugged 'latest' could never
    be read, so a derived one steps aside and a given one is refused in one line."""
    assert parse_issue(issue(), filename="latest.md").slug == "latest-issue"
    assert parse_issue(issue(subject="Latest")).slug == "latest-issue"
    with pytest.raises(InvalidInput, match="'latest' is the archive's link to the newest issue"):
        parse_issue("---\nsubject: x\nslug: latest\n---\nHello")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("subject: x\n\nHello", "no front matter"),
        ("Hello, no front matter at all", "no front matter"),
        ("---\npreheader: p\n---\nHello", "no subject"),
        ("---\nsubject: ''\n---\nHello", "no subject"),
        ("---\n---\nHello", "no subject"),
        ("---\nsubject: [unclosed\n---\nHello", "not valid YAML"),
        ("---\nsubject: a\n  bad: indent\n---\nHello", "not valid YAML"),
        ("---\n- a list\n- not a mapping\n---\nHello", "must be 'key: value' lines"),
        ("---\njust a string\n---\nHello", "must be 'key: value' lines"),
        ('---\nsubject: "Hi\\nBcc: victim@example.com"\n---\nHello', "no CR or LF"),
        ('---\nsubject: "Hi\\rBcc: victim@example.com"\n---\nHello', "no CR or LF"),
        ("---\nsubject: |\n  two\n  lines\n---\nHello", "no CR or LF"),
        ("---\nsubject: [a, b]\n---\nHello", "must be text"),
        ("---\nsubject: x\nsubjet: typo\n---\nHello", "unknown front matter key 'subjet'"),
        ("---\nsubject: x\ndate: June 14\n---\nHello", "is not a date"),
        ("---\nsubject: x\nslug: Not A Slug!\n---\nHello", "slug"),
        ("---\nsubject: x\n---\n   \n", "no content"),
    ],
)
def test_bad_input_is_one_line_invalid_input(text, expected):
    with pytest.raises(InvalidInput) as err:
        parse_issue(text)
    assert expected in assert_one_line(err)


def test_ten_megabyte_body_is_refused_before_any_parsing(monkeypatch):
    import mailer.issues

    def must_not_parse(*_a, **_k):
        raise AssertionError("a body over the limit must be refused before Markdown parsing")

    monkeypatch.setattr(mailer.issues._md, "parse", must_not_parse)
    text = issue("x" * 10_000_000)
    with pytest.raises(InvalidInput) as err:
        parse_issue(text)
    assert "10.0 MB" in assert_one_line(err) and "limit is 1 MB" in str(err.value)


def test_body_just_over_the_limit_is_refused_and_multibyte_counts_as_bytes():
    with pytest.raises(InvalidInput):
        parse_issue(issue("界" * (MAX_ISSUE_BYTES // 3 + 10)))  # 3 bytes each in UTF-8


def test_load_issue_file_problems(tmp_path):
    with pytest.raises(InvalidInput) as err:
        load_issue(tmp_path / "missing.md")
    assert "no such file" in assert_one_line(err)
    with pytest.raises(InvalidInput) as err:
        load_issue(tmp_path)
    assert "is a directory" in assert_one_line(err)
    if Path("/dev/null").exists():
        with pytest.raises(InvalidInput) as err:
            load_issue("/dev/null")
        assert "not a regular file" in assert_one_line(err)
    latin1 = tmp_path / "latin1.md"
    latin1.write_bytes(issue("Caf\xe9\n").encode("latin-1"))
    with pytest.raises(InvalidInput) as err:
        load_issue(latin1)
    assert "not UTF-8" in assert_one_line(err)
    huge = tmp_path / "huge.md"
    huge.write_bytes(issue().encode() + b"x" * 10_000_000)
    with pytest.raises(InvalidInput) as err:
        load_issue(huge)
    assert "limit is 1 MB" in assert_one_line(err)


def test_bom_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "windows.md"
    path.write_bytes("\ufeff---\r\nsubject: Windows\r\n---\r\nHello\r\n".encode())
    assert load_issue(path).subject == "Windows"


@pytest.mark.parametrize(
    "body",
    [
        "<script>alert(1)</script>\n",
        "Hello <script>alert(1)</script> inline\n",
        "### <script>alert(1)</script>\n\ntext\n",
        "[click](javascript:alert(1))\n",
        '<img src=x onerror="alert(1)">\n',
        "<iframe src='https://evil.example'></iframe>\n",
    ],
)
def test_raw_html_never_reaches_the_output(body):
    source = parse_issue(issue(body))
    html = "".join(story.title_html + story.html for story in source.stories)
    tags = Tags()
    tags.feed(html)
    assert not {"script", "iframe", "img"} & {tag for tag, _ in tags.seen}, tags.seen
    for _tag, attrs in tags.seen:
        assert not any(name.startswith("on") for name, _ in attrs)
        assert not any((value or "").lower().startswith("javascript:") for _, value in attrs)
    if body.startswith(("<script", "Hello <script")):
        assert "&lt;script&gt;" in html  # shown as text, not dropped silently


def test_unicode_survives_parsing():
    source = parse_issue(issue("## 新闻 🚀\n\n### Crème brûlée für Jürgen\n\n孙剑 😀 naïve café\n", subject="周报 🚀 Café"))
    assert source.subject == "周报 🚀 Café"
    assert source.sections[0].title == "新闻 🚀"
    assert source.stories[0].title == "Crème brûlée für Jürgen"
    assert "孙剑 😀 naïve café" in source.stories[0].html


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.seen: list[tuple[str, list]] = []

    def handle_starttag(self, tag, attrs):
        self.seen.append((tag, attrs))
