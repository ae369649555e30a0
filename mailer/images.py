"""An issue's local images: the files its Markdown names next to itself
(``![chart](chart.png)``), read, checked and made ready to publish once, at save time.

Each image is published under a URL made from the SHA-256 of its bytes
(``{base}/issues/assets/{digest}.png``): the same file is one URL however many issues
show it, a changed file is a new URL (so it can be cached for ever), and the URL says
nothing about the file's name or the issue. The email and the archive both point at
that URL, with the image's display size in ``width``/``height`` so the text does not
jump while it loads.

An image wider than ``MAX_WIDTH`` (twice the 600 px email column, sharp on high-density
screens) is scaled down with Pillow; a format some mail clients cannot show (WebP, BMP,
TIFF...) becomes PNG; a photo's EXIF data (camera, GPS position) is dropped. Pure: a
folder and names in, ``LocalImage`` values out; storing them is the caller's
(``mailer.operations.issues``).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from mailer.core.errors import InvalidInput
from mailer.issues import ImageRef, IssueSource, is_local

MAX_WIDTH = 1200
# The email column is 600 px with 24 px of padding each side.
DISPLAY_WIDTH = 552
MAX_IMAGE_BYTES = 20_000_000
# Pillow's guard against decompression bombs: a small file that decodes to gigabytes.
MAX_PIXELS = 60_000_000
ASSET_PATH = "/issues/assets/"
# What every mail client shows; anything else Pillow reads is converted to PNG.
KEPT = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"), "GIF": ("image/gif", "gif")}
EXTENSIONS = {media: ext for media, ext in KEPT.values()}
MEDIA_TYPES = {ext: media for media, ext in KEPT.values()}


@dataclass(frozen=True)
class LocalImage:
    name: str  # as written in the Markdown
    digest: str  # SHA-256 of ``data``, hex
    media_type: str
    data: bytes
    width: int  # pixels of the published file
    height: int

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.media_type]

    @property
    def filename(self) -> str:
        return f"{self.digest}.{self.extension}"

    def ref(self, base_url: str) -> ImageRef:
        return published_ref(base_url, digest=self.digest, media_type=self.media_type, width=self.width,
                             height=self.height)


def published_ref(base_url: str, *, digest: str, media_type: str, width: int, height: int) -> ImageRef:
    """Where an image is published, at its display size (the column's width at most)."""
    shown = min(width, DISPLAY_WIDTH)
    return ImageRef(url=asset_url(base_url, f"{digest}.{EXTENSIONS[media_type]}"), width=shown,
                    height=max(1, round(height * shown / width)))


def asset_url(base_url: str, filename: str) -> str:
    return base_url.rstrip("/") + ASSET_PATH + filename


def local_names(source: IssueSource) -> list[str]:
    """The local images an issue names, each once, in order."""
    return list(dict.fromkeys(image.src for image in source.images if is_local(image.src)))


def read_images(folder: Path, names: list[str]) -> list[LocalImage]:
    return [read_image(folder, name) for name in names]


def read_image(folder: Path, name: str) -> LocalImage:
    """The image ``name`` (relative to ``folder``, as the Markdown writes it), ready to
    publish. Every problem is a one-line ``InvalidInput`` that names the file."""
    base = Path(folder).resolve()
    path = (base / unquote(name.split("?", 1)[0].split("#", 1)[0])).resolve()
    if not path.is_relative_to(base):
        raise InvalidInput(f"image {name!r}: must be in the issue's folder ({base}) or below it")
    try:
        if path.is_dir():
            raise InvalidInput(f"image {name!r}: {path} is a folder, not an image")
        if not path.is_file():
            raise InvalidInput(f"image {name!r}: no such file next to the issue (looked for {path})")
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise InvalidInput(f"image {name!r}: {path} is {size / 1_000_000:.1f} MB; "
                               f"the limit is {MAX_IMAGE_BYTES // 1_000_000} MB")
        data = path.read_bytes()
    except PermissionError as err:
        raise InvalidInput(f"image {name!r}: {path}: permission denied") from err
    except OSError as err:
        raise InvalidInput(f"image {name!r}: {path}: cannot read: {err.strerror or err}") from err
    return prepare_image(data, name=name)


def prepare_image(data: bytes, *, name: str) -> LocalImage:
    """Check, scale down and (when needed) convert one image's bytes."""
    # Pillow is imported by the publishing that needs it, not by every command (~50 ms).
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise InvalidInput(f"image {name!r}: {image.width}x{image.height} pixels is too large to publish")
            image.load()
    except InvalidInput:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InvalidInput(f"image {name!r}: not an image that can be published (PNG, JPEG, GIF, WebP...)") from err
    except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt data
        raise InvalidInput(f"image {name!r}: the file is damaged: {err}") from err

    fmt = image.format or ""
    animated = getattr(image, "is_animated", False)
    too_wide = image.width > MAX_WIDTH
    has_exif = fmt == "JPEG" and bool(image.info.get("exif"))
    if fmt in KEPT and (animated or not (too_wide or has_exif)):
        # As it is: re-encoding costs quality; an animation would lose its frames.
        media_type = KEPT[fmt][0]
        out = data
        width, height = image.size
    else:
        image = ImageOps.exif_transpose(image)  # a phone photo's rotation is in its EXIF
        if image.width > MAX_WIDTH:
            image = image.resize((MAX_WIDTH, max(1, round(image.height * MAX_WIDTH / image.width))),
                                 Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        if fmt == "JPEG":
            image.convert("RGB").save(buffer, "JPEG", quality=88, optimize=True, progressive=True)
            media_type = KEPT["JPEG"][0]
        else:
            if image.mode not in ("RGB", "RGBA", "L", "LA", "P"):
                image = image.convert("RGBA")
            image.save(buffer, "PNG", optimize=True)
            media_type = KEPT["PNG"][0]
        out = buffer.getvalue()
        width, height = image.size
    return LocalImage(name=name, digest=hashlib.sha256(out).hexdigest(), media_type=media_type, data=out,
                      width=width, height=height)
