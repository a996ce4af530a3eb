"""The shipped `shapes` models: they load by name with no training files, and fixed-seed
generations pass the judge (a small, real quality check; the full numbers come from
`animatic eval`, see the model card in README.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interpolate.pipeline import InterpolatePipeline
from keyframe.autoencoder_files import load_autoencoder
from keyframe.pretrained import from_pretrained
from pipeline import baselines
from pipeline.eval_keyframe import eval_keyframe, keyframe_model, keyframe_prompts
from pipeline.eval_tween import eval_tween, model_tween, tween_clips
from pipeline.shapes import render_still

pytestmark = pytest.mark.usefixtures("one_thread_module")

# Measured with the shipped weights (see the model card): autoencoder 45.7 dB on 200 held-out
# stills; keyframes on 400 prompts: background 100%, colour 98.4%, shape 97.0%, size 99.2%, count
# 98.2% (on these 16 prompts: 100 / 95 / 95 / 95 / 94%), two-object prompts 74% fully correct
# (these 9: position 89% placed, 11% not); in-betweens on 16 clips from noise 35.2 dB / 0.3 px at
# gap 2 and 31.6 dB at gap 4 (on these 4 clips: 33.1 dB, 0.2 px, 30.0 dB). The models shipped
# before scored below these bars (size 80% on these prompts, two-object prompts 0%, gap 4 26.2
# dB on these clips); broken weights score far lower (about 9 dB for a model that ignores its
# keys). The bars leave room for a few prompts or clips.
SEED = 7
MIN_AE_PSNR = 38.0
MIN_ACCURACY = {"background": 0.9, "colour": 0.85, "shape": 0.85, "size": 0.85, "count": 0.8}
MIN_PSNR = {2: 30.0, 4: 27.0}
MAX_TRAJECTORY_GAP2 = 2.0
MIN_PLACED_POSITION = 0.5
MIN_TWO_OBJECTS_CORRECT = 0.3


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


@pytest.mark.slow
def test_shipped_keyframe_model_draws_what_fixed_prompts_ask_for(keyframes):
    prompts = keyframe_prompts(12, 4, seed=SEED)
    generate = keyframe_model("shapes", steps=20, pipe=keyframes)
    report = eval_keyframe(generate, prompts, batch_size=8, seed=SEED)
    print("shipped keyframe model on 16 fixed prompts:", report["accuracy"])
    for attribute, low in MIN_ACCURACY.items():
        assert report["accuracy"][attribute] >= low, attribute


@pytest.mark.slow
def test_shipped_keyframe_model_places_subjects_by_position_words(keyframes):
    assert keyframes.config.sample_place  # the shipped default
    prompts = keyframe_prompts(18, 0, seed=SEED)  # two prompts per cell
    generate = keyframe_model("shapes", steps=20, pipe=keyframes)
    placed = eval_keyframe(generate, prompts, batch_size=18, seed=SEED)["accuracy"]["position"]
    plain = keyframe_model("shapes", steps=20, pipe=keyframes, place=False)
    unplaced = eval_keyframe(plain, prompts, batch_size=18, seed=SEED)["accuracy"]["position"]
    print(f"position on 18 prompts: placed {placed:.2f}, not placed {unplaced:.2f}")
    assert placed >= MIN_PLACED_POSITION and placed > unplaced


@pytest.mark.slow
def test_shipped_keyframe_model_places_two_subjects_each_in_its_cell(keyframes):
    prompts = keyframe_prompts(0, 9, seed=SEED)  # a blue square at the top right and a ...
    generate = keyframe_model("shapes", steps=20, pipe=keyframes)
    placed = eval_keyframe(generate, prompts, batch_size=9, seed=SEED)
    plain = keyframe_model("shapes", steps=20, pipe=keyframes, place=False)
    unplaced = eval_keyframe(plain, prompts, batch_size=9, seed=SEED)
    print("two-object prompts, placed:", placed["accuracy"], "not placed:", unplaced["accuracy"])
    assert placed["accuracy"]["position"] >= MIN_PLACED_POSITION
    assert placed["accuracy"]["position"] > unplaced["accuracy"]["position"]
    assert placed["double"]["correct"] >= MIN_TWO_OBJECTS_CORRECT


@pytest.fixture(scope="module")
def interpolator():
    return InterpolatePipeline.from_pretrained("shapes")


@pytest.mark.slow
def test_shipped_interpolator_uses_its_keys(interpolator):
    model = interpolator
    assert model.config.num_frames == 17 and model.model.autoencoder.factor == 4
    clips = tween_clips(4, 64, 9, seed=SEED)
    table = eval_tween(model_tween(model, steps=10, init="noise"), clips, gaps=[2, 4])
    print("shipped interpolator on 4 clips:", table)
    assert all(table[gap]["psnr"] >= low for gap, low in MIN_PSNR.items())
    assert table[2]["trajectory_px"] <= MAX_TRAJECTORY_GAP2


@pytest.mark.slow
def test_shipped_interpolator_beats_flow_from_its_flow_init(interpolator):
    assert interpolator.config.sample_init == "flow"  # the shipped default
    clips = tween_clips(4, 64, 17, seed=SEED)
    ours = eval_tween(model_tween(interpolator, steps=10), clips, gaps=[8])[8]
    flow = eval_tween(baselines.flow_warp, clips, gaps=[8])[8]
    print("gap 8 on 4 clips, flow init:", ours, "flow:", flow)
    # Measured here: 35.1 dB / 0.28 px / 9.5% ghosting (one object fades in one gap) along the
    # motion prior's paths (session 7's parts: 32.0 / 0.44 / 12%; along parabolas 28.6 / 1.22 /
    # 14%, straight flow 27.3 / 1.45 / 19%) against flow's 27.8 / 2.17 / 24%; the margins allow
    # for other CPUs' rounding, a broken model or init falls far outside them.
    assert ours["psnr"] >= flow["psnr"] + 3.0
    assert ours["ghosting"] <= flow["ghosting"]
    assert ours["trajectory_px"] <= flow["trajectory_px"] / 3


@pytest.mark.slow
def test_shipped_motion_prior_keeps_objects_on_their_paths(interpolator):
    """The interpolator's learned motion prior: flow in-betweens along its paths beat the
    parabolas through three keys at gap 16, where bounces happen between keys."""
    prior = interpolator.motion_prior
    assert prior is not None and not prior.training
    clips = tween_clips(4, 64, 33, seed=SEED)
    learned = eval_tween(baselines.motion_paths(prior), clips, gaps=[16])[16]
    parabola = eval_tween(baselines.flow_paths, clips, gaps=[16])[16]
    print("gap 16 on 4 clips, prior paths:", learned, "parabolas:", parabola)
    # Measured here: 28.6 dB, 2.75 px along the prior's paths (session 7's prior and parts: 26.1
    # dB, 3.17 px; most of what is left is one ball that meets a wall exactly at a key); 21.7 dB,
    # 5.18 px along parabolas.
    assert learned["trajectory_px"] <= 0.65 * parabola["trajectory_px"]
    assert learned["psnr"] >= parabola["psnr"] + 4.0
