"""Click and open tracking as pure code (``mailer.tracking``) and its tokens
(``mailer.core.signing``): which links are tracked, the rewrite, the pixel, and every
way a token can be wrong."""

from __future__ import annotations

import pytest

from mailer import tracking
from mailer.core import signing
from mailer.merge import MARKERS

BASE = "https://news.example.com"
HTML = (
    '<html><body><p><a href="https://example.com/a?x=1&amp;y=2">A</a> '
    '<a href="https://example.com/b">B</a> <a href="https://example.com/a?x=1&amp;y=2">A again</a> '
    f'<a href="{BASE}/issues/weekly-1">In your browser</a> <a href="mailto:ed@example.com">Write</a> '
    '<a href="#top">Top</a> <a href="ftp://example.com/f">F</a> <a class="x" href=\'http://example.org/c\'>C</a> '
    f'<a href="{MARKERS["unsubscribe_url"]}">Unsubscribe</a> <a href="{MARKERS["preferences_url"]}">Preferences</a>'
    "</p></body></html>"
)


def test_content_links_are_the_http_links_that_are_not_ours_each_once_in_order():
    assert tracking.content_links(HTML, BASE) == ["https://example.com/a?x=1&y=2", "https://example.com/b",
                                                  "http://example.org/c"]


def test_rewrite_points_only_content_links_at_the_redirect():
    links = tracking.content_links(HTML, BASE)
    out = tracking.rewrite_links(HTML, links, BASE)
    assert out.count(f'href="{BASE}/r/{tracking.click_marker(0)}"') == 2
    assert f'href="{BASE}/r/{tracking.click_marker(1)}"' in out
    assert f"href='{BASE}/r/{tracking.click_marker(2)}'" in out
    for kept in (f"{BASE}/issues/weekly-1", "mailto:ed@example.com", "#top", "ftp://example.com/f",
                 MARKERS["unsubscribe_url"], MARKERS["preferences_url"]):
        assert f'href="{kept}"' in out
    assert "example.com/a" not in out and "example.com/b" not in out


def test_a_url_with_a_line_break_or_space_is_not_tracked():
    assert tracking.content_links('<a href="https://example.com/a&#10;Location: x">x</a>', BASE) == []


def test_the_pixel_goes_at_the_end_of_the_body():
    out = tracking.add_pixel(HTML, BASE)
    assert out.endswith(f'<img src="{BASE}/o/{tracking.OPEN_MARKER}" width="1" height="1" alt="" '
                        'style="display:block;width:1px;height:1px;border:0" aria-hidden="true"></body></html>')


def test_click_tokens_name_campaign_delivery_and_link():
    tokens = signing.click_tokens("s3cret", 7, 123456, 3)
    assert len(set(tokens)) == 3 and all(len(t) == 55 and t.isalnum() and t == t.lower() for t in tokens)
    assert [signing.read_click_token(("s3cret",), t) for t in tokens] == [(7, 123456, i) for i in range(3)]
    # Rotated keys: a token signed with the previous key still reads.
    assert signing.read_click_token(("new", "s3cret"), tokens[2]) == (7, 123456, 2)
    assert "123456" not in tokens[0]


def _flip(token: str, at: int) -> str:
    return token[:at] + ("b" if token[at] != "b" else "c") + token[at + 1:]


@pytest.mark.parametrize("bad", [
    pytest.param(lambda t, o: _flip(t, 3), id="altered-seal"),
    pytest.param(lambda t, o: _flip(t, 50), id="altered-link"),
    pytest.param(lambda t, o: t[:-1], id="truncated"),
    pytest.param(lambda t, o: t[:39], id="seal-only"),
    pytest.param(lambda t, o: t + "a", id="longer"),
    pytest.param(lambda t, o: signing.click_tokens("another key", 7, 123456, 1)[0], id="foreign-key"),
    pytest.param(lambda t, o: t[:39] + o[39:], id="link-of-another-message"),
    pytest.param(lambda t, o: "", id="empty"),
    pytest.param(lambda t, o: "é" * 55, id="not-ascii"),
])
def test_every_wrong_click_token_is_refused(bad):
    token = signing.click_tokens("s3cret", 7, 123456, 2)[0]
    other = signing.click_tokens("s3cret", 7, 999, 2)[1]
    with pytest.raises(signing.InvalidToken):
        signing.read_click_token(("s3cret",), bad(token, other))


def test_open_tokens():
    token = signing.open_token("s3cret", 7, 42)
    assert signing.read_open_token(("s3cret",), token) == (7, 42)
    with pytest.raises(signing.InvalidToken):
        signing.read_open_token(("s3cret",), _flip(token, 5))
    with pytest.raises(signing.InvalidToken):  # a click token is no open token
        signing.read_open_token(("s3cret",), signing.click_tokens("s3cret", 7, 42, 1)[0][:39])
