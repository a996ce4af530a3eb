"""`animatic dataset layers`: clips of the layers world, with every layer's motion.

Each clip is `clips/NNNNNN.avi` (lossless) and `clips/NNNNNN.npz`: `ids` (frames, h, w) uint8, the
top layer at every pixel, and the layers' motion (`sizes`, `affine`, `grid`; see
interpolate.layer_motion), from which the exact motion between any two frames follows. A clip is a
pure function of (the image folders' listing, seed, index), so reruns resume and match.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from keyframe.errors import UserError
from pipeline.layers.sources import Sources, find_sources
from pipeline.layers.world import motion_arrays, random_scene, render_scene

FPS = 24.0
DEFAULT_IMAGES = ("/usr/share/backgrounds", "/usr/share/openclipart/png")
_STREAM = 2  # random stream of layers clips (shapes uses 0 and 1)


def default_images() -> list[str]:
    """The image folders Debian's gnome-backgrounds / mate-backgrounds / openclipart-png give."""
    found = [folder for folder in DEFAULT_IMAGES if Path(folder).is_dir()]
    if not found:
        raise UserError(
            "dataset layers: no --images given and none of the default folders exist "
            f"({', '.join(DEFAULT_IMAGES)}); install them with `apt install gnome-backgrounds "
            "mate-backgrounds openclipart-png`, or give --images DIR ... (see docs/datasets.md)"
        )
    return found


def check_params(args) -> dict:
    """The generator parameters recorded in dataset.json (image folders resolved and listed)."""
    if not 0.0 <= args.cel_share <= 1.0:
        raise UserError(f"--cel-share {args.cel_share}: expected a share from 0 to 1")
    images = [str(Path(f).resolve()) for f in (args.images or default_images())]
    sources = find_sources(images, args.split)
    return {
        "world": "layers",
        "clips": args.clips,
        "stills": 0,
        "size": args.size,
        "frames": args.frames,
        "fps": FPS,
        "seed": args.seed,
        "cel_share": float(args.cel_share),
        "images": images,
        "split": args.split,
        "sources": sources.fingerprint(),
    }


_SOURCES: dict[tuple, Sources] = {}


def _sources(params: dict) -> Sources:
    key = (tuple(params["images"]), params["split"])
    if key not in _SOURCES:
        _SOURCES[key] = find_sources(list(key[0]), key[1])
        if _SOURCES[key].fingerprint() != params["sources"]:
            raise UserError(
                f"--images {' '.join(key[0])}: the folders' pictures changed since this dataset "
                "was started; use a new --out folder"
            )
    return _SOURCES[key]


def clip_scene(params: dict, index: int):
    rng = np.random.default_rng([params["seed"], _STREAM, index])
    cel = bool(rng.random() < params["cel_share"])
    return random_scene(rng, _sources(params), params["size"], params["frames"], cel)


def clip_record(params: dict, index: int, name: str) -> dict:
    """The manifest line of clip `index` (its scene is not drawn: the line is cheap)."""
    rng = np.random.default_rng([params["seed"], _STREAM, index])
    cel = bool(rng.random() < params["cel_share"])
    stem = name.rsplit(".", 1)[0]
    return {
        "path": f"clips/{name}",
        "motion": f"clips/{stem}.npz",
        "caption": "",
        "style": "cel" if cel else "photo",
        "fps": params["fps"],
        "frames": params["frames"],
        "width": params["size"],
        "height": params["size"],
    }


def write_clip(out: Path, params: dict, index: int, name: str, write_video) -> None:
    """Draw clip `index`; write its motion (.npz, atomically) and then its video."""
    scene = clip_scene(params, index)
    frames, ids = render_scene(scene)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, ids=ids, **motion_arrays(scene))
    motion = out / "clips" / f"{name.rsplit('.', 1)[0]}.npz"
    tmp = motion.with_name(f".tmp-{motion.name}.{os.getpid()}")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, motion)
    write_video(out / "clips" / name, frames, params["fps"])
