"""``newsletter issue render|create|update|test`` as an editor runs them (a real process,
a real database): previews point at the configured site, the sample message carries
Gmail's Feedback-ID, local images are read next to the issue and published with it, a
missing image or missing alt text is one line naming the file, strict mode refuses."""

from __future__ import annotations

import email
import email.policy
import io
import re

import pytest
from PIL import Image
from sqlalchemy import select

from mailer.core.db import transaction
from mailer.message import feedback_sender_id
from mailer.models import Asset, Issue, IssueImage
from tests.support.cli import assert_one_line_error, cli
from tests.support.example import EXAMPLE

pytestmark = pytest.mark.timeout(120)

PICTURES = """---
subject: Pictures
preheader: A chart and a photo
slug: pictures
---

### The chart

![A bar chart of the week](charts/week.png)

### The photo

![The lab at night]({photo})
"""


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 90)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def issue_folder(tmp_path):
    folder = tmp_path / "issue"
    (folder / "charts").mkdir(parents=True)
    (folder / "charts" / "week.png").write_bytes(png((2400, 800)))
    (folder / "lab.png").write_bytes(png((400, 300)))
    (folder / "pictures.md").write_text(PICTURES.format(photo="lab.png"), encoding="utf-8")
    return folder


def test_render_previews_with_the_configured_site_and_gmails_feedback_id(settings, tmp_path):
    result = cli("issue", "render", EXAMPLE, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # the example has nothing to warn about
    html = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    text = (tmp_path / "out" / "index.txt").read_text(encoding="utf-8")
    assert 'href="https://news.example.com/u/preview"' in html and 'href="https://news.example.com/p/preview"' in html
    assert "Manage your preferences: https://news.example.com/p/preview" in text
    assert "https://example.com/" not in html + text
    message = email.message_from_bytes((tmp_path / "out" / "message.eml").read_bytes(), policy=email.policy.default)
    *fields, sender_id = message["Feedback-ID"].split(":")
    assert fields == ["preview", "0", "newsletter"] and sender_id == feedback_sender_id("example.com")
    assert 5 <= len(sender_id) <= 15


def test_render_reads_local_images_next_to_the_issue(settings, issue_folder, tmp_path):
    out = tmp_path / "out"
    result = cli("issue", "render", issue_folder / "pictures.md", "--out", out)
    assert result.returncode == 0, result.stderr
    assets = sorted(p.name for p in (out / "assets").iterdir())
    assert len(assets) == 2 and all(re.fullmatch(r"[0-9a-f]{64}\.png", name) for name in assets)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert sorted(re.findall(r'<img src="assets/([^"]+)"', html)) == assets  # the preview shows the copies
    sizes = {name: Image.open(out / "assets" / name).size for name in assets}
    assert sorted(sizes.values()) == [(400, 300), (1200, 400)]  # the chart was scaled down
    message = email.message_from_bytes((out / "message.eml").read_bytes(), policy=email.policy.default)
    mailed = message.get_body(("html",)).get_content()
    assert sorted(re.findall(r'src="https://news\.example\.com/issues/assets/([^"]+)"', mailed)) == assets
    assert 'width="552" height="184"' in mailed and 'width="400" height="300"' in mailed


def test_a_missing_image_is_one_line_naming_the_file(settings, issue_folder, tmp_path):
    (issue_folder / "pictures.md").write_text(PICTURES.format(photo="lab-typo.png"), encoding="utf-8")
    for command in (("issue", "render", issue_folder / "pictures.md", "--out", tmp_path / "out"),
                    ("issue", "create", issue_folder / "pictures.md")):
        assert_one_line_error(cli(*command), "image 'lab-typo.png': no such file next to the issue",
                              str(issue_folder / "lab-typo.png"))


def test_missing_alt_text_warns_and_strict_mode_refuses(settings, issue_folder, tmp_path, monkeypatch, engine):
    (issue_folder / "pictures.md").write_text(PICTURES.format(photo="lab.png").replace("The lab at night", ""),
                                              encoding="utf-8")
    lenient = cli("issue", "render", issue_folder / "pictures.md", "--out", tmp_path / "out")
    assert lenient.returncode == 0
    assert lenient.stderr.strip() == ("warning: image 'lab.png' has no alt text: write what it shows in ![...]"
                                      " (screen readers read it, and many readers block images)")
    strict = cli("issue", "render", issue_folder / "pictures.md", "--out", tmp_path / "strict", "--strict")
    assert_one_line_error(strict, "image 'lab.png' has no alt text", "strict mode")
    assert not (tmp_path / "strict").exists()
    monkeypatch.setenv("NEWSLETTER_STRICT_RENDER", "true")
    assert_one_line_error(cli("issue", "create", issue_folder / "pictures.md"), "image 'lab.png' has no alt text")
    with transaction(engine) as s:
        assert s.scalar(select(Issue.id)) is None and s.scalar(select(Asset.id)) is None  # nothing stored


def test_create_publishes_the_images_and_the_dashboard_text_keeps_them(settings, issue_folder, engine, api):
    result = cli("issue", "create", issue_folder / "pictures.md")
    assert result.returncode == 0, result.stderr
    with transaction(engine) as s:
        issue = s.scalar(select(Issue).where(Issue.slug == "pictures"))
        names = dict(s.execute(select(IssueImage.name, Asset.digest).join(Asset)
                               .where(IssueImage.issue_id == issue.id)).all())
        issue_id, html = issue.id, issue.html
    assert set(names) == {"charts/week.png", "lab.png"}
    for digest in names.values():
        assert f"https://news.example.com/issues/assets/{digest}.png" in html
        assert api.get(f"/issues/assets/{digest}.png").headers["content-type"] == "image/png"
    # Edited as text (the API, the dashboard): the images it was saved with are still found by name.
    source = PICTURES.format(photo="lab.png").replace("### The photo", "### The photo, retitled")
    updated = api.put(f"/api/admin/issues/{issue_id}", json={"source": source})
    assert updated.status_code == 200, updated.text
    with transaction(engine) as s:
        assert s.get(Issue, issue_id).html.count("/issues/assets/") == 2
    # A new local name cannot come from text alone: one line saying what to do.
    bad = api.put(f"/api/admin/issues/{issue_id}", json={"source": source.replace("lab.png", "new.png")})
    assert bad.status_code == 400
    assert bad.json()["detail"].startswith("image 'new.png': no such file was published with this issue")
    created = api.post("/api/admin/issues", json={"source": source.replace("slug: pictures", "slug: other")})
    assert created.status_code == 400 and "image 'charts/week.png'" in created.json()["detail"]
    # The file again, with a changed image: a new asset, the issue points at it.
    (issue_folder / "lab.png").write_bytes(png((401, 300)))
    assert cli("issue", "update", issue_id, issue_folder / "pictures.md").returncode == 0
    with transaction(engine) as s:
        lab = s.scalar(select(Asset).join(IssueImage).where(IssueImage.issue_id == issue_id,
                                                            IssueImage.name == "lab.png"))
        assert lab.width == 401 and lab.digest != names["lab.png"]


def test_a_test_send_of_a_file_publishes_its_images_first(settings, issue_folder, engine):
    result = cli("issue", "test", issue_folder / "pictures.md", "--to", "editor@example.com")
    assert result.returncode == 0, result.stderr
    (sent,) = settings.outbox_dir.glob("*.eml")
    message = email.message_from_bytes(sent.read_bytes(), policy=email.policy.default)
    mailed = message.get_body(("html",)).get_content()
    digests = re.findall(r'src="https://news\.example\.com/issues/assets/([0-9a-f]{64})\.png"', mailed)
    with transaction(engine) as s:
        assert sorted(digests) == sorted(s.scalars(select(Asset.digest)).all())  # served before anyone is mailed
        assert s.scalar(select(Issue.id)) is None  # a test saves no issue
