"""The bad inputs `scripts/bad_inputs.py` tries, and the scratch folder they refer to ({w})."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from pipeline import io
from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]

HELD = ["held.mp4", "heldboard", "heldtween.mp4"]  # outputs another process holds the lock of
GOOD = """\
size: 32
fps: 12
panels:
  - prompt: a large red circle at the top left on a navy background
    duration: 6
  - prompt: a small blue square at the bottom on a teal background
    duration: 6
"""
PANEL = "  - prompt: a large red circle at the top left on a navy background\n"
SHOT_LISTS = {  # name -> text of a shot list with one thing wrong
    "yaml": "panels: [\n",
    "nopanels": "title: nothing\n",
    "empty": "panels: []\n",
    "notlist": "panels: 3\n",
    "topkey": "colour: red\npanels:\n" + PANEL,
    "panelkey": "panels:\n" + PANEL + "    colour: red\n",
    "size7": "size: 7\npanels:\n" + PANEL,
    "size5000": "size: 5000\npanels:\n" + PANEL,
    "size1": "size: [64]\npanels:\n" + PANEL,
    "fps0": "fps: 0\npanels:\n" + PANEL,
    "fpsneg": "fps: -24\npanels:\n" + PANEL,
    "fps1000": "fps: 1000\npanels:\n" + PANEL,
    "durneg": "panels:\n" + PANEL + "    duration: -1s\n",
    "durword": "panels:\n" + PANEL + "    duration: long\n",
    "dur0": "panels:\n" + PANEL + "    duration: 0\n",
    "hold": "panels:\n" + PANEL + "    duration: 6\n    hold: 9\n" + PANEL,
    "transition": "panels:\n" + PANEL + "    transition: wipe\n",
    "steps0": "steps: 0\npanels:\n" + PANEL,
    "steps5000": "panels:\n" + PANEL + "    steps: 5000\n",
    "guidance": "guidance: 1.0e+30\npanels:\n" + PANEL,
    "guidancenan": "guidance: .nan\npanels:\n" + PANEL,
    "seedneg": "seed: -1\npanels:\n" + PANEL,
    "seedbig": "seed: 36893488147419103232\npanels:\n" + PANEL,
    "noprompt": "panels:\n  - duration: 6\n",
    "imagemissing": "panels:\n  - image: nowhere.png\n",
    "imagetext": "panels:\n  - image: notes.txt\n",
    "imagehuge": "panels:\n  - image: huge.png\n",
    "toolong": "panels:\n" + PANEL + "    duration: 99999999\n",
    "loop": "loop: maybe\npanels:\n" + PANEL,
    "share": "consistency: true\nnoise_share: 2\npanels:\n" + PANEL,
    "models": "models: {keyframe: 3}\npanels:\n" + PANEL,
    "duplicate": "fps: 12\nfps: 24\npanels:\n" + PANEL,
    "big": "size: 4096\npanels:\n" + PANEL,
    "notacaption": "panels:\n  - prompt: a cat on a sofa\n",
}


class Payload:
    """Unpickling this would create {w}/PAYLOAD-RAN: proof that a loader ran the pickle."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def png_header(path: Path, width: int, height: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def _run(argv: list[str]) -> None:
    if main(argv) != 0:
        raise RuntimeError(f"setting up: animatic {' '.join(argv)} failed")


def _boards(w: Path) -> None:
    """A good storyboard, and copies of it each with one thing wrong in its manifest or files."""
    _run(["storyboard", str(w / "shots.yaml"), "--out", str(w / "board"),
          "--keyframe-model", "oracle", "--quiet"])  # fmt: skip
    record = json.loads((w / "board" / "storyboard.json").read_text())
    edits = {
        "escape": lambda r: r["panels"][0].update(file="../notes.txt"),
        "abs": lambda r: r["panels"][0].update(file="/etc/hostname"),
        "deep": lambda r: r["panels"][1].update(file="../../../../../../etc/hostname"),
        "format": lambda r: r.update(format="something-else"),
        "version": lambda r: r.update(version=9),
        "incomplete": lambda r: r.update(complete=False),
        "timing": lambda r: r["panels"][0].update(duration="long"),
        "size": lambda r: r.update(width=48),
    }
    for name, edit in edits.items():
        folder = w / f"board_{name}"
        shutil.copytree(w / "board", folder)
        copy = json.loads(json.dumps(record))
        edit(copy)
        (folder / "storyboard.json").write_text(json.dumps(copy))
    shutil.copytree(w / "board", w / "board_json")
    (w / "board_json" / "storyboard.json").write_text("{ not json")
    shutil.copytree(w / "board", w / "board_missing")
    (w / "board_missing" / record["panels"][1]["file"]).unlink()


