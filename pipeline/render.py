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
import inspect
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from keyframe.errors import UserError
from pipeline import editorial, io, locks, safety
from pipeline.render_models import TweenFn, load_tween_model
from pipeline.render_output import PARTS_MARKER, output_kind, parts_folder, work_folder, write_film
from pipeline.render_segments import DEFAULT_CONTEXT, SegmentCache, SegmentJob, film_frames
from pipeline.shotlist import ShotList, load_shotlist
from pipeline.storyboard import add_keyframe_model_argument, storyboard
from pipeline.storyboard_manifest import (
    MANIFEST,
    Storyboard,
    load_storyboard,
    plan_from_manifest,
    read_manifest,
)
from pipeline.storyboard_models import KeyframeFn, model_id
from pipeline.timeline import FramePlan, animatic_frames


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
    # 1. check the output and the options, before any work
    out = Path(out)
    kind, is_board = _check_options(source, out, storyboard_dir, context, overwrite)
    parts = Path(work_dir) if work_dir is not None else parts_folder(out)
    with work_folder(parts):
        # 2. read the shot list, then load the tween model: a bad name fails before any drawing
        shots = None if is_board else _shotlist(source)
        tween = None if animatic else _tween_model(tween_model, shots, source, device)
        # 3. draw the storyboard (reusing panels whose hashes match), or read the given folder
        if is_board:
            board = load_storyboard(source)
        else:
            board_dir = Path(storyboard_dir) if storyboard_dir is not None else parts / "storyboard"
            board = storyboard(shots, board_dir, keyframe_model=keyframe_model, device=device,
                               verbose=verbose, force=force)  # fmt: skip
        board_s = time.perf_counter() - started
        # 4. plan the frames; the model makes them segment by segment as step 5 writes them
        plan = plan_from_manifest(board.manifest)
        frames, tween_name, segments = _frames(plan, board, tween, dissolve, context, parts)
        # 5. write the film
        files = _write(out, kind, frames, plan, board.manifest, overwrite, verbose)
    # 6. write the sidecar, and remove the work folder unless asked to keep it
    source_name = str(board.folder if is_board else board.manifest["shotlist"])
    record = _record(out, board.manifest, plan, source=source_name, animatic=animatic,
                     tween=tween_name, context=context, segments=segments,
                     times=(started, board_s))  # fmt: skip
    io.write_sidecar(out, record)
    if not keep_parts:
        shutil.rmtree(parts, ignore_errors=True)
    return RenderResult(out, files, record, plan.num_frames)


def _check_options(source, out: Path, storyboard_dir, context: int, overwrite) -> tuple[str, bool]:
    """Refuse an output that cannot be written and options that do not fit the input; the
    output's kind (render_output.output_kind) and whether the input is a storyboard folder."""
    kind = output_kind(out)
    io.check_writable(out, overwrite, folder=kind == "png")
    if kind == "cut":
        editorial.check_cut(out, overwrite)
    is_board = not isinstance(source, ShotList) and Path(source).is_dir()
    if is_board and storyboard_dir is not None:
        raise UserError("--storyboard is for shot lists; the input is already a storyboard folder")
    if context < 0:
        raise UserError(f"context: expected a whole number >= 0, got {context}")
    return kind, is_board


def _shotlist(source) -> ShotList:
    """The shot list given, or read from its YAML file."""
    return source if isinstance(source, ShotList) else load_shotlist(source)


def _tween_model(tween_model, shots: ShotList | None, source, device) -> TweenFn:
    """The tween model to use: the one given (a name or a callable), else the input's own."""
    if tween_model is None:
        tween_model = shots.interpolate_model if shots else _board_models(source)
    return load_tween_model(tween_model, device) if isinstance(tween_model, str) else tween_model


def _board_models(folder) -> str:
    """The tween model a storyboard folder names."""
    manifest = read_manifest(Path(folder))
    if manifest is None:
        raise UserError(f"{folder}: not a storyboard folder (no {MANIFEST})")
    return manifest["models"]["interpolate"]


def _frames(plan, board: Storyboard, tween, dissolve: bool, context: int, parts: Path):
    """The film's frames (lazily), the tween's name in the sidecar, and the record of each model
    segment (filled as the frames are made): panels held (and dissolved) without a model."""
    segments: list[dict] = []
    if tween is None:
        frames = animatic_frames(plan, board.images, dissolve=dissolve)
        return frames, "animatic (dissolve)" if dissolve else "animatic", segments
    panels = board.manifest["panels"]

    def note(job: SegmentJob, reused: bool) -> None:
        segments.append({**_segment_record(job), "reused": reused})

    frames = film_frames(
        plan,
        board.images,
        tween,
        seeds=[int(p["seed"]) for p in panels],
        prompts=[p.get("prompt") for p in panels],
        context=context,
        cache=SegmentCache(parts),
        on_segment=note,
    )
    return frames, model_id(tween), segments


def _write(out: Path, kind: str, frames, plan: FramePlan, manifest: dict, overwrite, verbose):
    """Write the film (or the cut) with a progress bar; the files written."""
    quiet = None if verbose else True
    with tqdm(total=plan.num_frames, desc="render", unit="frame", disable=quiet) as bar:
        if kind == "cut":
            return editorial.write_cut(out, _counted(frames, bar), plan, manifest, overwrite)
        return write_film(out, _counted(frames, bar), manifest["fps"], overwrite=overwrite)


def _record(
    out: Path,
    manifest: dict,
    plan: FramePlan,
    *,
    source,
    animatic,
    tween,
    context,
    segments,
    times,
) -> dict:
    """The sidecar: the input, the film's form, its models, panels, segments and timings
    (``times``: when the render started and how long the storyboard took)."""
    started, board_s = times
    return {
        "output": str(out),
        "source": source,
        "title": manifest["title"],
        "mode": "animatic" if animatic else "tween",
        "fps": manifest["fps"],
        "num_frames": plan.num_frames,
        "width": manifest["width"],
        "height": manifest["height"],
        "loop": manifest["loop"],
        "models": {"keyframe": manifest["models"]["keyframe"], "tween": tween},
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
