"""`animatic render`: a shot list (or a storyboard folder) -> a film (MP4, GIF or PNG sequence).

Rendering runs the storyboard first (reusing ``--storyboard DIR`` where its panels' hashes
match), then walks the frame plan segment by segment: holds repeat their panel's image; tweens
ask the interpolation model for the frames between two keys; ``cut`` segments continue from one
key alone (extension) and end in a hard cut. Key frames are the panel images exactly.

Every generated segment is stored losslessly in a work folder next to the output
(``FILM.mp4.parts/segment_003-<hash>.npz``), keyed by a content hash of its inputs (key pixels,
positions, seed, prompt, frame rate, model id), so a render stopped by Ctrl-C or a crash resumes
from the finished segments; the output file appears only when complete, and the work folder is
removed after (unless ``keep_parts``: then a later render after an edit redoes only the changed
segments). ``animatic=True`` holds each panel for its duration (no model): an instant preview.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import inspect
import json
import os
import secrets
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from keyframe.errors import UserError
from pipeline import editorial, io, locks, safety
from pipeline.devices import resolve_device
from pipeline.shotlist import ShotList, load_shotlist
from pipeline.storyboard import (
    MANIFEST,
    KeyframeFn,
    add_keyframe_model_argument,
    load_storyboard,
    model_id,
    model_name,
    plan_from_manifest,
    read_manifest,
    storyboard,
)
from pipeline.timeline import FramePlan, Segment, animatic_frames

# keys uint8 (k, h, w, 3), their frame numbers, the window's length, a seed -> every frame of
# the window, uint8 (num_frames, h, w, 3). A TweenFn that accepts `prompt=` and/or `fps=`
# keywords gets the panel's prompt and the film's frame rate; `model_id` names it in hashes.
TweenFn = Callable[..., np.ndarray]

BASELINES = ("crossfade", "flow")
PARTS_MARKER = ".animatic-parts"
DEFAULT_CONTEXT = 2


# ---------------------------------------------------------------------------------------------
# Tween models


def _baseline(name: str) -> TweenFn:
    """A model-free preview: ``crossfade``, or ``flow``, the flow in-betweens along parabolic
    paths that the shipped interpolator starts from (eval's `flow-paths`: a fraction of plain
    optical flow's double images)."""
    from pipeline import baselines

    tween = baselines.crossfade if name == "crossfade" else baselines.flow_paths

    def run(keys: np.ndarray, positions: list[int], num_frames: int, seed: int) -> np.ndarray:
        return tween(keys, positions, num_frames)

    run.model_id = "flow-paths" if name == "flow" else name
    return run


def pretrained_tween(name: str, device: str | None = None) -> TweenFn:
    """A trained interpolation model (name or path) as a TweenFn."""
    import torch

    from interpolate.inbetween import interpolate
    from interpolate.module import InterpolateModule

    try:
        model = InterpolateModule.from_pretrained(name, device=resolve_device(device))
    except UserError as err:
        hint = "for a preview use --tween-model crossfade or flow, or --animatic"
        raise UserError(f"interpolation {err}; {hint}") from None
    reads_text = model.text is not None

    def run(keys, positions, num_frames, seed, prompt=None, fps=None) -> np.ndarray:
        pixels = torch.stack([torch.from_numpy(io.from_uint8_rgb(key)) for key in keys])
        prompt = prompt if reads_text else None
        video = interpolate(model, pixels, positions, num_frames, seed=seed, prompt=prompt, fps=fps)
        return np.stack([io.to_uint8_rgb(video[:, f]) for f in range(video.shape[1])])

    run.model_id = model_name(name)
    return run


def general_tween(name: str, device: str | None = None) -> TweenFn:
    """A general interpolator (name or path) as a TweenFn: frames at the panels' own size."""
    from interpolate.general.pipeline import GeneralInterpolator

    pipe = GeneralInterpolator.from_pretrained(name, device=resolve_device(device))
    if not pipe.trained:
        print(f"animatic render: note: {name}: no trained motion network in this model; motion "
              "is its flow init (DIS flow between the keys)", file=sys.stderr)  # fmt: skip

    def run(keys, positions, num_frames, seed) -> np.ndarray:
        floats = [k.astype(np.float32) / 255 for k in keys]
        frames = pipe(floats, positions, num_frames, seed=seed)
        return np.stack([np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8) for f in frames])

    run.model_id = model_name(name)
    return run


