"""The review sheet: every panel with its shot, panel, duration, seed and prompt, as a PNG and
as a PDF to print and write notes on. Text is drawn with Pillow, in any script a font here has.

Fonts: ``$ANIMATIC_FONT`` if set, else the first common Unicode font found (DejaVu Sans, Noto
Sans and its CJK cut, Arial Unicode, Segoe UI), choosing one that has every character of the
captions; without any, Pillow's own font (Latin only: other characters show as boxes, and the
sheet says so once).
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from keyframe.files import atomic_path

MIN_PANEL = 192  # small panels are enlarged (nearest neighbour) to at least this size
MARGIN = 8
TEXT_PX = 13
INK = (20, 20, 20)
FLAG = (220, 30, 30)  # the frame around a flagged panel (e.g. a prompt outside the model's words)
PDF_DPI = 150
PDF_PAGE = (1754, 1240)  # A4 landscape at 150 dpi
PDF_GRID = (3, 2)  # columns, rows of panels per page
NOTE_LINES = 3
_NOTED: set[str] = set()  # characters already reported missing (one note per run)
FONT_FOLDERS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.local/share/fonts",
    "/Library/Fonts",
    "/System/Library/Fonts",
    "C:/Windows/Fonts",
)
FONT_NAMES = (
    "DejaVuSans.ttf",
    "NotoSans-Regular.ttf",
    "NotoSansCJK-Regular.ttc",
    "Arial Unicode.ttf",
    "segoeui.ttf",
)


@functools.lru_cache(maxsize=1)
def font_files() -> tuple[Path, ...]:
    """Unicode fonts found on this machine, in order of preference ($ANIMATIC_FONT first)."""
    found = []
    if os.environ.get("ANIMATIC_FONT"):
        found.append(Path(os.environ["ANIMATIC_FONT"]).expanduser())
    for name in FONT_NAMES:
        for folder in FONT_FOLDERS:
            root = Path(folder).expanduser()
            direct = root / name
            if direct.is_file():
                found.append(direct)
                break
            if root.is_dir():
                match = next(iter(sorted(root.rglob(name))), None)
                if match is not None:
                    found.append(match)
                    break
    return tuple(p for p in found if p.is_file())


def _glyph(font, char: str) -> bytes:
    side = 4 * int(getattr(font, "size", TEXT_PX))
    image = Image.new("L", (side, side))
    ImageDraw.Draw(image).text((side // 4, side // 4), char, font=font, fill=255)
    return image.tobytes()


def _missing(font, text: str) -> set[str]:
    """Characters of ``text`` the font draws as its 'missing glyph' box (or not at all)."""
    box, blank = _glyph(font, "\U0010fffd"), _glyph(font, " ")
    chars = {c for c in set(text) if not c.isspace()}
    return {c for c in chars if _glyph(font, c) in (box, blank)}


def pick_font(text: str, size: int = TEXT_PX):
    """The preferred font that has every character of ``text`` (else the one missing fewest);
    Pillow's default font when no font file is found, with a note on stderr."""
    best, fewest = None, None
    for path in font_files():
        try:
            font = ImageFont.truetype(str(path), size)
        except OSError:
            continue
        missing = _missing(font, text)
        if not missing:
            return font
        if fewest is None or len(missing) < len(fewest):
            best, fewest = font, missing
    if best is None:
        best = ImageFont.load_default(size=size)
        fewest = _missing(best, text)
    if fewest - _NOTED:
        _NOTED.update(fewest)
        shown = "".join(sorted(fewest))[:12]
        print(
            f"animatic: note: no font here draws {shown!r}; they show as boxes on the sheet "
            "(install fonts-dejavu-core / fonts-noto-cjk, or set ANIMATIC_FONT=path.ttf)",
            file=sys.stderr,
        )
    return best


def wrap(text: str, width: int, font) -> list[str]:
    """Greedy wrap to ``width`` pixels; a word too long for a line is split."""
    lines = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while font.getlength(word) > width and len(word) > 1:
                cut = 1
                while cut < len(word) - 1 and font.getlength(word[: cut + 1]) <= width:
                    cut += 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


def _line_height(font) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent + 3


