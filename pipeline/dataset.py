"""`animatic dataset`: a procedural dataset, in the format users give their own data.

Worlds: `shapes` (the shapes world: captioned clips and stills, shared/shapes_world.md) and
`layers` (real pictures moving as layers, with every pixel's motion: pipeline.layers).

Layout of DIR (everything relative, so the folder can be moved):
  dataset.json   generator, parameters and seed (identifies the folder; resume must match it)
  clips/NNNNNN.avi + clips.jsonl     lossless video (PNG frames in AVI) and one JSON line per clip
  stills/NNNNNN.png + stills.jsonl   keyframe-stage stills with still captions; each still's
                                     `captions` also holds PHRASINGS other phrasings of it
                                     (pipeline.phrasings, docs/phrasings.md), one drawn per step
Every file is a pure function of (parameters, seed, index): files are written atomically, a rerun
skips the ones already there, and the manifests are rebuilt from scratch at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import multiprocessing
import os
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from keyframe.errors import UserError
from pipeline.layers import dataset as layers_dataset
from pipeline.phrasings import phrasings
from pipeline.shapes import (
    FPS,
    clip_caption,
    clip_centres,
    describe_still,
    random_clip_scene,
    random_still_scene,
    render_clip,
    render_still,
    still_caption,
)
from pipeline.shapes.world import position_word

WORLDS = ("shapes", "layers")
FORMAT = "animatic-dataset"
VERSION = 1  # bump whenever generation changes, so old folders are never silently extended
MIN_SIZE = 16
MAX_SIZE = 4096
CLIPS_MANIFEST = "clips.jsonl"
STILLS_MANIFEST = "stills.jsonl"
TEMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"
_CLIP_STREAM, _STILL_STREAM = 0, 1  # separate random streams per (seed, stream, index)
_PHRASING_STREAM = 2
PHRASINGS = 6  # training phrasings per still besides its canonical caption


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("world", metavar="WORLD", help="the world to generate: shapes or layers")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty)")
    parser.add_argument("--clips", type=int, default=1000, metavar="N", help="video clips")
    parser.add_argument(
        "--stills", type=int, default=None, metavar="N", help="stills (default: 4 per clip)"
    )
    parser.add_argument("--size", type=int, default=64, metavar="S", help="frame side in pixels")
    parser.add_argument("--frames", type=int, default=48, metavar="F", help="frames per clip")
    parser.add_argument("--seed", type=int, default=0, metavar="K", help="random seed")
    parser.add_argument(
        "--max-objects", type=int, default=2, metavar="M", help="objects per scene: 1 to M (1-2)"
    )
    parser.add_argument("--workers", type=int, default=1, metavar="W", help="worker processes")
    layers = parser.add_argument_group("layers world")
    layers.add_argument(
        "--images",
        nargs="+",
        metavar="DIR",
        help="folders of pictures: photos and textures (backgrounds, cut-outs) and images with "
        "alpha (sprites); default: Debian's /usr/share/backgrounds and openclipart-png",
    )
    layers.add_argument(
        "--cel-share", type=float, default=0.3, metavar="P", help="share of cel-style clips (0.3)"
    )
    layers.add_argument(
        "--split",
        choices=("train", "eval"),
        default="train",
        help="pictures to draw from: train (nine in ten files) or eval (the tenth kept out)",
    )


def _check_args(args: argparse.Namespace) -> dict:
    """Validate the options and return the generator parameters recorded in dataset.json."""
    if args.world not in WORLDS:
        raise UserError(f"unknown world {args.world!r}; expected one of: {', '.join(WORLDS)}")
    stills = 4 * args.clips if args.stills is None else args.stills
    checks = [
        ("--clips", args.clips, 0, None),
        ("--stills", stills, 0, None),
        ("--size", args.size, MIN_SIZE, MAX_SIZE),
        ("--frames", args.frames, 2, None),
        ("--seed", args.seed, 0, None),
        ("--max-objects", args.max_objects, 1, 2),
        ("--workers", args.workers, 1, None),
    ]
    for flag, value, lo, hi in checks:
        if value < lo or (hi is not None and value > hi):
            expected = f"at least {lo}" if hi is None else f"from {lo} to {hi}"
            raise UserError(f"{flag} {value}: expected an integer {expected}")
    if args.clips + stills == 0:
        raise UserError("--clips and --stills are both 0: nothing to write")
    if args.world == "layers":
        if args.stills:
            raise UserError("--stills: the layers world makes clips only")
        return layers_dataset.check_params(args)
    return {
        "world": args.world,
        "clips": args.clips,
        "stills": stills,
        "size": args.size,
        "frames": args.frames,
        "fps": FPS,
        "seed": args.seed,
        "max_objects": args.max_objects,
    }


# ---------------------------------------------------------------- the folder


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _info(params: dict, complete: bool) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "params": params,
        "clips_manifest": CLIPS_MANIFEST,
        "stills_manifest": STILLS_MANIFEST,
        "video": "AVI, PNG frames (fourcc MPNG): lossless RGB",
        "complete": complete,
    }


def _write_info(out: Path, params: dict, complete: bool) -> None:
    text = json.dumps(_info(params, complete), indent=2) + "\n"
    _write_atomic(out / "dataset.json", text.encode())


def _prepare_folder(out: Path, params: dict) -> None:
    """Create DIR, or accept it only if it is empty or this very dataset (same parameters)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    info_path = out / "dataset.json"
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
            old = info["params"] if info.get("format") == FORMAT else None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"{info_path}: not a readable animatic dataset.json ({err})") from None
        if old is None or info.get("version") != VERSION:
            raise UserError(f"{info_path}: made by another generator or version; use a new folder")
        changed = [
            f"{k} {old.get(k)!r} (asked {v!r})" for k, v in params.items() if old.get(k) != v
        ]
        if changed:
            raise UserError(
                f"--out {out}: holds a dataset made with other parameters: {'; '.join(changed)}; "
                "rerun with the same ones to resume, or choose a new folder"
            )
    elif out.is_dir() and any(out.iterdir()):
        raise UserError(
            f"--out {out}: folder is not empty and has no dataset.json; "
            "refusing to write into it (choose a new or empty folder)"
        )
    try:
        for sub in (out, out / "clips", out / "stills"):
            sub.mkdir(parents=True, exist_ok=True)
        if not info_path.is_file():
            _write_info(out, params, complete=False)
    except OSError as err:
        raise UserError(f"--out {out}: cannot write there ({err.strerror or err})") from None