def load_tween_model(name: str, device: str | None = None) -> TweenFn:
    """A TweenFn by name: a baseline (``crossfade``, ``flow``), a general interpolator, or a
    shapes-world interpolation model (name or path)."""
    from interpolate.general.names import is_general

    if name in BASELINES:
        return _baseline(name)
    if is_general(name):
        return general_tween(name, device)
    return pretrained_tween(name, device)


def _accepted(fn: Callable, names: Sequence[str]) -> set[str]:
    """Which of the keyword arguments ``names`` the callable takes."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return set(names)
    return {name for name in names if name in parameters}


# ---------------------------------------------------------------------------------------------
# Segments: pure frames in, frames out (with an optional cache)


@dataclass(frozen=True)
class SegmentJob:
    """One model call: known frames (context, then the keys) at positions in a window; the
    segment's frames are ``window[take_start : take_start + segment.num_frames]``."""

    index: int
    segment: Segment
    keys: np.ndarray
    positions: tuple[int, ...]
    num_frames: int
    take_start: int
    seed: int
    prompt: str | None
    key: str = field(default="", compare=False)


def segment_hash(job: SegmentJob, model: str, fps: float, kwargs: set[str]) -> str:
    """Content hash of everything that decides a segment's frames."""
    digest = hashlib.sha256()
    meta = {
        "kind": job.segment.kind,
        "positions": list(job.positions),
        "num_frames": job.num_frames,
        "take": [job.take_start, job.segment.num_frames],
        "seed": job.seed,
        "model": model,
        "prompt": job.prompt if "prompt" in kwargs else None,
        "fps": fps if "fps" in kwargs else None,
        "shape": list(job.keys.shape),
    }
    digest.update(json.dumps(meta, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(job.keys).tobytes())
    return digest.hexdigest()


class SegmentCache:
    """Finished segments as ``folder/segment_NNN-<hash>.npz`` (lossless), found by hash."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _name(self, index: int, key: str) -> Path:
        return self.folder / f"segment_{index:03d}-{key[:16]}.npz"

    def get(self, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
        for path in sorted(self.folder.glob(f"segment_*-{key[:16]}.npz")):
            try:
                with np.load(path) as data:
                    if str(data["key"]) == key and data["frames"].shape == shape:
                        return data["frames"]
            except (OSError, ValueError, KeyError):
                continue  # a damaged part is redone
        return None

    def put(self, index: int, key: str, frames: np.ndarray) -> None:
        with io.atomic_path(self._name(index, key)) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, frames=frames, key=np.array(key))


def shot_starts(plan: FramePlan) -> list[int]:
    """For each frame, the first frame of its shot (a shot ends at every cut)."""
    starts, start, previous = [], 0, None
    for segment in plan.segments:
        if segment.kind == "hold" and previous in (None, "cut"):
            start = segment.start_frame
        starts.extend([start] * segment.num_frames)
        previous = segment.kind
    return starts


def film_frames(
    plan: FramePlan,
    images: Sequence[np.ndarray],
    tween: TweenFn,
    seeds: Sequence[int],
    prompts: Sequence[str | None] | None = None,
    context: int = DEFAULT_CONTEXT,
    cache: SegmentCache | None = None,
    on_segment: Callable[[SegmentJob, bool], None] | None = None,
) -> Iterator[np.ndarray]:
    """Every frame of the film in order, uint8 (h, w, 3); keys are the panel images exactly.

    A tween's window holds up to ``context`` frames already made before its first key (never
    across a cut), that key, its in-betweens and the next key; a cut's window is the same
    without a next key. ``seeds``/``prompts`` are per panel (a segment takes its first
    panel's). ``on_segment(job, reused)`` follows each model segment.
    """
    if len(images) != len(plan.keys) or len(seeds) != len(plan.keys):
        raise ValueError(f"{len(plan.keys)} panels, {len(images)} images, {len(seeds)} seeds")
    prompts = list(prompts) if prompts is not None else [None] * len(images)
    kwargs = _accepted(tween, ("prompt", "fps"))
    model = model_id(tween)
    starts = shot_starts(plan)
    recent: deque[np.ndarray] = deque(maxlen=max(context, 0) + 1)
    for index, segment in enumerate(plan.segments):
        if segment.kind == "hold":
            frames = [images[segment.from_panel]] * segment.num_frames
        else:
            job = _job(index, segment, images, seeds, prompts, recent, starts, context)
            job = replace(job, key=segment_hash(job, model, plan.fps, kwargs))
            shape = (segment.num_frames, *images[0].shape)
            frames = cache.get(job.key, shape) if cache is not None else None
            reused = frames is not None
            if frames is None:
                frames = _run_tween(tween, job, kwargs, plan.fps)
                if cache is not None:
                    cache.put(index, job.key, frames)
            if on_segment is not None:
                on_segment(job, reused)
        for image in frames:
            recent.append(image)
            yield image


def _job(index, segment, images, seeds, prompts, recent, starts, context) -> SegmentJob:
    first = segment.start_frame - 1  # the hold's last frame: the first key of the window
    lead = min(max(context, 0), first - starts[first], len(recent) - 1)
    known = [recent[-2 - i] for i in reversed(range(lead))]
    known.append(images[segment.from_panel])
    n = segment.num_frames
    if segment.kind == "tween":
        known.append(images[segment.to_panel])
        positions = (*range(lead + 1), lead + n + 1)
        total = lead + n + 2
    else:
        positions = tuple(range(lead + 1))
        total = lead + 1 + n
    return SegmentJob(
        index=index,
        segment=segment,
        keys=np.stack(known),
        positions=positions,
        num_frames=total,
        take_start=lead + 1,
        seed=int(seeds[segment.from_panel]),
        prompt=prompts[segment.from_panel],
    )


def _run_tween(tween: TweenFn, job: SegmentJob, kwargs: set[str], fps: float) -> np.ndarray:
    extra = {"prompt": job.prompt, "fps": fps}
    frames = tween(
        job.keys,
        list(job.positions),
        job.num_frames,
        job.seed,
        **{k: v for k, v in extra.items() if k in kwargs},
    )
    frames = np.asarray(frames)
    expected = (job.num_frames, *job.keys.shape[1:])
    if frames.dtype != np.uint8 or frames.shape != expected:
        raise ValueError(
            f"tween model {model_id(tween)}: expected uint8 {expected}, "
            f"got {frames.dtype} {frames.shape}"
        )
    part = frames[job.take_start : job.take_start + job.segment.num_frames]
    return np.ascontiguousarray(part)


# ---------------------------------------------------------------------------------------------
# Output


def output_kind(path: Path) -> str:
    """``mp4``, ``gif``, ``mov``, ``cut`` (editorial) or ``png`` (a folder), from the name."""
    suffix = path.suffix.lower()
    if suffix in (".mp4", ".gif", ".mov"):
        return suffix[1:]
    if editorial.is_cut(path):
        return "cut"
    if suffix == "" or path.is_dir():
        return "png"
    raise UserError(
        f"{path}: unsupported output format '{path.suffix}'; expected .mp4, .gif, .mov "
        "(ProRes), .otio / .edl / .xml (a cut: one file per shot), or a folder for PNGs"
    )


def write_film(
    path: Path, frames: Iterator[np.ndarray], fps: float, overwrite: bool = False
) -> list[Path]:
    """Write frames by the output's kind; a new PNG sequence folder appears only when complete."""
    kind = output_kind(path)
    if kind != "png" or path.exists():
        return io.write_video(path, frames, fps, overwrite=overwrite)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        written = io.write_png_sequence(tmp, frames, name=path.name)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [path / p.name for p in written]


def parts_folder(out: Path) -> Path:
    """The default work folder of an output: ``film.mp4`` -> ``film.mp4.parts``."""
    return out.with_name(out.name + ".parts")


@contextmanager
def work_folder(folder: Path) -> Iterator[Path]:
    """Create (or reopen) a render's work folder; refuse a folder animatic did not make.

    If the render fails before anything worth resuming from is stored, the folder goes again.
    """
    marker = folder / PARTS_MARKER
    if folder.exists() and not marker.is_file():
        if not folder.is_dir():
            raise UserError(f"{folder}: is a file; expected a work folder")
        if any(folder.iterdir()):
            raise UserError(f"{folder}: exists and is not an animatic work folder; pick --work")
    folder.mkdir(parents=True, exist_ok=True)
    marker.touch()
    try:
        yield folder
    except BaseException:
        if {p.name for p in folder.iterdir()} <= {PARTS_MARKER}:
            shutil.rmtree(folder, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------
# Render


@dataclass(frozen=True)
class RenderResult:
    """What a render wrote: the output files, the sidecar record, and the frame count."""

    out: Path
    files: list[Path]
    record: dict
    num_frames: int


def _exclusive(function: Callable) -> Callable:
    """Run ``render`` holding the locks of its output (and of ``work_dir`` when one is given),
    after removing the temp files a killed render of that output left."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def locked(*args, **kwargs):
        given = signature.bind(*args, **kwargs).arguments
        out, work = Path(given["out"]), given.get("work_dir")
        with contextlib.ExitStack() as hold:
            hold.enter_context(locks.exclusive(out, what=f"render --out {out}"))
            if work is not None:
                hold.enter_context(locks.exclusive(work, what=f"render --work {work}"))
            safety.clean_temporaries(out.parent, (out.name, out.stem))
            parts = Path(work) if work is not None else parts_folder(out)
            if (parts / PARTS_MARKER).is_file():  # only in a work folder animatic made
                safety.clean_temporaries(parts)
            return function(*args, **kwargs)

    return locked


@_exclusive
def render(
    source: str | os.PathLike | ShotList,
    out: str | os.PathLike,
    tween_model: str | TweenFn | None = None,
    keyframe_model: str | KeyframeFn | None = None,
    storyboard_dir: str | os.PathLike | None = None,
    animatic: bool = False,
    dissolve: bool = False,
    overwrite: bool = False,
    work_dir: str | os.PathLike | None = None,
    keep_parts: bool = False,
    context: int = DEFAULT_CONTEXT,
    device: str | None = None,
    verbose: bool = True,
    force: bool = False,
) -> RenderResult:
    """Render a shot list (YAML path or ShotList) or a storyboard folder to ``out``.

    ``out`` is ``.mp4`` (H.264), ``.gif``, ``.mov`` (ProRes 422 HQ), a folder for a PNG
    sequence, or a cut for editors (``.otio``, ``.edl``, ``.xml``: pipeline.editorial).
    Models: a callable, a trained model name/path, a baseline (``crossfade``/``flow`` tweens,
    ``oracle`` keyframes), or None for the shot list's ``models``. ``animatic`` needs no tween
    model (``dissolve``: cross-fade the tweens instead of holding). See the module docstring
    for resuming.
    """
    started = time.perf_counter()
    out = Path(out)
    kind = output_kind(out)
    io.check_writable(out, overwrite, folder=kind == "png")
    if kind == "cut":
        editorial.check_cut(out, overwrite)
    is_board = not isinstance(source, ShotList) and Path(source).is_dir()
    if is_board and storyboard_dir is not None:
        raise UserError("--storyboard is for shot lists; the input is already a storyboard folder")
    if context < 0:
        raise UserError(f"context: expected a whole number >= 0, got {context}")
    parts = Path(work_dir) if work_dir is not None else parts_folder(out)
    with work_folder(parts):
        shots = None
        if not is_board:
            shots = source if isinstance(source, ShotList) else load_shotlist(source)
        tween = None
        if not animatic:  # loaded first: a bad model name fails before any keyframe is drawn
            if tween_model is None:
                tween_model = shots.interpolate_model if shots else _board_models(source)
            tween = (
                load_tween_model(tween_model, device)
                if isinstance(tween_model, str)
                else tween_model
            )
        if is_board:
            board = load_storyboard(source)
        else:
            board_dir = Path(storyboard_dir) if storyboard_dir is not None else parts / "storyboard"
            board = storyboard(shots, board_dir, keyframe_model=keyframe_model, device=device,
                               verbose=verbose, force=force)  # fmt: skip
        board_s = time.perf_counter() - started
        manifest = board.manifest
        plan = plan_from_manifest(manifest)
        segments: list[dict] = []
        if tween is None:
            frames = animatic_frames(plan, board.images, dissolve=dissolve)
            tween_name = "animatic (dissolve)" if dissolve else "animatic"
        else:
            tween_name = model_id(tween)

            def note(job: SegmentJob, reused: bool) -> None:
                segments.append({**_segment_record(job), "reused": reused})

            frames = film_frames(
                plan,
                board.images,
                tween,
                seeds=[int(p["seed"]) for p in manifest["panels"]],
                prompts=[p.get("prompt") for p in manifest["panels"]],
                context=context,
                cache=SegmentCache(parts),
                on_segment=note,
            )
        quiet = None if verbose else True
        with tqdm(total=plan.num_frames, desc="render", unit="frame", disable=quiet) as bar:
            if kind == "cut":
                files = editorial.write_cut(out, _counted(frames, bar), plan, manifest, overwrite)
            else:
                files = write_film(out, _counted(frames, bar), manifest["fps"], overwrite=overwrite)
    record = {
        "output": str(out),
        "source": str(board.folder if is_board else manifest["shotlist"]),
        "title": manifest["title"],
        "mode": "animatic" if animatic else "tween",
        "fps": manifest["fps"],
        "num_frames": plan.num_frames,
        "width": manifest["width"],
        "height": manifest["height"],
        "loop": manifest["loop"],
        "models": {"keyframe": manifest["models"]["keyframe"], "tween": tween_name},
        "keyframe_models": {
            str(p["number"]): p["model"] for p in manifest["panels"] if p["source"] == "prompt"
        },
        "context_frames": context,
        "key_frames": list(plan.keys),
        "panels": manifest["panels"],
        "segments": segments,
        "timings_s": {
            "storyboard": round(board_s, 3),
            "total": round(time.perf_counter() - started, 3),
        },
    }
    io.write_sidecar(out, record)
    if not keep_parts:
        shutil.rmtree(parts, ignore_errors=True)
    return RenderResult(out, files, record, plan.num_frames)


def _board_models(folder) -> str:
    """The tween model a storyboard folder names."""
    manifest = read_manifest(Path(folder))
    if manifest is None:
        raise UserError(f"{folder}: not a storyboard folder (no {MANIFEST})")
    return manifest["models"]["interpolate"]


def _segment_record(job: SegmentJob) -> dict:
    segment = job.segment
    return {
        "index": job.index,
        "kind": segment.kind,
        "start_frame": segment.start_frame,
        "end_frame": segment.end_frame,
        "from_panel": segment.from_panel + 1,  # 1-based, as in the shot list
        "to_panel": None if segment.to_panel is None else segment.to_panel + 1,
        "seed": job.seed,
        "window_positions": list(job.positions),
        "window_frames": job.num_frames,
        "hash": job.key,
    }


def _counted(frames: Iterator[np.ndarray], bar: tqdm) -> Iterator[np.ndarray]:
    for image in frames:
        bar.update(1)
        yield image


# ---------------------------------------------------------------------------------------------
# The command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input", metavar="SHOTS.yaml|DIR", help="a shot list, or a folder from animatic storyboard"
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="FILM",
        help="FILM.mp4, .gif, .mov (ProRes), a folder for PNGs, or a cut for editors: "
        "CUT.otio / .edl / .xml (each shot as a file in CUT_media/)",
    )
    parser.add_argument(
        "--storyboard", metavar="DIR", help="storyboard folder to use and update (shot lists)"
    )
    parser.add_argument(
        "--animatic", action="store_true", help="hold each panel for its duration (no model)"
    )
    parser.add_argument(
        "--dissolve", action="store_true", help="with --animatic: cross-fade the tweens"
    )
    parser.add_argument(
        "--tween-model",
        metavar="NAME",
        help="trained model name or path (default: the shot list's models.interpolate); "
        "baselines: 'crossfade', 'flow' (flow in-betweens along paths through the keys)",
    )
    add_keyframe_model_argument(parser)
    parser.add_argument(
        "--context",
        type=int,
        default=DEFAULT_CONTEXT,
        metavar="N",
        help="frames before a tween passed to the model as known context (default: 2)",
    )
    parser.add_argument("--work", metavar="DIR", help="work folder (default: OUT.parts)")
    parser.add_argument(
        "--keep-parts", action="store_true", help="keep finished segments for later renders"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    result = render(
        args.input,
        args.out,
        tween_model=args.tween_model,
        keyframe_model=args.keyframe_model,
        storyboard_dir=args.storyboard,
        animatic=args.animatic,
        dissolve=args.dissolve,
        overwrite=args.overwrite,
        work_dir=args.work,
        keep_parts=args.keep_parts,
        context=args.context,
        device=args.device,
        verbose=not args.quiet,
        force=args.force,
    )
    if not args.quiet:
        fps = result.record["fps"]
        seconds = result.num_frames / fps
        print(f"wrote {result.out}: {result.num_frames} frames, {seconds:.2f} s at {fps} fps")
    return 0
