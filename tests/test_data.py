"""Training data (keyframe.records, .frames, .datasets, .data): records from every kind of source,
frames, resizing, datasets, data modules."""

import json

import cv2
import numpy as np
import pytest
import torch

from keyframe.data import ClipDataModule, ImageDataModule, split_records
from keyframe.datasets import ClipDataset, ImageCaptionDataset, mirror_caption
from keyframe.errors import UserError
from keyframe.frames import read_image, read_video, resize_frames, to_tensor
from keyframe.records import load_records
from pipeline.cli import main
from pipeline.shapes import parse_caption


def write_png(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_avi(path, frames, fps=24.0):
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MPNG"), fps, (w, h))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def numbered_frames(count, h=24, w=40):
    """Frame k is filled with value 10 k in red, so a frame tells its own index."""
    frames = np.zeros((count, h, w, 3), np.uint8)
    frames[..., 0] = (np.arange(count) * 10)[:, None, None]
    frames[..., 1] = 128
    return frames


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name, shape in (("a", (24, 40, 3)), ("b", (50, 30, 3)), ("sub/c", (32, 32, 3))):
        write_png(tmp_path / f"{name}.png", rng.integers(0, 256, shape, dtype=np.uint8))
        (tmp_path / f"{name}.txt").write_text(f"picture {name} on the left\n")
    return tmp_path


@pytest.fixture(scope="module")
def shapes_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "shapes"
    argv = ["--clips", "6", "--stills", "12", "--size", "32", "--frames", "12", "--seed", "1"]
    assert main(["dataset", "shapes", "--out", str(out), *argv]) == 0
    return out


def test_folder_of_images_with_text_captions(image_folder):
    records = load_records(image_folder, "image")
    assert [r["caption"] for r in records] == [
        "picture a on the left",
        "picture b on the left",
        "picture sub/c on the left",
    ]
    assert all(r["kind"] == "image" and r["path"].startswith("/") for r in records)
    dataset = ImageCaptionDataset(image_folder, size=16)
    for item in dataset:
        assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
        assert item["image"].min() >= -1.0 and item["image"].max() <= 1.0


def test_folder_without_captions_is_a_user_error(image_folder):
    (image_folder / "b.txt").unlink()
    with pytest.raises(UserError, match=r"1 of 3 files have no caption.*b\.txt"):
        load_records(image_folder)
    (image_folder / "empty").mkdir()
    with pytest.raises(UserError, match="no images or videos"):
        load_records(image_folder / "empty")
    with pytest.raises(UserError, match="no such file or folder"):
        load_records(image_folder / "nothing")
    with pytest.raises(UserError, match="no videos found"):
        load_records(image_folder / "sub", "video")


def test_csv_manifest(image_folder):
    (image_folder / "list.csv").write_text(
        'path,caption\na.png,"a red, thing"\nsub/c.png,another\n'
    )
    records = load_records(image_folder / "list.csv")
    assert [r["caption"] for r in records] == ["a red, thing", "another"]
    assert records[1]["path"] == str((image_folder / "sub" / "c.png").resolve())
    (image_folder / "bad.csv").write_text("file,words\na.png,x\n")
    with pytest.raises(UserError, match=r"bad\.csv:1: expected a header"):
        load_records(image_folder / "bad.csv")
    (image_folder / "missing.csv").write_text("path,caption\na.png,x\nnope.png,y\n")
    with pytest.raises(UserError, match=r"missing\.csv:3: nope\.png does not exist"):
        load_records(image_folder / "missing.csv")


def test_malformed_jsonl_line_names_file_and_line(image_folder):
    manifest = image_folder / "m.jsonl"
    manifest.write_text('{"path": "a.png", "caption": "ok"}\n{"path": "b.png", caption}\n')
    with pytest.raises(UserError, match=r"m\.jsonl:2: not valid JSON"):
        load_records(manifest)
    manifest.write_text('{"path": "a.png", "caption": "ok"}\n\n{"path": "b.png"}\n')
    with pytest.raises(UserError, match=r"m\.jsonl:3: expected a 'path' and a 'caption'"):
        load_records(manifest)


def test_read_video_start_count_stride(tmp_path):
    frames = numbered_frames(20)
    write_avi(tmp_path / "v.avi", frames)
    assert np.array_equal(read_video(tmp_path / "v.avi"), frames)
    assert np.array_equal(
        read_video(tmp_path / "v.avi", start=3, count=4, stride=2), frames[3:11:2]
    )
    assert len(read_video(tmp_path / "v.avi", start=15, count=10)) == 5  # ends first
    for k, frame in enumerate(frames):  # a folder of frames is a video too
        write_png(tmp_path / "seq" / f"shot.{k + 1:04d}.png", frame)
    assert np.array_equal(read_video(tmp_path / "seq", start=1, count=3, stride=3), frames[1:8:3])
    with pytest.raises(UserError, match="not a readable video"):
        read_video(tmp_path / "missing.avi")


def test_read_image_converts_gray_and_alpha(tmp_path):
    cv2.imwrite(str(tmp_path / "g.png"), np.full((5, 7), 77, np.uint8))
    assert read_image(tmp_path / "g.png").shape == (5, 7, 3)
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[..., 2] = 255  # red, fully transparent on the left half
    bgra[:, 2:, 3] = 255
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    image = read_image(tmp_path / "a.png")
    assert tuple(image[0, 0]) == (255, 255, 255) and tuple(image[0, 3]) == (255, 0, 0)
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="not a readable image"):
        read_image(tmp_path / "x.png")


