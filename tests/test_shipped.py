"""The shipped `shapes` models: they load by name with no training files, and fixed-seed
generations pass the judge (a small, real quality check; the full numbers come from
`animatic eval`, see the model card in README.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interpolate.module import InterpolateModule
from keyframe.autoencoder import load_autoencoder
from keyframe.pretrained import from_pretrained
from pipeline.evaluate import (
    eval_keyframe,
    eval_tween,
    keyframe_model,
    keyframe_prompts,
    model_tween,
    tween_clips,
)
from pipeline.shapes import render_still

pytestmark = pytest.mark.usefixtures("one_thread_module")

# Measured with the shipped weights (see the model card): autoencoder 41.3 dB on 200 held-out
# stills; keyframes 100% background and 80.6% colour accuracy on 400 prompts; in-betweens on 16
# clips 28.0 dB / 1.7 px at gap 2 and 21.4 dB at gap 4 (on these 4 clips: 25.6 dB, 2.6 px, 18.7
# dB). Broken or untrained weights score far lower (about 9 dB for a model that ignores its
# keys). The bars leave room for a few prompts or clips to go either way.
SEED = 7
MIN_AE_PSNR = 38.0
MIN_BACKGROUND = 0.9
MIN_COLOUR = 0.6
MIN_PSNR = {2: 22.0, 4: 16.0}
MAX_TRAJECTORY_GAP2 = 4.0


@pytest.fixture(scope="module")
def keyframes():
    return from_pretrained("shapes")


def test_shipped_autoencoder_reconstructs_held_out_stills():
    ae = load_autoencoder("shapes")
    scenes = [scene for _, scene in keyframe_prompts(8, 4, seed=11)]
    frames = np.stack([render_still(scene, 64) for scene in scenes])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        rec = ae.decode(ae.encode(x))
    mse = ((rec.clamp(-1, 1) - x) / 2).pow(2).flatten(1).mean(1)
    psnr = float((-10 * torch.log10(mse)).mean())
    assert psnr > MIN_AE_PSNR, f"{psnr:.2f} dB"


def test_shipped_keyframe_model_draws_backgrounds_and_colours_of_fixed_prompts(keyframes):
    prompts = keyframe_prompts(12, 4, seed=SEED)
    generate = keyframe_model("shapes", steps=20, module=keyframes)
    report = eval_keyframe(generate, prompts, batch_size=8, seed=SEED)
    print("shipped keyframe model on 16 fixed prompts:", report["accuracy"])
    assert report["accuracy"]["background"] >= MIN_BACKGROUND
    assert report["accuracy"]["colour"] >= MIN_COLOUR


def test_shipped_interpolator_uses_its_keys():
    model = InterpolateModule.from_pretrained("shapes")
    assert model.hparams.num_frames == 17 and model.autoencoder.factor == 4
    clips = tween_clips(4, 64, 9, seed=SEED)
    table = eval_tween(model_tween(model, steps=10), clips, gaps=[2, 4])
    print("shipped interpolator on 4 clips:", table)
    assert all(table[gap]["psnr"] >= low for gap, low in MIN_PSNR.items())
    assert table[2]["trajectory_px"] <= MAX_TRAJECTORY_GAP2
