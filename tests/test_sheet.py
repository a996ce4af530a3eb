"""The review sheet: a grid of panels with Unicode captions (Pillow fonts), and a PDF."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import sheet

RED, NAVY, YELLOW, TEAL = (230, 40, 40), (20, 30, 80), (245, 215, 40), (20, 110, 110)


def flat(color, h=48, w=64) -> np.ndarray:
    return np.full((h, w, 3), color, np.uint8)


def test_contact_sheet_grid_and_captions():
    images = [flat(c, 64, 64) for c in (RED, NAVY, YELLOW, TEAL, (250, 250, 250))]
    captions = [f"#{i + 1}, shot 1, 1s (24f), seed {i}\na large red circle" for i in range(5)]
    image = sheet.contact_sheet(images, captions, columns=3)
    assert image.dtype == np.uint8 and image.ndim == 3
    # 64 px panels are enlarged 3x (nearest) to 192 px: two rows of three cells
    assert image.shape[1] == 3 * (192 + 8) + 8
    np.testing.assert_array_equal(image[8:200, 8:200], flat(RED, 192, 192))
    assert (image[200:240, 8:200] < 128).any(), "caption text is drawn under the panel"
    with pytest.raises(ValueError, match="captions"):
        sheet.contact_sheet(images, captions[:2])


def test_long_captions_wrap_to_the_cell():
    long = "a small blue square at the top right and a large yellow circle " * 3
    short = sheet.contact_sheet([flat(RED, 32, 32)], ["short"], columns=1)
    wrapped = sheet.contact_sheet([flat(RED, 32, 32)], [long + "x" * 80], columns=1)
    assert wrapped.shape[1] == short.shape[1] and wrapped.shape[0] > short.shape[0] + 40


def test_unicode_captions_are_drawn_or_said(capsys):
    """Accented, Greek and symbol characters are drawn as themselves by a font here; on a
    machine without one the sheet still renders and a note names the missing characters."""
    text = "é ß Ω ✓"
    font = sheet.pick_font(text)
    missing = sheet._missing(font, text)
    drawn = sheet.contact_sheet([flat(RED, 32, 32)], [f"café {text}"], columns=1)
    plain = sheet.contact_sheet([flat(RED, 32, 32)], ["cafe e s O v"], columns=1)
    assert drawn.shape == plain.shape
    if missing:
        assert "draws" in capsys.readouterr().err
    else:
        assert not np.array_equal(drawn, plain)
        box = sheet._glyph(font, "\U0010fffd")
        assert all(sheet._glyph(font, c) != box for c in "éßΩ✓")


def test_pdf_pages_hold_six_panels_with_note_lines(tmp_path):
    images = [flat(c, 36, 64) for c in (RED, NAVY, YELLOW, TEAL)] * 2
    captions = [f"#{i + 1}, shot {1 + i // 4}, 1s (24f), seed {i}\nprompt {i}" for i in range(8)]
    path = sheet.write_pdf(tmp_path / "sheet.pdf", images, captions, "Tiny film")
    data = path.read_bytes()
    assert data.startswith(b"%PDF")
    assert data.count(b"/Type /Page") - data.count(b"/Type /Pages") == 2  # 8 panels, 6 a page