def test_resize_frames_crop_and_letterbox():
    frames = np.zeros((2, 20, 40, 3), np.uint8)
    frames[:, :, 10:30] = 200  # the centre square is bright, the sides dark
    crop = resize_frames(frames, 10, "crop")
    assert crop.shape == (2, 10, 10, 3) and crop.min() == 200
    box = resize_frames(frames[0], 10, "letterbox")
    assert box.shape == (10, 10, 3)
    assert box[:2].max() == 0 and box[-2:].max() == 0  # padded rows above and below
    assert box[5, 5].min() == 200 and box[5, 0].max() == 0
    assert resize_frames(frames, 20, "crop").shape == (2, 20, 20, 3)  # upscales too


def test_to_tensor_layout_and_range():
    frames = numbered_frames(3)
    video = to_tensor(frames)
    assert video.shape == (3, 3, 24, 40)
    assert video[0, 1, 0, 0].item() == pytest.approx(10 / 127.5 - 1)
    image = to_tensor(np.full((4, 5, 3), 255, np.uint8))
    assert image.shape == (3, 4, 5) and torch.all(image == 1.0)


def test_flip_mirrors_image_and_caption(image_folder):
    assert mirror_caption("Left of the right one, leftover") == "Right of the left one, leftover"
    plain = ImageCaptionDataset(image_folder, size=16)
    flipped = ImageCaptionDataset(image_folder, size=16, flip=True, seed=0)
    results = [flipped[0] for _ in range(2)]
    assert torch.equal(results[0]["image"], results[1]["image"])  # seeded: same draw
    item = next(flipped[i] for i in range(len(flipped)) if "right" in flipped[i]["caption"])
    index = [r["caption"] for r in plain.records].index(mirror_caption(item["caption"]))
    assert torch.equal(item["image"], plain[index]["image"].flip(-1))


def test_clip_dataset_on_the_shapes_dataset(shapes_dataset):
    dataset = ClipDataset(shapes_dataset, num_frames=4, size=16, strides=(1, 3, 5), seed=7)
    assert len(dataset) == 6
    strides = set()
    for item in dataset:
        assert item["video"].shape == (3, 4, 16, 16)
        assert item["video"].min() >= -1.0 and item["video"].max() <= 1.0
        assert item["fps"] == pytest.approx(24.0 / item["stride"])
        assert "bounces" in item["caption"]
        strides.add(item["stride"])
    assert strides <= {1, 3} and torch.equal(dataset[2]["video"], dataset[2]["video"])  # 5 too long