@contextlib.contextmanager
def _locked(out: Path):
    """One writer per folder: a lock file holding the pid, taken over if that process is gone."""
    lock = out / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            pid = "unknown"
            try:
                pid = int(lock.read_text().strip() or 0)
                if pid <= 0:
                    raise ValueError("no pid in the lock file")
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # stale: its writer died
                continue
            except PermissionError:
                pass
            raise UserError(f"--out {out}: another process (pid {pid}) is writing it") from None
    else:
        raise UserError(f"--out {out}: cannot take {lock}")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


def _clean_temporaries(out: Path) -> None:
    """Remove half-written files left by an interrupted run (finished files never are)."""
    for folder in (out, out / "clips", out / "stills"):
        for path in folder.glob(f"{TEMP_PREFIX}*"):
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------- items


def _name(index: int, count: int, suffix: str) -> str:
    return f"{index:0{max(6, len(str(max(count - 1, 0))))}d}{suffix}"


def clip_scene(params: dict, index: int):
    rng = np.random.default_rng([params["seed"], _CLIP_STREAM, index])
    return random_clip_scene(rng, params["max_objects"])


def still_scene(params: dict, index: int):
    # The first object of still i sits in cell i % 9, so any 9 consecutive stills cover the grid.
    rng = np.random.default_rng([params["seed"], _STILL_STREAM, index])
    return random_still_scene(rng, cell=index % 9, max_objects=params["max_objects"])


def _r(v: float) -> float:
    return round(float(v), 6)


def _object_record(obj) -> dict:
    return {"shape": obj.shape, "colour": obj.colour, "size": obj.size, "radius": obj.radius}


def clip_record(params: dict, index: int) -> dict:
    """The manifest line of clip `index`, with every object's centre in every frame."""
    scene = clip_scene(params, index)
    centres = clip_centres(scene, params["frames"], params["fps"])
    objects = []
    for k, obj in enumerate(scene.objects):
        start = [_r(obj.x), _r(obj.y), _r(obj.vx), _r(obj.vy)]
        track = [[_r(x), _r(y)] for x, y in centres[:, k]]
        objects.append({**_object_record(obj), "start": start, "centres": track})
    return {
        "path": f"clips/{_name(index, params['clips'], '.avi')}",
        "caption": clip_caption(scene),
        "fps": params["fps"],
        "frames": params["frames"],
        "width": params["size"],
        "height": params["size"],
        "background": scene.background,
        "objects": objects,
    }