def _data(w: Path) -> None:
    """A tiny dataset, one with a quarter of its stills unreadable, and broken manifests."""
    _run(["dataset", "shapes", "--out", str(w / "data"), "--clips", "2", "--stills", "8",
          "--size", "32", "--frames", "12", "--seed", "1"])  # fmt: skip
    shutil.copytree(w / "data", w / "damaged")
    for still in sorted((w / "damaged" / "stills").glob("*.png"))[:2]:
        still.write_bytes(b"not a png")
    for name in ("nocaps", "stills_only"):
        (w / name).mkdir()
        for i in range(3):
            io.write_png(w / name / f"img{i}.png", np.full((32, 32, 3), 50 * i, np.uint8))
            if name == "stills_only":
                (w / name / f"img{i}.txt").write_text("a grey square")
    (w / "bad.jsonl").write_text('{"path": "k1.png", "caption": "a key"}\n{not json\n')
    (w / "nocap.jsonl").write_text('{"path": "k1.png"}\n')
    (w / "missing.jsonl").write_text('{"path": "gone.png", "caption": "gone"}\n')
    (w / "nopath.csv").write_text("file,text\nk1.png,a key\n")


def make_workspace(w: Path) -> None:
    w.mkdir(parents=True)
    (w / "shots.yaml").write_text(GOOD)
    for name, text in SHOT_LISTS.items():
        (w / f"sl_{name}.yaml").write_text(text)
    (w / "sl_utf16.yaml").write_bytes(GOOD.encode("utf-16"))
    for i in (1, 2):
        io.write_png(w / f"k{i}.png", np.full((16, 16, 3), 80 * i, np.uint8))
    png_header(w / "huge.png", 12000, 9000)
    (w / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (w / "notes.txt").write_text("the user's notes")
    (w / "film.mp4").write_bytes(b"the user's film")
    (w / "file").write_text("a plain file")
    (w / "foreign").mkdir()
    (w / "foreign" / "a.txt").write_text("someone else's")
    (w / "empty_keys").mkdir()
    payload = {"x": Payload(w / "PAYLOAD-RAN")}
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": payload}, w / "evil.ckpt")
    (w / "junk.ckpt").write_bytes(bytes(range(256)) * 4)
    (w / "cut.ckpt").write_bytes((w / "evil.ckpt").read_bytes()[:300])
    (w / "config_bad.yaml").write_text("model:\n  bogus_key: 3\n")
    shutil.copytree(ROOT / "keyframe" / "weights" / "shapes", w / "exported")
    _boards(w)
    _data(w)


TRAIN = (
    "train keyframe fit --config configs/keyframe/tiny.yaml --data.data {w}/data "
    "--trainer.default_root_dir {w}/run --trainer.max_steps 2"
)
TRAIN_I = TRAIN.replace("keyframe", "interpolate")
KEYS = "{w}/k1.png {w}/k2.png"
SB = "storyboard {w}/shots.yaml --out {w}/b --keyframe-model oracle"
RENDER = "render {w}/board --out {w}/f.gif --animatic"


def _shot_list_cases() -> list[tuple[str, str]]:
    described = {
        "yaml": "YAML syntax error", "nopanels": "no panels", "empty": "an empty panel list",
        "notlist": "panels not a list", "topkey": "an unknown key", "panelkey":
        "an unknown panel key", "size7": "size 7", "size5000": "size 5000", "size1":
        "size [64]", "fps0": "fps 0", "fpsneg": "fps -24", "fps1000": "fps 1000", "durneg":
        "duration -1s", "durword": "duration 'long'", "dur0": "duration 0", "hold":
        "hold longer than the duration", "transition": "transition 'wipe'", "steps0":
        "steps 0", "steps5000": "steps 5000", "guidance": "guidance 1e30", "guidancenan":
        "guidance NaN", "seedneg": "seed -1", "seedbig": "seed 2**65", "noprompt":
        "a panel with neither prompt nor image", "imagemissing": "a missing image",
        "imagetext": "an image that is a text file", "imagehuge": "a 12000x9000 image",
        "toolong": "a film of 99999999 frames", "loop": "loop 'maybe'", "share":
        "noise_share 2", "duplicate": "a key given twice",
        "notacaption": "a prompt the oracle cannot draw",
    }  # fmt: skip
    cases = [(f"shot list: {text}", f"storyboard {{w}}/sl_{name}.yaml --out {{w}}/b "
              "--keyframe-model oracle") for name, text in described.items()]  # fmt: skip
    cases.append(("shot list: an unknown keyframe model", "storyboard {w}/sl_models.yaml "
                  "--out {w}/b"))  # fmt: skip
    cases.append(("shot list: UTF-16 text", SB.replace("shots.yaml", "sl_utf16.yaml")))
    cases.append(("shot list: 4096 px for a 64 px model",
                  "storyboard {w}/sl_big.yaml --out {w}/b --keyframe-model shapes"))  # fmt: skip
    return cases


CASES: list[tuple[str, str]] = [
    # storyboard
    ("a missing shot list", "storyboard {w}/nope.yaml --out {w}/b"),
    ("a folder for a shot list", "storyboard {w}/foreign --out {w}/b"),
    *_shot_list_cases(),
    ("a panel number out of range", SB + " --panel 9"),
    ("a panel list that is not numbers", SB + " --panel first"),
    ("--seed without --panel", SB + " --seed 3"),
    ("a panel locked and unlocked", SB + " --lock 1 --unlock 1"),
    ("--noise-share without --consistency", SB + " --noise-share 0.5"),
    ("--noise-share 3", SB + " --consistency --noise-share 3"),
    ("--batch-size 0", SB + " --batch-size 0"),
    ("an unknown keyframe model", SB.replace("oracle", "nope")),
    ("a checkpoint with a pickle payload", SB.replace("oracle", "{w}/evil.ckpt")),
    ("a checkpoint of random bytes", SB.replace("oracle", "{w}/junk.ckpt")),
    ("--out is a file", SB.replace("{w}/b", "{w}/file")),
    ("--out under a file", SB.replace("{w}/b", "{w}/file/b")),
    ("--out a folder that is not a storyboard", SB.replace("{w}/b", "{w}/foreign")),
    ("--out on a read-only file system", SB.replace("{w}/b", "/sys/animatic-board")),
    ("a manifest file name '../notes.txt'", SB.replace("{w}/b", "{w}/board_escape")),
    ("a manifest file name '/etc/hostname'", SB.replace("{w}/b", "{w}/board_abs")),
    ("a manifest that is not JSON", SB.replace("{w}/b", "{w}/board_json")),
    ("a manifest of another format", SB.replace("{w}/b", "{w}/board_format")),
    ("a manifest of version 9", SB.replace("{w}/b", "{w}/board_version")),
    ("a board another run is writing", SB.replace("{w}/b", "{w}/heldboard")),
    # render
    ("a missing shot list", "render {w}/nope.yaml --out {w}/f.gif"),
    ("an .avi output", RENDER.replace("f.gif", "f.avi")),
    ("an existing film without --overwrite", RENDER.replace("f.gif", "film.mp4")),
    ("--out under a file", RENDER.replace("{w}/f.gif", "{w}/file/f.gif")),
    ("--out on a read-only file system", RENDER.replace("{w}/f.gif", "/sys/film.mp4")),
    ("a folder that is not a storyboard", RENDER.replace("{w}/board", "{w}/foreign")),
    ("an interrupted storyboard", RENDER.replace("board", "board_incomplete")),
    ("a storyboard with a panel missing", RENDER.replace("board", "board_missing")),
    ("a storyboard whose panels are not its size", RENDER.replace("board", "board_size")),
    ("a panel file '../notes.txt'", RENDER.replace("board", "board_escape")),
    ("a panel file '../../../etc/hostname'", RENDER.replace("board", "board_deep")),
    ("bad timing in the manifest", RENDER.replace("board", "board_timing")),
    ("--storyboard with a storyboard folder", RENDER + " --storyboard {w}/board"),
    ("--context -1", "render {w}/board --out {w}/f.gif --tween-model crossfade --context -1"),
    ("an unknown tween model", "render {w}/board --out {w}/f.gif --tween-model nope"),
    (
        "a checkpoint with a pickle payload",
        "render {w}/board --out {w}/f.gif --tween-model {w}/evil.ckpt",
    ),  # fmt: skip
    ("a film another run is writing", RENDER.replace("f.gif", "held.mp4")),
    (
        "a --work folder that is not animatic's",
        RENDER + " --tween-model crossfade --work {w}/foreign",
    ),  # fmt: skip
    ("a film of 99999999 frames", "render {w}/sl_toolong.yaml --out {w}/f.gif --animatic"),
    # tween
    ("missing keys", "tween {w}/no1.png {w}/no2.png --out {w}/t.mp4"),
    ("a folder among the keys", "tween {w}/k1.png {w}/foreign --out {w}/t.mp4"),
    ("a folder without images", "tween {w}/empty_keys --out {w}/t.mp4"),
    ("a corrupt key", "tween {w}/corrupt.png {w}/k2.png --out {w}/t.mp4"),
    ("a 12000x9000 key", "tween {w}/huge.png {w}/k2.png --out {w}/t.mp4"),
    ("a text file as a key", "tween {w}/notes.txt {w}/k2.png --out {w}/t.mp4"),
    ("--between 1000000", f"tween {KEYS} --out {{w}}/t.mp4 --between 1000000"),
    ("--between -1", f"tween {KEYS} --out {{w}}/t.mp4 --between -1"),
    ("--timing that is not numbers", f"tween {KEYS} --out {{w}}/t.mp4 --timing a,b"),
    ("--timing not increasing", f"tween {KEYS} --out {{w}}/t.mp4 --timing 5,3"),
    ("--timing for three keys", f"tween {KEYS} --out {{w}}/t.mp4 --timing 0,5,9"),
    ("--timing below 0", f"tween {KEYS} --out {{w}}/t.mp4 --timing -1,5"),
    ("--timing 0,99999999", f"tween {KEYS} --out {{w}}/t.mp4 --timing 0,99999999"),
    ("one key without --between", "tween {w}/k1.png --out {w}/t.mp4"),
    ("--guidance nan", f"tween {KEYS} --out {{w}}/t.mp4 --guidance nan"),
    ("--guidance 1e30", f"tween {KEYS} --out {{w}}/t.mp4 --guidance 1e30"),
    ("--guidance -1", f"tween {KEYS} --out {{w}}/t.mp4 --guidance -1"),
    ("--fps 0", f"tween {KEYS} --out {{w}}/t.mp4 --fps 0"),
    ("--fps inf", f"tween {KEYS} --out {{w}}/t.mp4 --fps inf"),
    ("--fps 1e30", f"tween {KEYS} --out {{w}}/t.mp4 --fps 1e30"),
    ("--seed -1", f"tween {KEYS} --out {{w}}/t.mp4 --seed -1"),
    ("--steps 0", f"tween {KEYS} --out {{w}}/t.mp4 --steps 0"),
    ("--init-sigma nan", f"tween {KEYS} --out {{w}}/t.mp4 --init-sigma nan"),
    ("--init-sigma 0", f"tween {KEYS} --out {{w}}/t.mp4 --init-sigma 0"),
    ("--sampler ddim", f"tween {KEYS} --out {{w}}/t.mp4 --sampler ddim"),
    ("an unknown model", f"tween {KEYS} --out {{w}}/t.mp4 --model nope"),
    (
        "a checkpoint with a pickle payload",
        f"tween {KEYS} --out {{w}}/t.mp4 --model {{w}}/evil.ckpt",
    ),  # fmt: skip
    ("a truncated checkpoint", f"tween {KEYS} --out {{w}}/t.mp4 --model {{w}}/cut.ckpt"),
    ("an .avi output", f"tween {KEYS} --out {{w}}/t.avi"),
    ("an existing output", f"tween {KEYS} --out {{w}}/film.mp4"),
    ("an output another run is writing", f"tween {KEYS} --out {{w}}/heldtween.mp4"),
    ("--out on a read-only file system", f"tween {KEYS} --out /sys/t.mp4"),
    # keyframe
    *[
        (f"keyframe {option}", f"keyframe 'a red circle' --out {{w}}/k.png {option}")
        for option in (
            "--guidance 1e30",
            "--guidance nan",
            "--guidance -1",
            "--size 4096",
            "--size 9",
            "--size 0",
            "--steps 0",
            "--steps 5000",
            "--num 0",
            "--num 1000",
            "--seed -1",
            "--sampler ddim",
            "--model nope",
            "--model {w}/evil.ckpt",
            "--model {w}/junk.ckpt",
            "--model {w}/cut.ckpt",
            "--device tpu9",
        )
    ],  # fmt: skip
    ("a .jpg output", "keyframe 'a red circle' --out {w}/k.jpg"),
    ("an existing output", "keyframe 'a red circle' --out {w}/k1.png"),
    ("--out on a read-only file system", "keyframe 'a red circle' --out /sys/k.png"),
    # export
    *[
        (f"export {stage} of a pickle payload", f"export {stage} {{w}}/evil.ckpt --out {{w}}/e")
        for stage in ("keyframe", "interpolate", "autoencoder", "motion")
    ],  # fmt: skip
    ("a missing checkpoint", "export keyframe {w}/gone.ckpt --out {w}/e"),
    ("a checkpoint of random bytes", "export keyframe {w}/junk.ckpt --out {w}/e"),
    ("a truncated checkpoint", "export interpolate {w}/cut.ckpt --out {w}/e"),
    ("--int8 for an autoencoder", "export autoencoder {w}/evil.ckpt --out {w}/e --int8"),
    (
        "a decoder with a pickle payload",
        "export keyframe shapes --out {w}/e --autoencoder {w}/evil.ckpt",
    ),  # fmt: skip
    ("an existing export folder", "export keyframe shapes --out {w}/exported"),
    # train
    ("--data.batch_size 0", TRAIN + " --data.batch_size 0"),
    ("--data.num_workers -1", TRAIN + " --data.num_workers -1"),
    ("--data.max_bad_fraction 2", TRAIN + " --data.max_bad_fraction 2"),
    ("--data.val_fraction 1.5", TRAIN + " --data.val_fraction 1.5"),
    ("an unknown config key", TRAIN + " --config {w}/config_bad.yaml"),
    ("a value of the wrong type", TRAIN + " --model.num_heads two"),
    ("a missing config file", TRAIN + " --config {w}/nope.yaml"),
    ("--trainer.precision 7", TRAIN + " --trainer.precision 7"),
    (
        "--trainer.strategy fsdp on a CPU",
        TRAIN + " --trainer.strategy fsdp --trainer.accelerator cpu --trainer.devices 2",
    ),  # fmt: skip
    ("a missing --ckpt_path", TRAIN + " --ckpt_path {w}/gone.ckpt"),
    ("--ckpt_path with a pickle payload", TRAIN + " --ckpt_path {w}/evil.ckpt"),
    ("--model.init_from missing", TRAIN + " --model.init_from {w}/gone.ckpt"),
    ("--model.init_from with a pickle payload", TRAIN + " --model.init_from {w}/evil.ckpt"),
    ("interpolate init_from a pickle payload", TRAIN_I + " --model.init_from {w}/evil.ckpt"),
    ("--model.autoencoder with a pickle payload", TRAIN + " --model.autoencoder {w}/evil.ckpt"),
    ("a missing data folder", TRAIN.replace("{w}/data", "{w}/nodata")),
    ("images without captions", TRAIN.replace("{w}/data", "{w}/nocaps")),
    ("a JSONL manifest with a bad line", TRAIN.replace("{w}/data", "{w}/bad.jsonl")),
    ("a JSONL manifest without captions", TRAIN.replace("{w}/data", "{w}/nocap.jsonl")),
    ("a JSONL manifest naming a missing file", TRAIN.replace("{w}/data", "{w}/missing.jsonl")),
    ("a CSV manifest without a path column", TRAIN.replace("{w}/data", "{w}/nopath.csv")),
    ("a text file as data", TRAIN.replace("{w}/data", "{w}/notes.txt")),
    ("interpolation data without videos", TRAIN_I.replace("{w}/data", "{w}/stills_only")),
    (
        "25% unreadable images (limit 1%)",
        TRAIN.replace("{w}/data", "{w}/damaged") + " --data.max_bad_fraction 0.01",
    ),  # fmt: skip
    # dataset and eval
    ("--clips -1", "dataset shapes --out {w}/d --clips -1"),
    ("--size 7", "dataset shapes --out {w}/d --size 7"),
    ("--out is a file", "dataset shapes --out {w}/file"),
    ("--out a folder that is not a dataset", "dataset shapes --out {w}/foreign"),
    ("a dataset folder made with other settings", "dataset shapes --out {w}/data --clips 3"),
    ("an unknown world", "dataset cubes --out {w}/d"),
    ("eval of a pickle payload", "eval keyframe --model {w}/evil.ckpt --out {w}/r.json"),
    ("eval of an unknown model", "eval tween --model nope --out {w}/r.json"),
]