def test_clip_windows_come_from_the_right_frames(tmp_path):
    write_avi(tmp_path / "v.avi", numbered_frames(20, 8, 8))
    (tmp_path / "v.txt").write_text("counting")
    write_avi(tmp_path / "short.avi", numbered_frames(3, 8, 8))
    (tmp_path / "short.txt").write_text("too short")
    with pytest.warns(UserWarning, match="1 of 2 clips are shorter"):
        dataset = ClipDataset(tmp_path, num_frames=5, size=8, strides=(2,))
    for _ in range(5):
        item = dataset[0]
        red = ((item["video"][0, :, 0, 0] + 1) * 127.5).round() / 10  # frame indices
        assert torch.equal(red[1:] - red[:-1], torch.full((4,), 2.0))
        assert item["caption"] == "counting" and item["fps"] == pytest.approx(12.0)
    with pytest.warns(UserWarning):
        fixed = ClipDataset(tmp_path, num_frames=5, size=8, random_start=False)
    assert fixed[0]["video"][0, 0, 0, 0].item() == -1.0  # starts at frame 0


def test_image_dataset_uses_stills_or_falls_back_to_clip_frames(shapes_dataset, tmp_path):
    stills = ImageCaptionDataset(shapes_dataset, size=32)
    assert len(stills) == 12
    assert all(parse_caption(r["caption"]).kind == "still" for r in stills.records)
    assert stills[0]["image"].shape == (3, 32, 32)
    manifest = tmp_path / "clips.jsonl"
    lines = (shapes_dataset / "clips.jsonl").read_text().splitlines()
    manifest.write_text(
        "".join(
            json.dumps({**json.loads(line), "path": str(shapes_dataset / json.loads(line)["path"])})
            + "\n"
            for line in lines
        )
    )
    frames = ImageCaptionDataset(manifest, size=16, seed=0)
    assert len(frames) == 6 and frames[0]["image"].shape == (3, 16, 16)


def test_split_is_seeded_and_disjoint():
    records = [{"path": str(i)} for i in range(40)]
    train, val = split_records(records, 0.1, seed=0)
    assert len(val) == 4 and len(train) == 36
    assert {r["path"] for r in train}.isdisjoint({r["path"] for r in val})
    assert split_records(records, 0.1, seed=0) == (train, val)
    assert split_records(records, 0.1, seed=1)[1] != val
    assert len(split_records(records[:3], 0.01, seed=0)[1]) == 1
    assert split_records(records, 0.0, seed=0)[1] == []


def test_data_modules_batch_captions_as_lists(shapes_dataset):
    images = ImageDataModule(str(shapes_dataset), size=16, batch_size=4, val_fraction=0.25)
    images.setup("fit")
    batch = next(iter(images.train_dataloader()))
    assert batch["image"].shape == (4, 3, 16, 16)
    assert isinstance(batch["caption"], list) and all(isinstance(c, str) for c in batch["caption"])
    assert len(images.val_set) == 3 and len(images.train_set) == 9
    clips = ClipDataModule(
        str(shapes_dataset), num_frames=6, size=16, strides=(1, 2), batch_size=2, val_fraction=0.2
    )
    clips.setup("fit")
    batch = next(iter(clips.train_dataloader()))
    assert batch["video"].shape == (2, 3, 6, 16, 16)
    assert batch["fps"].tolist() == [24.0 / s for s in batch["stride"].tolist()]
    val = next(iter(clips.val_dataloader()))
    again = next(iter(clips.val_dataloader()))
    assert torch.equal(val["video"], again["video"])  # validation windows are fixed