def still_record(params: dict, index: int) -> dict:
    scene = still_scene(params, index)
    objects = [
        {**_object_record(o), "centre": [_r(o.x), _r(o.y)], "position": position_word(o.x, o.y)}
        for o in scene.objects
    ]
    caption = still_caption(scene)
    rng = np.random.default_rng([params["seed"], _PHRASING_STREAM, index])
    others = phrasings(describe_still(scene), rng, PHRASINGS)
    return {
        "path": f"stills/{_name(index, params['stills'], '.png')}",
        "caption": caption,
        "captions": [caption, *(text for text in others if text != caption)],
        "width": params["size"],
        "height": params["size"],
        "background": scene.background,
        "objects": objects,
    }


def write_video_lossless(path: Path, frames: np.ndarray, fps: float) -> None:
    """(f, h, w, 3) uint8 RGB -> AVI with PNG frames, written to a temporary name then renamed."""
    tmp = path.with_name(f"{TEMP_PREFIX}{path.stem}.{os.getpid()}.avi")  # OpenCV wants .avi
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"MPNG"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write a PNG-in-AVI video at {tmp}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    os.replace(tmp, path)


def _write_clip(out: str, params: dict, index: int) -> int:
    name = _name(index, params["clips"], ".avi")
    if params["world"] == "layers":
        layers_dataset.write_clip(Path(out), params, index, name, write_video_lossless)
        return index
    scene = clip_scene(params, index)
    frames = render_clip(scene, params["size"], params["frames"], params["fps"])
    write_video_lossless(Path(out) / "clips" / _name(index, params["clips"], ".avi"), frames, FPS)
    return index


def _clip_record(params: dict, index: int) -> dict:
    if params["world"] == "layers":
        name = _name(index, params["clips"], ".avi")
        return layers_dataset.clip_record(params, index, name)
    return clip_record(params, index)


def _write_still(out: str, params: dict, index: int) -> int:
    image = render_still(still_scene(params, index), params["size"])
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError("OpenCV could not encode a PNG")
    _write_atomic(Path(out) / "stills" / _name(index, params["stills"], ".png"), png.tobytes())
    return index


def _run_jobs(job, indices: list[int], workers: int, desc: str) -> float:
    """Run job(index) for every index, in worker processes if asked; returns seconds taken."""
    start = time.perf_counter()
    with tqdm(total=len(indices), desc=desc, unit=desc.rstrip("s"), disable=None) as bar:
        if workers == 1 or len(indices) < 2:
            for i in indices:
                job(i)
                bar.update()
        else:
            chunk = max(1, min(16, len(indices) // (8 * workers)))
            with multiprocessing.get_context().Pool(workers) as pool:
                for _ in pool.imap_unordered(job, indices, chunksize=chunk):
                    bar.update()
    return time.perf_counter() - start


def _write_manifest(path: Path, records) -> None:
    _write_atomic(path, "".join(json.dumps(r) + "\n" for r in records).encode())


def _rate(count: int, seconds: float, unit: str) -> str:
    if count == 0:
        return f"{unit}: all already there"
    per_second = count / seconds if seconds > 0 else math.inf
    return f"{unit}: {count} written in {seconds:.1f} s ({per_second:.1f} {unit}/s)"


def run(args: argparse.Namespace) -> int:
    params = _check_args(args)
    out = Path(args.out)
    _prepare_folder(out, params)
    try:
        with _locked(out):
            _clean_temporaries(out)
            todo = {}
            for kind, count in (("clips", params["clips"]), ("stills", params["stills"])):
                suffix = ".avi" if kind == "clips" else ".png"
                have = set(os.listdir(out / kind))
                todo[kind] = [i for i in range(count) if _name(i, count, suffix) not in have]
            clip_job = functools.partial(_write_clip, str(out), params)
            clip_seconds = _run_jobs(clip_job, todo["clips"], args.workers, "clips")
            still_job = functools.partial(_write_still, str(out), params)
            still_seconds = _run_jobs(still_job, todo["stills"], args.workers, "stills")
            clips = (_clip_record(params, i) for i in range(params["clips"]))
            _write_manifest(out / CLIPS_MANIFEST, clips)
            stills = (still_record(params, i) for i in range(params["stills"]))
            _write_manifest(out / STILLS_MANIFEST, stills)
            _write_info(out, params, complete=True)
    except OSError as err:
        raise UserError(f"--out {out}: write failed ({err})") from None
    print(_rate(len(todo["clips"]), clip_seconds, "clips"), f"(workers {args.workers})")
    print(_rate(len(todo["stills"]), still_seconds, "stills"))
    print(f"dataset: {out} ({params['clips']} clips, {params['stills']} stills)")
    return 0
