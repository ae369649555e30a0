"""An issue's local images (pure code, real files and Pillow): read next to the issue,
checked, scaled down, converted, content-hashed; every problem names the file."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from mailer.core.errors import InvalidInput
from mailer.images import DISPLAY_WIDTH, MAX_WIDTH, asset_url, local_names, prepare_image, read_image
from mailer.issues import parse_issue


def image_bytes(size: tuple[int, int], fmt: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(buffer, fmt, **save)
    return buffer.getvalue()


def test_a_small_png_is_published_as_it_is_under_its_hash(tmp_path):
    data = image_bytes((300, 200))
    (tmp_path / "chart.png").write_bytes(data)
    image = read_image(tmp_path, "chart.png")
    assert image.data == data and image.digest == hashlib.sha256(data).hexdigest()
    assert (image.media_type, image.width, image.height) == ("image/png", 300, 200)
    ref = image.ref("https://news.example.com/")
    assert ref.url == f"https://news.example.com/issues/assets/{image.digest}.png"
    assert (ref.width, ref.height) == (300, 200)


def test_an_oversized_image_is_scaled_down_and_shown_at_the_column_width(tmp_path):
    (tmp_path / "wide.jpg").write_bytes(image_bytes((3000, 1500), "JPEG"))
    image = read_image(tmp_path, "wide.jpg")
    assert (image.width, image.height) == (MAX_WIDTH, 600) and image.media_type == "image/jpeg"
    assert Image.open(io.BytesIO(image.data)).size == (MAX_WIDTH, 600)
    ref = image.ref("https://news.example.com")
    assert (ref.width, ref.height) == (DISPLAY_WIDTH, 276) and ref.url.endswith(".jpg")


def test_formats_mail_clients_cannot_show_become_png_and_exif_is_dropped(tmp_path):
    webp = prepare_image(image_bytes((40, 30), "WEBP"), name="a.webp")
    assert webp.media_type == "image/png" and Image.open(io.BytesIO(webp.data)).format == "PNG"
    exif = Image.Exif()
    exif[0x010F] = "Secret Camera Inc."  # Make
    photo = prepare_image(image_bytes((40, 30), "JPEG", exif=exif), name="photo.jpg")
    assert photo.media_type == "image/jpeg" and b"Secret Camera" not in photo.data


def test_the_same_file_is_one_url_and_a_changed_file_a_new_one():
    a = prepare_image(image_bytes((10, 10)), name="a.png")
    assert prepare_image(image_bytes((10, 10)), name="b.png").digest == a.digest
    assert prepare_image(image_bytes((11, 10)), name="a.png").digest != a.digest


@pytest.mark.parametrize(("name", "setup", "expected"), [
    ("missing.png", None, "image 'missing.png': no such file next to the issue"),
    ("../outside.png", None, "image '../outside.png': must be in the issue's folder"),
    ("folder", "dir", "is a folder, not an image"),
    ("notes.png", b"this is text, not a picture", "image 'notes.png': not an image that can be published"),
    ("cut.png", "truncated", "image 'cut.png'"),
])
def test_a_bad_image_is_a_one_line_error_naming_the_file(tmp_path, name, setup, expected):
    (tmp_path / "outside.png").write_bytes(image_bytes((5, 5)))
    issue = tmp_path / "issue"
    issue.mkdir()
    if setup == "dir":
        (issue / name).mkdir()
    elif setup == "truncated":
        (issue / name).write_bytes(image_bytes((200, 200))[:60])
    elif isinstance(setup, bytes):
        (issue / name).write_bytes(setup)
    with pytest.raises(InvalidInput) as err:
        read_image(issue, name)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_local_names_are_the_relative_images_each_once():
    source = parse_issue("---\nsubject: s\n---\n![a](a.png) ![b](img/b.png) ![a again](a.png) "
                         "![remote](https://cdn.example/c.png) ![data](data:image/png;base64,AAAA) ![root](/d.png)\n")
    assert local_names(source) == ["a.png", "img/b.png"]
    assert asset_url("https://x.example/", "f.png") == "https://x.example/issues/assets/f.png"
