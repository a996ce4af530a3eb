"""File, image and video I/O: round trips, colours, timing, atomicity and refusals."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from keyframe.errors import UserError
from pipeline import io, io_video

RED, NAVY, YELLOW, TEAL = (230, 40, 40), (20, 30, 80), (245, 215, 40), (20, 110, 110)


def flat(color, h=48, w=64) -> np.ndarray:
    return np.full((h, w, 3), color, np.uint8)


def noise(seed: int, h=16, w=24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def leftovers(folder) -> list[str]:
    """Temp files that an interrupted atomic write could leave behind."""
    return [p.name for p in folder.iterdir() if ".tmp" in p.name]


# --- images -------------------------------------------------------------------------------------


def test_png_round_trip_is_exact(tmp_path):
    image = noise(0, 45, 63)
    io.write_png(tmp_path / "a.png", image)
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.png"), image)


def test_read_image_rgba_is_composited_on_white(tmp_path):
    bgra = np.zeros((2, 3, 4), np.uint8)
    bgra[..., :3] = (40, 40, 230)  # BGR of red
    bgra[0, :, 3] = 255
    bgra[1, 0, 3] = 0
    bgra[1, 1:, 3] = 128
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    rgb = io.read_image(tmp_path / "a.png")
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0], RED)
    np.testing.assert_array_equal(rgb[1, 0], (255, 255, 255))
    a = 128 / 255
    expected = np.round(np.array(RED) * a + 255 * (1 - a))
    np.testing.assert_allclose(rgb[1, 1], expected, atol=1)


def test_read_image_16bit_gray_and_8bit_gray(tmp_path):
    gray16 = np.array([[0, 65535], [257 * 100, 257 * 200 + 100]], np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    rgb = io.read_image(tmp_path / "g16.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb[..., 0], [[0, 255], [100, 200]])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    gray8 = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    cv2.imwrite(str(tmp_path / "g8.png"), gray8)
    np.testing.assert_array_equal(io.read_image(tmp_path / "g8.png")[..., 1], gray8)


@pytest.mark.parametrize("suffix,tolerance", [(".jpg", 6), (".webp", 6), (".bmp", 0)])
def test_read_image_other_formats(tmp_path, suffix, tolerance):
    image = flat(YELLOW, 20, 30)
    cv2.imwrite(str(tmp_path / f"a{suffix}"), image[..., ::-1])
    rgb = io.read_image(tmp_path / f"a{suffix}")
    assert rgb.shape == image.shape
    assert np.abs(rgb.astype(int) - image).max() <= tolerance


def test_read_image_errors_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(UserError, match=r"corrupt\.png: not a readable image"):
        io.read_image(corrupt)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(UserError, match=r"empty\.jpg"):
        io.read_image(tmp_path / "empty.jpg")
    with pytest.raises(UserError, match=r"missing\.png: image not found"):
        io.read_image(tmp_path / "missing.png")
    with pytest.raises(UserError, match="got a folder"):
        io.read_image(tmp_path)


def test_list_images_natural_order(tmp_path):
    for name in ["key10.png", "key2.png", "Key1.jpg", "key2b.webp", ".hidden.png", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    names = [p.name for p in io.list_images(tmp_path)]
    assert names == ["Key1.jpg", "key2.png", "key2b.webp", "key10.png"]


def test_list_images_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no images found"):
        io.list_images(tmp_path)
    with pytest.raises(UserError, match="no such folder"):
        io.list_images(tmp_path / "nope")


def test_tensor_conversions_round_trip():
    image = noise(1, 5, 7)
    chw = io.from_uint8_rgb(image)
    assert chw.shape == (3, 5, 7) and chw.min() >= -1 and chw.max() <= 1
    np.testing.assert_array_equal(io.to_uint8_rgb(chw), image)
    with pytest.raises(ValueError, match=r"\(3, h, w\)"):
        io.to_uint8_rgb(np.zeros((5, 7, 3)))


# --- safe writing -------------------------------------------------------------------------------


def test_refuses_overwrite_unless_asked(tmp_path):
    target = tmp_path / "a.png"
    io.write_png(target, flat(RED, 4, 4))
    with pytest.raises(UserError, match=r"a\.png exists; pass --overwrite"):
        io.write_png(target, flat(NAVY, 4, 4))
    np.testing.assert_array_equal(io.read_image(target)[0, 0], RED)
    io.write_png(target, flat(NAVY, 4, 4), overwrite=True)
    np.testing.assert_array_equal(io.read_image(target)[0, 0], NAVY)


def test_check_writable(tmp_path):
    (tmp_path / "film.mp4").write_bytes(b"x")
    with pytest.raises(UserError, match=r"film\.mp4 exists; pass --overwrite"):
        io.check_writable(tmp_path / "film.mp4", overwrite=False)
    io.check_writable(tmp_path / "film.mp4", overwrite=True)
    io.check_writable(tmp_path / "new" / "deeper" / "film.mp4", overwrite=False)
    with pytest.raises(UserError, match="is a file"):
        io.check_writable(tmp_path / "film.mp4" / "inside.png", overwrite=True)
    (tmp_path / "empty").mkdir()
    io.check_writable(tmp_path / "empty", overwrite=False, folder=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UserError, match="exists"):
        io.check_writable(tmp_path / "full", overwrite=False, folder=True)
    with pytest.raises(UserError, match="is a folder"):
        io.check_writable(tmp_path / "full", overwrite=True)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_path_removes_temp_and_keeps_target(tmp_path, error):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(error), io.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".txt" and tmp.name.startswith(".")
        tmp.write_text("half")
        raise error()
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["film.mp4", "film.gif", "frames"])
def test_writer_failing_midway_leaves_no_partial_output(tmp_path, name):
    def frames():
        for i in range(5):
            if i == 3:
                raise RuntimeError("renderer crashed")
            yield flat(RED if i % 2 else NAVY, 16, 16)

    with pytest.raises(RuntimeError, match="crashed"):
        io_video.write_video(tmp_path / name, frames(), fps=24)
    if name == "frames":  # a sequence streams: finished frames stay, no partial frame does
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == [
            "frame.0001.png",
            "frame.0002.png",
            "frame.0003.png",
        ]
        assert leftovers(tmp_path / name) == []
    else:
        assert list(tmp_path.iterdir()) == []


# --- videos -------------------------------------------------------------------------------------


def test_mp4_round_trip_count_fps_colours_and_faststart(tmp_path):
    colours = [RED, NAVY, YELLOW, TEAL]
    frames = [flat(c) for c in colours for _ in range(6)]
    path = io_video.write_mp4(tmp_path / "film.mp4", iter(frames), fps=24)
    decoded, fps = io_video.read_video_frames(path)
    assert decoded.shape == (24, 48, 64, 3)
    assert fps == pytest.approx(24)
    error = np.abs(decoded.astype(np.float32) - np.stack(frames)).mean(axis=(1, 2, 3))
    assert error.max() < 8, error
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "+faststart puts the index first"
    assert leftovers(tmp_path) == []


def test_mp4_is_h264_yuv420p_bt709(tmp_path):
    import av

    io_video.write_mp4(tmp_path / "a.mp4", [flat(RED, 16, 16)] * 2, fps=30)
    with av.open(str(tmp_path / "a.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert float(stream.average_rate) == pytest.approx(30)
        frame = next(container.decode(stream))
        assert frame.colorspace == 1  # AVCOL_SPC_BT709


def test_mp4_odd_size_is_padded_by_one_pixel(tmp_path):
    frame = flat(NAVY, 45, 63)
    frame[:, -1] = YELLOW  # the padding repeats the last column and row
    frame[-1, :] = YELLOW
    io_video.write_mp4(tmp_path / "odd.mp4", [frame] * 3, fps=24)
    decoded, _ = io_video.read_video_frames(tmp_path / "odd.mp4")
    assert decoded.shape == (3, 46, 64, 3)
    assert np.abs(decoded[0, :45, :63].astype(float) - frame).mean() < 8
    assert np.abs(decoded[0, 40:, 63].astype(float) - YELLOW).mean() < 16
    assert np.abs(decoded[0, 45, 5:60].astype(float) - YELLOW).mean() < 16


def test_mp4_rejects_mixed_sizes_and_no_frames(tmp_path):
    with pytest.raises(ValueError, match="frame 1"):
        io_video.write_mp4(tmp_path / "a.mp4", [flat(RED, 16, 16), flat(RED, 8, 16)], fps=24)
    with pytest.raises(ValueError, match="no frames"):
        io_video.write_mp4(tmp_path / "b.mp4", iter([]), fps=24)
    assert list(tmp_path.iterdir()) == []


def test_gif_frames_durations_and_loop(tmp_path):
    frames = [noise(i) for i in range(12)]
    io_video.write_gif(tmp_path / "a.gif", frames, fps=24)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 12
        assert gif.info["loop"] == 0
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
    assert durations == [40, 40, 50, 40, 40, 40] * 2  # 1/24 s in whole centiseconds
    assert sum(durations) == 500


def test_gif_held_frames_merge_but_keep_time(tmp_path):
    frames = [flat(RED, 8, 8)] * 24 + [flat(TEAL, 8, 8)] * 12
    io_video.write_gif(tmp_path / "a.gif", frames, fps=24)
    with Image.open(tmp_path / "a.gif") as gif:
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
            colour = np.asarray(gif.convert("RGB"))[0, 0]
            np.testing.assert_array_equal(colour, RED if index == 0 else TEAL)
    assert durations == [1000, 500]


@pytest.mark.parametrize("fps", [24, 25, 30, 12, 23.976, 7.5])
def test_gif_delays_track_true_time(fps):
    delays = io_video.gif_delays_cs(100, fps)
    assert len(delays) == 100 and min(delays) >= 2
    assert sum(delays) == round(100 * 100 / fps)
    assert max(delays) - min(delays) <= 1


def test_png_sequence_names_pixels_and_overwrite(tmp_path):
    frames = [noise(i, 9, 11) for i in range(5)]
    paths = io.write_png_sequence(tmp_path / "seq", (f for f in frames), name="shot")
    assert [p.name for p in paths] == [f"shot.{i:04d}.png" for i in range(1, 6)]
    for path, frame in zip(paths, frames, strict=True):
        np.testing.assert_array_equal(io.read_image(path), frame)
    with pytest.raises(UserError, match="pass --overwrite"):
        io.write_png_sequence(tmp_path / "seq", frames[:2], name="shot")
    (tmp_path / "seq" / "notes.txt").write_text("keep me")
    io.write_png_sequence(tmp_path / "seq", frames[:2], name="shot", overwrite=True)
    names = sorted(p.name for p in (tmp_path / "seq").iterdir())
    assert names == ["notes.txt", "shot.0001.png", "shot.0002.png"], "stale tail is removed"
    with pytest.raises(ValueError, match="no frames"):
        io.write_png_sequence(tmp_path / "none", iter([]))


def test_write_video_dispatch_and_unsupported(tmp_path):
    frames = [flat(RED, 16, 16), flat(TEAL, 16, 16)]
    assert io_video.write_video(tmp_path / "a.mp4", frames, 24) == [tmp_path / "a.mp4"]
    assert io_video.write_video(tmp_path / "a.gif", frames, 24) == [tmp_path / "a.gif"]
    assert len(io_video.write_video(tmp_path / "frames", frames, 24)) == 2
    assert io_video.write_video(tmp_path / "a.mov", frames, 24) == [tmp_path / "a.mov"]  # ProRes
    with pytest.raises(UserError, match=r"unsupported output format '\.avi'"):
        io_video.write_video(tmp_path / "a.avi", frames, 24)
    with pytest.raises(UserError, match=r"a\.mp4 exists"):
        io_video.write_video(tmp_path / "a.mp4", frames, 24)


def test_read_video_errors(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(UserError, match=r"bad\.mp4: not a readable video"):
        io_video.read_video_frames(tmp_path / "bad.mp4")
    with pytest.raises(UserError, match=r"none\.mp4: video not found"):
        io_video.read_video_frames(tmp_path / "none.mp4")


# --- provenance --------------------------------------------------------------------------------


def test_sidecar_records_provenance(tmp_path):
    out = tmp_path / "film.mp4"
    record = {"seeds": np.array([1, 2]), "config": {"path": tmp_path / "x.yaml", "fps": 24}}
    sidecar = io.write_sidecar(out, record)
    assert sidecar == tmp_path / "film.mp4.json"
    data = json.loads(sidecar.read_text())
    assert data["seeds"] == [1, 2]
    assert data["config"] == {"path": str(tmp_path / "x.yaml"), "fps": 24}
    prov = data["provenance"]
    for key in ("animatic", "python", "numpy", "torch", "platform", "git_commit", "time"):
        assert key in prov
    assert prov["numpy"] == np.__version__
    assert leftovers(tmp_path) == []
    with pytest.raises(TypeError, match="cannot record"):
        io.write_sidecar(out, {"bad": object()})


def test_training_and_inference_decode_stills_to_the_same_pixels(tmp_path):
    """One decoder (keyframe.image_decode) behind both readers: 16-bit with alpha, gray, and a
    JPEG whose EXIF says 'rotate 90' read alike, and the rotation is applied by both."""
    from keyframe.frames import read_image as training_read

    rng = np.random.default_rng(0)
    rgba16 = rng.integers(0, 65536, (6, 10, 4), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), rgba16)
    cv2.imwrite(str(tmp_path / "g.png"), rng.integers(0, 256, (6, 10), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 clockwise to view
    pixels = rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "r.jpg", exif=exif, quality=95)
    for name in ("a.png", "g.png", "r.jpg"):
        path = tmp_path / name
        assert np.array_equal(training_read(path), io.read_image(path)), name
    assert io.read_image(tmp_path / "r.jpg").shape == (32, 16, 3)  # turned upright
    white = io.read_image(tmp_path / "a.png")[rgba16[..., 3] == 0]
    assert (white == 255).all()  # transparent pixels read as white paper


def test_training_inference_and_eval_decode_videos_to_the_same_pixels(tmp_path):
    """One video reader (keyframe.media) behind training data (both stages' datasets and the
    general interpolator's), `tween`'s reader and the eval's: an H.264 MP4 and a lossless MPNG
    AVI (the datasets' clips) read alike, the AVI exactly as written."""
    from interpolate.general import data as general_data
    from keyframe.frames import read_video as training_read
    from pipeline import eval_video

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (5, 32, 48, 3), dtype=np.uint8)
    frames = cv2.GaussianBlur(frames.reshape(-1, 48, 3), (5, 5), 2).reshape(5, 32, 48, 3)
    mp4 = io_video.write_video(tmp_path / "c.mp4", list(frames), fps=12)[0]
    avi = tmp_path / "c.avi"
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter.fourcc(*"MPNG"), 12, (48, 32))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    for path in (mp4, avi):
        inference, fps = io_video.read_video_frames(path)
        assert fps == 12 and inference.shape == (5, 32, 48, 3)
        assert np.array_equal(training_read(path), inference), path.name
        assert np.array_equal(general_data.read_video_file(str(path)), inference), path.name
        assert np.array_equal(eval_video.read_video_file(path), inference), path.name
    assert np.array_equal(io_video.read_video_frames(avi)[0], frames)  # lossless: exact


def test_every_reader_takes_numbered_frames_in_natural_order(tmp_path):
    """A frame folder numbered without padding (f_2 before f_10): training's frame-folder reader
    and the inference listing agree, in number order (sorting the names put f_10 before f_2)."""
    from keyframe.frames import read_video as training_read

    folder = tmp_path / "clip"
    folder.mkdir()
    for i in (1, 2, 10, 11):
        io.write_png(folder / f"f_{i}.png", np.full((4, 4, 3), i * 10, np.uint8))
    (folder / ".hidden.png").write_bytes(b"")  # hidden files are not frames
    assert [p.name for p in io.list_images(folder)] == [
        "f_1.png",
        "f_2.png",
        "f_10.png",
        "f_11.png",
    ]
    assert training_read(folder)[:, 0, 0, 0].tolist() == [10, 20, 100, 110]
