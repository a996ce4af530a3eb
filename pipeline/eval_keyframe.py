"""`animatic eval keyframe`: generate an image per fresh shapes-world still prompt; the judge
checks background, object count, and each object's colour, shape, size and position from the
pixels. A list of sampling steps or samplers sweeps quality against sampling cost.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import numpy as np
from tqdm import tqdm

from keyframe.errors import UserError
from keyframe.sampling_options import check_sampling_options, with_defaults
from pipeline import baselines
from pipeline.devices import resolve_device
from pipeline.eval_common import check_at_least, check_images, fmt
from pipeline.judge import ATTRIBUTES, MIN_SIZE, judge
from pipeline.phrasings import PHRASINGS, phrase
from pipeline.shapes import (
    Description,
    ObjectWords,
    Scene,
    describe_still,
    format_caption,
    random_still_scene,
    still_caption,
)

# Random streams of the eval prompts (the dataset tool uses 1 for stills and 2 for phrasings).
STILL_STREAM = 1001
PHRASING_STREAM = 1003  # the words of --phrasing train/heldout prompts
MAX_EXAMPLES = 20  # failed prompts kept in the keyframe report
BUILTIN_KEYFRAME = ("oracle",)  # any other name goes to keyframe.pretrained.from_pretrained

Generate = Callable[[list[str], list[int]], np.ndarray]


# ----------------------------------------------------------------------------- prompts and scores


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


def _seen_caption(verdict) -> str:
    """What the judge saw, in the caption grammar (for reading failures)."""
    objects = tuple(
        ObjectWords(d.size_word, d.colour, d.shape, position=d.position) for d in verdict.detections
    )
    if not objects:
        return f"nothing on a {verdict.background_seen} background"
    return format_caption(Description("still", verdict.background_seen, objects))


def _count_attributes(verdict, right: dict[str, int], total: dict[str, int]) -> None:
    """Add one verdict's checks: background and count once, the others once per object."""
    for attribute in ATTRIBUTES[:2]:
        right[attribute] += getattr(verdict, attribute)
        total[attribute] += 1
    for obj in verdict.objects:
        for attribute in ATTRIBUTES[2:]:
            right[attribute] += getattr(obj, attribute)
            total[attribute] += 1


def _failure(caption: str, scene: Scene, seed: int, verdict) -> dict:
    """A failed prompt for the report: what was asked, what failed and what the judge saw."""
    return {
        "caption": caption,
        "scene": still_caption(scene),
        "seed": seed,
        "failed": list(verdict.failures),
        "seen": _seen_caption(verdict),
    }


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
        check_images(images, len(batch), "the keyframe model")
        for (caption, scene), image, s in zip(batch, images, seeds, strict=True):
            verdict = judge(image, describe_still(scene))
            _count_attributes(verdict, right, total)
            group = groups["single" if verdict.count_expected == 1 else "double"]
            group[0] += verdict.correct
            group[1] += 1
            if not verdict.correct and len(examples) < MAX_EXAMPLES:
                examples.append(_failure(caption, scene, s, verdict))
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


# ----------------------------------------------------------------------------- the model


def keyframe_model(
    name: str,
    steps: int | None = None,
    size: int = 64,
    device: str = "cpu",
    sampler: str | None = None,
    pipe=None,
    place: bool | None = None,
) -> Generate:
    """The generator called `name`: "oracle" (the renderer, at `size`) or a trained keyframe
    model (a shipped name, a folder from save_pretrained, or a .ckpt), which samples at its own
    size with one CPU generator per image, seeded by the image's seed (`pipe`: that model's
    KeyframePipeline, already loaded; `place`: subject placement by position words, None for
    the model's default)."""
    if name == "oracle":
        return baselines.oracle_keyframe(size)
    import torch

    from keyframe.pipeline import KeyframePipeline
    from pipeline.io import to_uint8_rgb

    pipe = KeyframePipeline.from_pretrained(name, device=device) if pipe is None else pipe

    def generate(prompts: list[str], seeds: list[int]) -> np.ndarray:
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        images = pipe(prompts, steps=steps, sampler=sampler, generator=generators, place=place)
        return np.stack([to_uint8_rgb(image) for image in images])

    return generate


# ----------------------------------------------------------------------------- the run


def _print_result(args: argparse.Namespace, result: dict) -> None:
    """The fully correct rates and per-attribute accuracies."""
    print(
        f"keyframe eval of {args.model}: {result['prompts']} prompts ({args.phrasing} "
        f"phrasings), seed {args.seed}"
    )
    for name in ("single", "double"):
        group = result[name]
        print(f"  fully correct, {name:6s} {fmt(group['correct'], '7.1%')}  ({group['prompts']})")
    print(f"  fully correct, all    {result['correct']:7.1%}")
    for attribute, value in result["accuracy"].items():
        print(f"  {attribute:20s} {fmt(value, '7.1%')}")


def run_keyframe_eval(args: argparse.Namespace) -> dict:
    """`animatic eval keyframe`: check the options, score the model (or sweep it), print the
    scores; returns the report."""
    check_at_least(args, "n-single", "n-double", least=0)
    check_at_least(args, "batch-size")
    check_at_least(args, "size", least=MIN_SIZE)
    for steps in args.steps or ():
        check_sampling_options(steps, prefix="--")
    for sampler in args.sampler or ():
        check_sampling_options(sampler=sampler, prefix="--")
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
    _print_result(args, result)
    settings = {k: getattr(args, k) for k in ("n_single", "n_double", "seed", "size", "phrasing")}
    settings.update(steps=steps_list[0], sampler=samplers[0], place=args.place)
    return {"eval": "keyframe", "model": args.model, "settings": settings, **result}


def _print_sweep_row(row: dict) -> None:
    """One (sampler, steps) row of a sweep, as soon as it is measured."""
    print(
        f"  {row['sampler']:16s} {row['steps']:4d} steps  correct {row['correct']:6.1%}"
        f"  single {fmt(row['single'], '6.1%')}  double {fmt(row['double'], '6.1%')}"
        f"  colour {fmt(row['accuracy']['colour'], '6.1%')}"
        f"  shape {fmt(row['accuracy']['shape'], '6.1%')}"
        f"  {row['seconds_per_image']:.3f} s/image",
        flush=True,
    )


def _sweep_keyframe(args, prompts, device, steps_list, samplers) -> dict:
    """Quality against sampling cost: the same prompts and seeds for every (sampler, steps)."""
    import time

    from keyframe.pipeline import KeyframePipeline

    if args.model in BUILTIN_KEYFRAME:
        raise UserError(f"--steps/--sampler lists: {args.model} does not sample")
    pipe = KeyframePipeline.from_pretrained(args.model, device=device)
    rows = []
    for sampler in samplers:
        for steps in steps_list:
            generate = keyframe_model(
                args.model, steps, args.size, device, sampler, pipe, place=args.place
            )
            start = time.perf_counter()
            result = eval_keyframe(generate, prompts, args.batch_size, args.seed)
            seconds = time.perf_counter() - start
            chosen = with_defaults(pipe.sampling_defaults(), sampler=sampler, steps=steps)
            rows.append(
                {
                    **chosen,
                    "correct": result["correct"],
                    "single": result["single"]["correct"],
                    "double": result["double"]["correct"],
                    "accuracy": result["accuracy"],
                    "seconds_per_image": seconds / len(prompts),
                }
            )
            _print_sweep_row(rows[-1])
    settings = {k: getattr(args, k) for k in ("n_single", "n_double", "seed", "size", "phrasing")}
    return {"eval": "keyframe-sweep", "model": args.model, "settings": settings, "sweep": rows}
