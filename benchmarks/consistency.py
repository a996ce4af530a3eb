"""Does storyboard consistency keep a subject's look? Measured on the shapes world.

For 40 one-object scenes, three panels draw the same object at three positions; the largest
object the judge detects in panels 2 and 3 is compared with panel 1's (colour, shape, size word).
Modes: independent panels, anchored attention (`anchor`), and anchored attention plus half of the
anchor's starting noise. Run: .venv/bin/python benchmarks/consistency.py [MODEL] (default shapes).
"""

from __future__ import annotations

import sys

import torch

from keyframe.pretrained import from_pretrained
from pipeline.eval_keyframe import keyframe_prompts
from pipeline.io import to_uint8_rgb
from pipeline.judge import detect_objects

POSITIONS = ("at the top left", "in the center", "at the bottom right")
MODES = {
    "independent": {},
    "consistency": {"anchor": [0, 0, 0]},
    "consistency, noise share 0.5": {"anchor": [0, 0, 0], "noise_share": 0.5},
}


def largest(image: torch.Tensor):
    found = detect_objects(to_uint8_rgb(image))
    return max(found, key=lambda d: d.area) if found else None


def main(model: str = "shapes", scenes: int = 40, steps: int = 20) -> None:
    module = from_pretrained(model)
    subjects = [scene for _, scene in keyframe_prompts(scenes, 0, seed=3)]
    for mode, options in MODES.items():
        agree = dict.fromkeys(("colour", "shape", "size", "all"), 0)
        pairs = 0
        for i, scene in enumerate(subjects):
            o = scene.objects[0]
            prompts = [
                f"a {o.size} {o.colour} {o.shape} {p} on a {scene.background} background"
                for p in POSITIONS
            ]
            seen = [
                largest(im) for im in module.sample(prompts, steps=steps, seed=100 * i, **options)
            ]
            for other in seen[1:]:
                pairs += 1
                if seen[0] is None or other is None:
                    continue
                same = {
                    "colour": seen[0].colour == other.colour,
                    "shape": seen[0].shape == other.shape,
                    "size": seen[0].size_word == other.size_word,
                }
                same["all"] = all(same.values())
                for key, value in same.items():
                    agree[key] += value
        shares = ", ".join(f"{k} {v / pairs:.0%}" for k, v in agree.items())
        print(f"{mode:30s} same as panel 1: {shares} ({pairs} panel pairs)", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:2])
