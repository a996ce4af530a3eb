"""The general interpolator: motion fields, full-resolution frames, the pipeline and its folder."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from interpolate.flow import warp as cv2_warp
from interpolate.general.model import MotionConfig, build_denoiser
from interpolate.general.motion import blend_weights, init_flows, synthesize, warp
from interpolate.general.pipeline import GeneralInterpolator, working_shape
from interpolate.general.warp import keys_agree, make_frame
from keyframe.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread_module")

TINY = MotionConfig(
    model_channels=8, channel_mult=[1, 2], attention_levels=[1], num_heads=2, working_size=32,
    window=4, steps=2,
)  # fmt: skip


def tiny_pipe(seed: int = 0) -> GeneralInterpolator:
    torch.manual_seed(seed)
    denoiser = build_denoiser(TINY)
    with torch.no_grad():  # wake the zero-initialised output layers, so the net matters
        for p in denoiser.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    return GeneralInterpolator(denoiser, TINY)


def moving_square(size: int, x: int, colour=(0.9, 0.2, 0.1), background=(0.1, 0.6, 0.7)):
    frame = np.empty((size, size, 3), np.float32)
    frame[:] = background
    frame[size // 3 : size // 3 + size // 4, x : x + size // 4] = colour
    return frame


def test_init_flows_follow_super_slomo_as_the_flow_baseline_does():
    rng = np.random.default_rng(0)
    f01, f10 = rng.normal(size=(2, 6, 7, 2)).astype(np.float32)
    t = torch.tensor([[0.25, 0.5]])
    got = init_flows(torch.from_numpy(f01).permute(2, 0, 1)[None],
                     torch.from_numpy(f10).permute(2, 0, 1)[None], t)  # fmt: skip
    for i, tt in enumerate((0.25, 0.5)):
        to0 = -(1 - tt) * tt * f01 + tt * tt * f10
        to1 = (1 - tt) ** 2 * f01 - tt * (1 - tt) * f10
        assert np.allclose(got[0, :2, i].permute(1, 2, 0).numpy(), to0, atol=1e-6)
        assert np.allclose(got[0, 2:, i].permute(1, 2, 0).numpy(), to1, atol=1e-6)


def test_torch_warp_matches_the_numpy_warp():
    rng = np.random.default_rng(1)
    image = rng.random((9, 11, 3)).astype(np.float32)
    flow = rng.normal(0, 1.5, (9, 11, 2)).astype(np.float32)
    as_torch = [torch.from_numpy(a).permute(2, 0, 1)[None] for a in (image, flow)]
    ours = warp(*as_torch)[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - cv2_warp(image, flow)).max() < 1e-3


def test_blend_takes_the_key_that_shows_a_pixel():
    t = torch.full((3,), 0.5)
    w0, w1 = blend_weights(t, torch.tensor([1.0, 0.0, -1.0]))
    assert w0.tolist() == [1.0, 0.5, 0.0] and torch.allclose(w0 + w1, torch.ones(3))


def test_synthesize_with_true_motion_remakes_the_middle_frame():
    a, b, mid = (moving_square(32, x) for x in (4, 12, 8))
    keys = [torch.from_numpy(k).permute(2, 0, 1)[None] for k in (a, b)]
    motion = torch.zeros(1, 5, 1, 32, 32)
    square = np.zeros((32, 32), bool)
    square[10:18, 8:16] = True  # the square at t = 0.5, moving 8 px right per gap
    motion[0, 0, 0][torch.from_numpy(square)] = -4 / 8  # to the left key, in motion units
    motion[0, 2, 0][torch.from_numpy(square)] = 4 / 8
    made = synthesize(*keys, motion, torch.tensor([[0.5]]))[0, :, 0].permute(1, 2, 0).numpy()
    assert np.abs(made - mid)[square].max() < 1e-4


def test_colours_hold_exactly_where_the_keys_agree():
    """A static background of any colour or texture comes back within 2/255 in every
    in-between, whatever small motion the model makes there."""
    rng = np.random.default_rng(2)
    texture = rng.random((40, 48, 3)).astype(np.float32)
    k0, k1 = texture.copy(), texture.copy()
    k1[5:15, 30:40] = [1.0, 0.0, 1.0]  # something changed in one corner only
    motion = np.zeros((5, 20, 24), np.float32)
    motion[:4] = rng.normal(0, 0.02, (4, 20, 24))  # motion noise: 0.3 output px on average
    agree = keys_agree(k0, k1)
    for t in (0.25, 0.5, 0.75):
        frame = make_frame(k0, k1, motion, t, agree)
        assert np.abs(frame - texture)[agree].max() <= 2 / 255
        assert np.abs(frame - texture)[~agree].max() > 2 / 255  # elsewhere the motion shows
    assert not agree[10, 35]


def test_frames_are_made_at_the_keys_size_from_small_motion():
    rng = np.random.default_rng(3)
    key = rng.random((1080, 1920, 3)).astype(np.float32)
    still = make_frame(key, key, np.zeros((5, 18, 32), np.float32), 0.5)
    assert still.shape == key.shape and np.abs(still - key).max() < 1e-5
    motion = np.zeros((5, 18, 32), np.float32)
    motion[0] = 1 / 60  # flow to the left key: 1/60 motion unit at 32 px wide = 8 px at 1920
    shifted = make_frame(key, key, motion, 0.0)
    assert np.abs(shifted[:, 100:-100] - key[:, 108:-92]).max() < 1e-4  # the keys' own pixels


def test_working_shape_keeps_the_aspect_and_the_multiple():
    config = MotionConfig(working_size=256)
    assert working_shape(720, 1280, config) == (144, 256)
    assert working_shape(100, 120, config) == (96, 120)
    assert working_shape(8, 8, config) == (8, 8)


def test_pipeline_keeps_keys_holds_and_seeds(tmp_path):
    pipe = tiny_pipe()
    keys = [moving_square(40, x) for x in (2, 14, 14, 26)]
    positions = [0, 4, 7, 10]
    frames = list(pipe(keys, positions, 12, seed=3))
    assert len(frames) == 12
    for k, p in zip(keys, positions, strict=True):
        assert np.array_equal(frames[p], k)
    assert np.array_equal(frames[5], keys[1]) and np.array_equal(frames[6], keys[1])  # a hold
    assert np.array_equal(frames[11], keys[-1])
    again = list(tiny_pipe()(keys, positions, 12, seed=3))
    assert all(np.array_equal(a, b) for a, b in zip(frames, again, strict=True))
    folder = pipe.save_pretrained(tmp_path / "model", fp16=False)
    loaded = GeneralInterpolator.from_pretrained(folder)
    reloaded = list(loaded(keys, positions, 12, seed=3))
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(frames, reloaded, strict=True))


def test_rgba_keys_move_their_alpha_with_the_object():
    pipe = tiny_pipe()
    keys = []
    for x in (4, 20):
        key = np.zeros((40, 40, 4), np.float32)
        key[12:24, x : x + 12] = [0.8, 0.3, 0.1, 1.0]  # premultiplied, opaque square
        keys.append(key)
    frames = list(pipe(keys, [0, 4], 5, steps=0))  # the flow init alone
    centres = [np.nonzero(f[..., 3].sum(0) > 0.5 * 12)[0].mean() for f in frames]
    assert centres[0] < centres[2] < centres[4] and abs(centres[2] - 15.5) < 3


def test_from_pretrained_refuses_other_folders(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        GeneralInterpolator.from_pretrained(tmp_path / "missing")
    (tmp_path / "config.json").write_text('{"kind": "something-else"}')
    with pytest.raises(UserError, match="unknown kind 'something-else'"):
        GeneralInterpolator.from_pretrained(tmp_path)


def test_training_windows_hold_the_exact_motion(tiny_layers):
    from interpolate.general.data import layer_clips, make_window, to_tensors
    from interpolate.general.trainer import window_inputs

    records = layer_clips(tiny_layers)
    rng = np.random.default_rng(0)
    batch = {k: v[None] for k, v in to_tensors(make_window(records[0], rng, 3, 6, 32), 3).items()}
    assert batch["frames"].shape == (1, 3, 3, 32, 32) and batch["truth"].shape == (1, 6, 3, 32, 32)
    cond, start, target = window_inputs(batch)
    made = synthesize(batch["k0"], batch["k1"], start + target, batch["t"])
    valid = batch["valid"][0].bool()
    both = (batch["truth"][:, 4] * batch["truth"][:, 5]).bool()[:, valid]  # seen in both keys
    error = (made - batch["frames"]).abs().mean(1)[:, valid][both]
    assert error.mean() < 0.1  # the true motion remakes the frames (up to interpolation)


def test_train_export_and_tween_with_a_general_model(tiny_layers, tmp_path, capsys):
    from pipeline.cli import main

    root = tmp_path / "run"
    args = ["train", "general", "fit", "--config", "configs/general/tiny.yaml",
            "--data.data", str(tiny_layers), "--trainer.default_root_dir", str(root),
            "--trainer.enable_checkpointing", "true"]  # fmt: skip
    assert main(args) == 0
    ckpt = next(root.rglob("*.ckpt"))
    assert main(["export", "general", str(ckpt), "--out", str(tmp_path / "model")]) == 0
    pipe = GeneralInterpolator.from_pretrained(tmp_path / "model")
    assert pipe.config.working_size == 64
    # The checkpoint holds the EMA copy (the stages' one mechanism) and export takes it.
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    exported = pipe.denoiser.state_dict()
    for name, value in exported.items():
        torch.testing.assert_close(
            value.float(), state[f"ema_denoiser.{name}"], atol=1e-3, rtol=1e-3
        )
    assert any(
        not torch.equal(state[f"ema_denoiser.{k}"], state[f"denoiser.{k}"]) for k in exported
    )
    keys = [moving_square(96, x) for x in (10, 40)]

    for i, key in enumerate(keys):
        rgb8 = (key * 255).astype(np.uint8)
        cv2.imwrite(str(tmp_path / f"k{i}.png"), cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR))
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["tween", str(tmp_path / "k0.png"), str(tmp_path / "k1.png"), "--out", str(out),
                 "--between", "3", "--model", str(tmp_path / "model")]) == 0  # fmt: skip
    assert "motion is made at 64x64" in capsys.readouterr().err
    frames = sorted(out.glob("*.png"))
    assert len(frames) == 5 and cv2.imread(str(frames[2])).shape == (96, 96, 3)
