"""pipeline.media: keys at their own depth and alpha (PNG 8/16-bit, OpenEXR), ProRes out."""

from __future__ import annotations

import av
import cv2
import numpy as np
import OpenEXR
import pytest

from keyframe.errors import UserError
from pipeline import media


def _rgba16(seed: int, h: int = 6, w: int = 9) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 65536, (h, w, 4), dtype=np.uint16)
    image[..., 3] = rng.integers(1, 65536, (h, w))  # no fully transparent pixel
    return image


def test_png_16bit_rgba_round_trip_is_exact(tmp_path):
    bgra = _rgba16(0)
    assert cv2.imwrite(str(tmp_path / "k.png"), bgra)
    pixels, depth = media.read_frame(tmp_path / "k.png")
    assert depth == "16-bit" and pixels.dtype == np.float32 and pixels.shape == (6, 9, 4)
    alpha = bgra[..., 3:] / 65535.0
    assert np.allclose(pixels[..., :3], bgra[..., 2::-1] / 65535.0 * alpha, atol=1e-6)
    media.write_frame(tmp_path / "o.png", pixels, depth)
    again = cv2.imread(str(tmp_path / "o.png"), cv2.IMREAD_UNCHANGED)
    assert again.dtype == np.uint16 and np.array_equal(again, bgra)
    with pytest.raises(UserError, match="exists"):
        media.write_frame(tmp_path / "o.png", pixels, depth)


def test_png_8bit_gray_and_straight_alpha(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    pixels, depth = media.read_frame(tmp_path / "g.png")
    assert depth == "8-bit" and pixels.shape == (3, 4, 3)
    assert np.allclose(pixels[..., 1], gray / 255.0)
    half = np.zeros((2, 2, 4), np.uint8)
    half[...] = (255, 255, 255, 128)  # white, half transparent (BGRA)
    cv2.imwrite(str(tmp_path / "a.png"), half)
    pixels, _ = media.read_frame(tmp_path / "a.png")
    assert np.allclose(pixels[0, 0], [128 / 255] * 4)  # premultiplied
    assert np.array_equal(media.to_rgb8(pixels)[0, 0], [255, 255, 255])  # over white


@pytest.mark.parametrize(("depth", "dtype"), [("half", np.float16), ("float", np.float32)])
def test_exr_round_trip_keeps_depth_and_values_over_one(tmp_path, depth, dtype):
    rng = np.random.default_rng(1)
    pixels = (rng.random((5, 7, 4)) * 4.0).astype(dtype).astype(np.float32)  # linear, HDR
    media.write_frame(tmp_path / "k.exr", pixels, depth)
    again, read_depth = media.read_frame(tmp_path / "k.exr")
    assert read_depth == depth and again.shape == (5, 7, 4)
    assert np.array_equal(again, pixels) and again.max() > 1.0
    with OpenEXR.File(str(tmp_path / "k.exr"), separate_channels=True) as exr:
        channels = exr.channels()
        assert sorted(channels) == ["A", "B", "G", "R"]
        assert channels["R"].pixels.dtype == dtype


def test_exr_without_rgb_is_a_one_line_error(tmp_path):
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    depth = {"Z": np.ones((4, 4), np.float32)}
    with OpenEXR.File(header, depth) as exr:
        exr.write(str(tmp_path / "depth.exr"))
    with pytest.raises(UserError, match=r"depth.exr: EXR has no R, G, B channels \(it has Z\)"):
        media.read_frame(tmp_path / "depth.exr")
    (tmp_path / "junk.exr").write_bytes(b"not an exr")
    with pytest.raises(UserError, match="not a readable OpenEXR file"):
        media.read_frame(tmp_path / "junk.exr")


def _decode(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context
        frames = [f.to_ndarray(format="rgba64le") for f in container.decode(stream)]
        return codec.name, codec.profile, stream.format.name, frames


def test_prores_4444_keeps_alpha_and_422hq_pads_odd_widths(tmp_path, capsys):
    frames = []
    for i in range(5):
        frame = np.zeros((16, 24, 4), np.float32)
        frame[4:12, 2 + 3 * i : 8 + 3 * i] = (0.8, 0.2, 0.1, 1.0)  # an opaque box moving right
        frames.append(frame)
    for _ in range(3):  # FFmpeg's encoder is not deterministic at widths like 24: check often
        media.write_prores(tmp_path / "a.mov", iter(frames), 24, "4444", overwrite=True)
        name, profile, pix_fmt, decoded = _decode(tmp_path / "a.mov")
        assert (name, profile) == ("prores", "4444") and pix_fmt.startswith("yuva444")
        assert len(decoded) == 5 and decoded[0].shape == (16, 32, 4)  # padded to 16 px steps
        alpha = np.stack([d[..., 3] for d in decoded]) / 65535.0
        assert np.abs(alpha[..., :24] - np.stack([f[..., 3] for f in frames])).max() < 0.01
        assert alpha[..., 24:].max() < 0.01  # the padding is transparent
    assert "padded from 24 to 32 px" in capsys.readouterr().err
    media.write_prores(tmp_path / "b.mov", [f[:, :23, :3] for f in frames], 24, "422hq")
    name, profile, pix_fmt, decoded = _decode(tmp_path / "b.mov")
    assert (name, profile, pix_fmt) == ("prores", "HQ", "yuv422p10le")
    assert len(decoded) == 5 and decoded[0].shape[:2] == (16, 24)
    colour = decoded[2][6, 10, :3] / 65535.0
    assert np.abs(colour - [0.8, 0.2, 0.1]).max() < 0.02
