"""`animatic eval autoencoder`: reconstruction PSNR, SSIM and speed of a frame autoencoder on
fresh stills and clip frames, and the judge's verdict on every reconstructed still.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from keyframe.errors import UserError
from pipeline.devices import resolve_device
from pipeline.eval_common import check_at_least
from pipeline.eval_keyframe import keyframe_prompts
from pipeline.eval_tween import Clip, tween_clips
from pipeline.judge import MIN_SIZE, judge
from pipeline.shapes import Scene, render_still


def eval_autoencoder(ae, stills: list[tuple[str, Scene]], clips: Sequence[Clip], size: int) -> dict:
    """Reconstruction quality on held-out stills and clip frames: PSNR, SSIM, encode/decode
    frames per second, and the judge's verdict on every reconstructed still (does each object keep
    its colour, shape, size and position?)."""
    import torch

    from keyframe.frame_metrics import reconstruction_metrics
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


def run_autoencoder_eval(args: argparse.Namespace) -> dict:
    """`animatic eval autoencoder`: score the autoencoder, print the scores; returns the report."""
    check_at_least(args, "stills", "clips")
    check_at_least(args, "size", least=MIN_SIZE)
    from keyframe.autoencoder_files import load_autoencoder

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
