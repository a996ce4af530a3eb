"""How well flow between distant keys finds each object: DIS alone against `robust_flow`.

For every pair of keys `gap` frames apart in fresh shapes-world eval clips, the flow at an
object's true centre is compared with the object's true displacement (objects wholly on the
canvas and clear of others at both keys). Prints the mean and median miss in pixels and the share
of objects missed by more than 3 px. Usage: python scripts/flow_accuracy.py [CLIPS] [GAPS]
(defaults: 32 clips, gaps 8,16; the README's numbers).
"""

from __future__ import annotations

import sys

import numpy as np

from interpolate.flow import dis_flows, robust_flow
from pipeline.eval_tween import trackable, tween_clips


def misses(flow, clips, gap: int) -> np.ndarray:
    """Distance (px) between the flow at each object's centre and its true displacement."""
    out = []
    for clip in clips:
        size = clip.frames.shape[1]
        ok = trackable(clip)
        for a in range(0, len(clip.frames) - gap, gap):
            b = a + gap
            field = flow(clip.frames[a], clip.frames[b])
            for i in range(len(clip.scene.objects)):
                if ok[a, i] and ok[b, i]:
                    x, y = np.round(clip.centres[a, i] * size - 0.5).astype(int)
                    true = (clip.centres[b, i] - clip.centres[a, i]) * size
                    out.append(np.linalg.norm(field[y, x] - true))
    return np.array(out)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    gaps = [int(g) for g in sys.argv[2].split(",")] if len(sys.argv) > 2 else [8, 16]
    clips = tween_clips(count, 64, 2 * max(gaps) + 1, seed=0)
    methods = {"DIS": lambda a, b: dis_flows(a, b)[0], "robust_flow": robust_flow}
    for name, flow in methods.items():
        for gap in gaps:
            miss = misses(flow, clips, gap)
            print(
                f"{name:12s} gap {gap:2d}: {len(miss)} objects, miss mean {miss.mean():.2f} px, "
                f"median {np.median(miss):.2f} px, > 3 px {np.mean(miss > 3):.0%}"
            )


if __name__ == "__main__":
    main()