def contact_sheet(
    images: Sequence[np.ndarray],
    captions: Sequence[str],
    columns: int = 4,
    flagged: Sequence[bool] | None = None,
) -> np.ndarray:
    """Panels in a grid with wrapped captions under each -> ``uint8 (h, w, 3)`` RGB.

    Panels share one cell size (the largest panel); panels smaller than MIN_PANEL are enlarged
    by a whole factor with nearest neighbour, so pixels stay crisp and text readable. Panels
    marked in `flagged` get a red frame (their caption says why).
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    cell_h = max(image.shape[0] for image in images)
    cell_w = max(image.shape[1] for image in images)
    factor = max(1, math.ceil(MIN_PANEL / max(cell_h, cell_w)))
    cell_h, cell_w = cell_h * factor, cell_w * factor
    font = pick_font("".join(captions))
    wrapped = [wrap(caption, cell_w, font) for caption in captions]
    line_h = _line_height(font)
    caption_h = max(len(lines) for lines in wrapped) * line_h + MARGIN // 2
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    size = (columns * (cell_w + MARGIN) + MARGIN, rows * (cell_h + caption_h + MARGIN) + MARGIN)
    sheet = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(sheet)
    for index, (image, lines) in enumerate(zip(images, wrapped, strict=True)):
        top = MARGIN + (index // columns) * (cell_h + caption_h + MARGIN)
        left = MARGIN + (index % columns) * (cell_w + MARGIN)
        panel = Image.fromarray(np.ascontiguousarray(image[..., :3]), "RGB")
        panel = panel.resize((panel.width * factor, panel.height * factor), Image.NEAREST)
        x, y = left + (cell_w - panel.width) // 2, top + (cell_h - panel.height) // 2
        sheet.paste(panel, (x, y))
        if flagged is not None and flagged[index]:
            box = [x - 3, y - 3, x + panel.width + 2, y + panel.height + 2]
            draw.rectangle(box, outline=FLAG, width=3)
        for n, line in enumerate(lines):
            draw.text((left, top + cell_h + 2 + n * line_h), line, fill=INK, font=font)
    return np.asarray(sheet)


def write_pdf(
    path: str | os.PathLike, images: Sequence[np.ndarray], captions: Sequence[str], title: str
) -> Path:
    """The sheet as an A4 landscape PDF (PDF_GRID panels a page), each panel with its caption and
    ruled lines for notes, pages numbered; written atomically."""
    path = Path(path)
    columns, rows = PDF_GRID
    per_page = columns * rows
    width, height = PDF_PAGE
    font = pick_font(title + "".join(captions), size=22)
    head = pick_font(title, size=30)
    cell_w = (width - 2 * 60 - (columns - 1) * 40) // columns
    cell_h = (height - 160 - (rows - 1) * 30) // rows
    pages = []
    count = math.ceil(len(images) / per_page)
    for page in range(count):
        sheet = Image.new("RGB", PDF_PAGE, "white")
        draw = ImageDraw.Draw(sheet)
        draw.text((60, 40), title, fill=INK, font=head)
        draw.text((width - 220, 48), f"page {page + 1} / {count}", fill=INK, font=font)
        for slot in range(per_page):
            index = page * per_page + slot
            if index >= len(images):
                break
            left = 60 + (slot % columns) * (cell_w + 40)
            top = 110 + (slot // columns) * (cell_h + 30)
            _pdf_cell(
                draw, sheet, images[index], captions[index], (left, top, cell_w, cell_h), font
            )
        pages.append(sheet)
    with atomic_path(path) as tmp:
        pages[0].save(tmp, "PDF", save_all=True, append_images=pages[1:], resolution=PDF_DPI)
    return path


def _pdf_cell(draw, sheet, image: np.ndarray, caption: str, box, font) -> None:
    """One panel on a PDF page: the image fitted to the upper part, caption, note lines."""
    left, top, width, height = box
    line_h = _line_height(font)
    lines = wrap(caption, width, font)[:4]
    picture_h = height - (len(lines) + NOTE_LINES) * line_h - 10
    panel = Image.fromarray(np.ascontiguousarray(image[..., :3]), "RGB")
    scale = min(width / panel.width, picture_h / panel.height)
    method = Image.NEAREST if scale >= 2 else Image.LANCZOS
    panel = panel.resize(
        (max(1, int(panel.width * scale)), max(1, int(panel.height * scale))), method
    )
    sheet.paste(panel, (left, top))
    draw.rectangle([left, top, left + panel.width - 1, top + panel.height - 1], outline=INK)
    y = top + panel.height + 6
    for line in lines:
        draw.text((left, y), line, fill=INK, font=font)
        y += line_h
    for _ in range(NOTE_LINES):
        y += line_h
        draw.line([(left, y), (left + width, y)], fill=(170, 170, 170), width=1)
