"""Previews of deliverables: what the dashboard shows instead of the file itself.

Images and the first page of a PDF are re-encoded as small PNG thumbnails (Pillow,
pypdfium2), so the browser never interprets a contractor's bytes in the dashboard's origin;
text and Markdown are rendered on the server (markdown-it with raw HTML disabled) and
escaped. Everything else, HTML and SVG included, is offered as a download only.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

from markupsafe import Markup

PreviewKind = Literal["image", "pdf", "text", "markdown", "download", "none"]

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
TEXT_EXT = {".txt", ".csv", ".log", ".json", ".yaml", ".yml", ".toml", ".py", ".css"}
MARKDOWN_EXT = {".md", ".markdown"}
MAX_IMAGE_PIXELS = 40_000_000  # refuse decompression bombs
TEXT_LIMIT = 20_000  # characters shown of a text file
SIZES = {"thumb": 320, "big": 1200}


def kind_of(doc: dict[str, Any]) -> PreviewKind:
    """How a deliverable is previewed, by its stored file name (never by its content type,
    which the sender chose)."""
    if not doc.get("path"):
        return "none"
    suffix = Path(str(doc.get("filename") or "")).suffix.lower()
    if suffix in IMAGE_EXT:
        return "image"
    if suffix == ".pdf":
        return "pdf"
    if suffix in MARKDOWN_EXT:
        return "markdown"
    if suffix in TEXT_EXT:
        return "text"
    return "download"


class PreviewError(Exception):
    """The file could not be previewed (damaged, too big, unreadable)."""


class _Cache:
    """A small in-memory LRU of rendered thumbnails (nothing is written to disk)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.items: OrderedDict[tuple[str, float, str], bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, float, str]) -> bytes | None:
        with self.lock:
            value = self.items.get(key)
            if value is not None:
                self.items.move_to_end(key)
            return value

    def put(self, key: tuple[str, float, str], value: bytes) -> None:
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)


_cache = _Cache()


def thumbnail(path: Path, kind: PreviewKind, size: str = "thumb") -> bytes:
    """A PNG of an image, or of the first page of a PDF, at most ``SIZES[size]`` wide."""
    from PIL import Image

    edge = SIZES.get(size, SIZES["thumb"])
    try:
        key = (str(path), path.stat().st_mtime, f"{kind}:{edge}")
    except OSError as exc:
        raise PreviewError(f"the file is not readable: {exc.strerror}") from None
    cached = _cache.get(key)
    if cached is not None:
        return cached
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        if kind == "pdf":
            image = _pdf_first_page(path, edge)
        else:
            with Image.open(path) as source:
                source.seek(0)
                image = source.convert("RGBA") if source.mode in ("P", "LA", "RGBA") \
                    else source.convert("RGB")
        image.thumbnail((edge, edge * 2))
        out = io.BytesIO()
        image.save(out, "PNG", optimize=False)
    except PreviewError:
        raise
    except Exception as exc:  # Pillow and pdfium raise many kinds on damaged files
        raise PreviewError(f"no preview: {type(exc).__name__}") from None
    data = out.getvalue()
    _cache.put(key, data)
    return data


def placeholder(label: str = "no preview") -> bytes:
    """A neutral PNG for files whose preview failed (damaged or not what they claim)."""
    from PIL import Image, ImageDraw

    key = ("placeholder", 0.0, label)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    image = Image.new("RGB", (272, 200), "#f0f4f8")
    draw = ImageDraw.Draw(image)
    draw.rectangle((96, 56, 176, 136), outline="#9aa5b1", width=3)
    draw.line((96, 136, 176, 56), fill="#9aa5b1", width=3)
    draw.text((136, 166), label, fill="#52606d", anchor="mm")
    out = io.BytesIO()
    image.save(out, "PNG")
    _cache.put(key, out.getvalue())
    return out.getvalue()


def _pdf_first_page(path: Path, edge: int) -> Any:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        if len(pdf) == 0:
            raise PreviewError("the PDF has no pages")
        page = pdf[0]
        width, height = page.get_width() or 1, page.get_height() or 1
        scale = max(0.01, min(4.0, edge / width, edge * 2 / height))
        bitmap = page.render(scale=scale)
        image = bitmap.to_pil()
        page.close()
        return image
    finally:
        pdf.close()


def text_preview(path: Path, kind: PreviewKind) -> Markup:
    """Escaped text in a ``<pre>``, or Markdown rendered without raw HTML."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(TEXT_LIMIT * 4)
    except OSError as exc:
        raise PreviewError(f"the file is not readable: {exc.strerror}") from None
    text = raw.decode("utf-8", "replace")[:TEXT_LIMIT]
    if kind == "markdown":
        return markdown(text)
    return Markup("<pre class=\"text\">{}</pre>").format(text)


def markdown(text: str) -> Markup:
    """Markdown as HTML with raw HTML off (markdown-it escapes it) and only web links."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False})
    md.validateLink = _safe_link  # type: ignore[method-assign]
    return Markup(md.render(text))


def _safe_link(url: str) -> bool:
    return url.strip().lower().startswith(("http://", "https://", "mailto:", "#"))
