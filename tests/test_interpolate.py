"""Stage 2: training masks, the window plan, in-between sampling, training and reloading."""

from __future__ import annotations

import math

import pytest
import torch

from interpolate.flow import FlowFrames
from interpolate.inbetween import interpolate, interpolate_frames, plan_windows, window_seed
from interpolate.masks import MASK_KINDS, check_weights, draw_mask, ping_pong
from interpolate.model import InterpolateModel
from interpolate.module import InterpolateModule
from interpolate.paths import PathFrames
from interpolate.pipeline import InterpolatePipeline
from keyframe.errors import UserError
from keyframe.pixels import to_uint8

TINY = {
    "image_size": 8,
    "num_frames": 6,
    "model_channels": 8,
    "channel_mult": [1, 2],
    "num_res_blocks": 1,
    "attention_levels": [1],
    "num_heads": 2,
    "temporal_heads": 2,
    "max_relative_distance": 4,
    "ema_decay": 0.0,
    "sample_steps": 2,
    "context_frames": 2,
}


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def model(tiny_interpolate) -> InterpolateModule:
    """A tiny pixel-space model in which every part (spatial, temporal, fps) affects the result."""
    return tiny_interpolate(**TINY).eval()


def _keys(count: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, size, size, generator=g) * 2 - 1


# ---- masks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [3, 4, 7, 12])
def test_each_mask_kind_marks_the_frames_it_promises(length):
    g = torch.Generator().manual_seed(length)
    for _ in range(20):
        known, order = draw_mask(length, g, kind="ends")
        assert known.tolist() == [i in (0, length - 1) for i in range(length)]
        assert order.tolist() == list(range(length))

        known, _ = draw_mask(length, g, kind="uneven")
        assert known.sum() == 2

        known, _ = draw_mask(length, g, kind="multi")
        assert known.sum() >= (3 if length >= 4 else 2) and not known.all()

        known, _ = draw_mask(length, g, kind="single")
        assert known.sum() == 1

        known, _ = draw_mask(length, g, kind="context")
        assert known[0] and known[-1] and not known.all()
        first_gap = known.tolist().index(False)
        assert not known[first_gap:-1].any()  # a run of known frames, a gap, the key

        known, order = draw_mask(length, g, kind="loop")
        assert known[0] and known[-1] and known.sum() == 2
        assert order[0] == order[-1] == 0  # the first and last frame are the same picture


def test_ping_pong_goes_out_and_back():
    assert ping_pong(5).tolist() == [0, 1, 2, 1, 0]
    assert ping_pong(6).tolist() == [0, 1, 2, 2, 1, 0]


def test_mask_mixture_follows_weights_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    assert all(draw_mask(8, g, {"single": 1.0})[0].sum() == 1 for _ in range(30))
    a = [draw_mask(9, torch.Generator().manual_seed(3))[0].tolist() for _ in range(3)]
    b = [draw_mask(9, torch.Generator().manual_seed(3))[0].tolist() for _ in range(3)]
    assert a == b
    # Every kind shows up under the default mixture.
    counts = {"single": 0, "two": 0, "many": 0}
    for _ in range(300):
        n = int(draw_mask(10, g)[0].sum())
        counts["single" if n == 1 else "two" if n == 2 else "many"] += 1
    assert min(counts.values()) > 15
    assert set(check_weights(None)) == set(MASK_KINDS)
    with pytest.raises(UserError, match="unknown kind 'bounce'"):
        check_weights({"bounce": 1.0})
    with pytest.raises(UserError, match="positive sum"):
        check_weights({"ends": 0.0})


def test_training_loss_counts_unknown_frames_only(model):
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 3, 5, 8, 8, generator=g)
    noise = torch.randn(latents.shape, generator=g)
    mask = torch.zeros(2, 1, 5, 1, 1)
    mask[:, :, [0, 4]] = 1
    sigma = torch.tensor([0.7, 2.0])
    fps = torch.tensor([24.0, 12.0])
    loss = model._loss(model.denoiser, latents, mask, sigma, {}, fps, noise)

    with torch.no_grad():
        x = latents + sigma[:, None, None, None, None] * noise
        x0 = model.denoiser(x, sigma, known=latents * mask, mask=mask, fps=fps)
    sd = model.hparams.sigma_data
    c_out = (sigma * sd / (sigma**2 + sd**2).sqrt())[:, None, None, None, None]
    err = ((x0 - latents) / c_out) ** 2  # EDM's weighted loss, in the network's output space
    torch.testing.assert_close(loss, err[:, :, 1:4].mean(), rtol=1e-4, atol=1e-6)
    assert not torch.isclose(loss, err.mean())


# ---- the window plan ----------------------------------------------------------------------------


def _check_plan(keys, num_frames, window, context):
    windows = plan_windows(keys, num_frames, window, context)
    known = set(keys)
    made = []
    for w in windows:
        assert len(w.positions) <= window
        assert list(w.positions) == sorted(set(w.positions))
        assert set(w.generate) <= set(w.positions) and w.generate
        assert all(p in known for p in w.positions if p not in w.generate)
        if w.stride == 1:
            assert list(w.positions) == list(range(w.positions[0], w.positions[-1] + 1))
        made += w.generate
        known.update(w.generate)
    assert sorted(made) == [p for p in range(num_frames) if p not in keys]  # each once
    return windows


def test_plan_covers_every_frame_once_for_many_timings():
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        num_frames = int(torch.randint(2, 80, (), generator=g))
        count = int(torch.randint(1, min(num_frames, 6) + 1, (), generator=g))
        keys = sorted(torch.randperm(num_frames, generator=g)[:count].tolist())
        if len(keys) == num_frames:
            continue
        window = int(torch.randint(3, 17, (), generator=g))
        context = int(torch.randint(0, 4, (), generator=g))
        _check_plan(keys, num_frames, window, context)


def test_plan_shares_keys_and_carries_context():
    windows = _check_plan([0, 5, 10], 11, window=8, context=2)
    assert [w.positions for w in windows] == [tuple(range(0, 6)), tuple(range(3, 11))]
    assert windows[1].generate == (6, 7, 8, 9)
    # Everything that fits in one window is one window, whatever the keys.
    assert len(_check_plan([0, 2, 3, 7], 8, window=8, context=2)) == 1
    assert plan_windows([0, 1, 2], 3, window=6) == []  # nothing to make


def test_plan_lays_anchors_across_a_long_gap():
    windows = _check_plan([0, 40], 41, window=8, context=2)
    coarse = windows[0]
    assert coarse.positions[0] == 0 and coarse.positions[-1] == 40 and coarse.stride > 1
    steps = [b - a for a, b in zip(coarse.positions, coarse.positions[1:], strict=False)]
    assert max(steps) - min(steps) <= 1  # evenly spaced, to the frame
    assert math.isclose(coarse.stride, 40 / (len(coarse.positions) - 1))
    assert all(len(w.positions) <= 8 for w in windows)


def test_plan_refuses_bad_timing():
    with pytest.raises(UserError, match="strictly increasing"):
        plan_windows([0, 5, 5], 10, 6)
    with pytest.raises(UserError, match="0..9"):
        plan_windows([0, 10], 10, 6)


# ---- sampling -----------------------------------------------------------------------------------


def test_keys_come_back_bit_exact_with_three_keys_and_uneven_timing(model):
    keys = _keys(4)
    positions = [0, 2, 9, 23]
    video = interpolate(model, keys, positions, 24, seed=3)
    assert video.shape == (3, 24, 8, 8)
    for key, p in zip(keys, positions, strict=True):
        assert torch.equal(video[:, p], key)
    assert video.isfinite().all() and video.abs().max() <= 1
    made = [p for p in range(24) if p not in positions]
    assert (video[:, made] - video[:, made].mean()).abs().max() > 0.05  # something was drawn


def test_single_key_extends_both_ways_and_first_equals_last_loops(model):
    key = _keys(1)
    video = interpolate(model, key, [3], 10, seed=0)
    assert torch.equal(video[:, 3], key[0]) and video.shape[1] == 10
    loop = interpolate(model, torch.cat([key, key]), [0, 7], 8, seed=0)
    assert torch.equal(loop[:, 0], loop[:, 7])


def test_one_window_equals_the_direct_window_sample(model):
    keys = _keys(2, seed=1)
    video = interpolate(model, keys, [0, 4], 5, seed=11, fps=12.0)
    # The same window run by hand: noise from (seed, window 0), keys as known latents.
    net = model.sampling_model()  # the trainer samples with its EMA weights
    latents = net.encode_frames(keys)
    known = [True, False, False, False, True]
    cond = net.sampling_conditions(None, None)
    generator = torch.Generator().manual_seed(window_seed(11, 0))
    frames = [latents[0], None, None, None, latents[1]]
    out = net.sample_window(frames, known, cond, fps=12.0, generator=generator)
    direct = net.decode_frames(out).transpose(0, 1)
    torch.testing.assert_close(video[:, 1:4], direct[:, 1:4], rtol=0, atol=0)
    # Any window size that holds the whole sequence gives the same result.
    torch.testing.assert_close(
        interpolate(model, keys, [0, 4], 5, seed=11, fps=12.0, window=5), video, rtol=0, atol=0
    )


def test_windows_do_not_depend_on_the_windows_after_them(model):
    keys = _keys(4, seed=2)
    short = interpolate(model, keys[:3], [0, 5, 10], 11, seed=5, window=8)
    longer = interpolate(model, keys, [0, 5, 10, 15], 16, seed=5, window=8)
    torch.testing.assert_close(longer[:, :11], short, rtol=0, atol=0)
    other_seed = interpolate(model, keys[:3], [0, 5, 10], 11, seed=6, window=8)
    assert not torch.equal(other_seed, short)


def test_sample_window_keeps_known_frames_exactly(model):
    latents = torch.randn(4, 3, 8, 8)
    known = [True, False, True, False]
    frames = [latents[0], None, latents[2], None]
    net = model.sampling_model()
    cond = net.sampling_conditions(None, None)
    out = net.sample_window(frames, known, cond, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[0], latents[0]) and torch.equal(out[2], latents[2])


def test_memory_stays_flat_in_the_number_of_frames(model, monkeypatch):
    calls: list[tuple[str, int]] = []
    pipe = model.pipeline()
    sample_window, decode = pipe.model.sample_window, pipe.model.decode_frames

    def recording_sample(latents, *args, **kwargs):
        calls.append(("net", len(latents)))
        return sample_window(latents, *args, **kwargs)

    def recording_decode(latents):
        calls.append(("decode", len(latents)))
        return decode(latents)

    monkeypatch.setattr(pipe.model, "sample_window", recording_sample)
    monkeypatch.setattr(pipe.model, "decode_frames", recording_decode)
    peaks = {}
    for length in (20, 60):
        calls.clear()
        stream = interpolate_frames(pipe, _keys(2), [0, length - 1], length, seed=0)
        next(stream)
        next(stream)  # the second frame needs the first fine window
        runs_before_first_frames = sum(kind == "net" for kind, _ in calls)
        frames = 2 + sum(1 for _ in stream)
        runs = sum(kind == "net" for kind, _ in calls)
        assert frames == length
        assert runs_before_first_frames < runs  # frames stream out before the sequence is done
        peaks[length] = max(n for _, n in calls)
    assert peaks[20] <= 6 and peaks[60] <= 6  # never more than one window of frames at a time


def test_bad_sampling_input_is_a_user_error(model):
    with pytest.raises(UserError, match="2 frame numbers for 3 keys"):
        interpolate(model, _keys(3), [0, 4], 5)
    with pytest.raises(UserError, match="sampler"):
        interpolate(model, _keys(2), [0, 4], 5, sampler="nope")
    with pytest.raises(UserError, match="no text conditioning"):
        interpolate(model, _keys(2), [0, 4], 5, prompt="a red circle")
    with pytest.raises(UserError, match="multiples of 2"):
        interpolate(model, _keys(2, size=7), [0, 4], 5)


def test_flow_init_refines_the_flow_inbetweens_across_windows(model):
    keys = _keys(3, seed=4)
    positions = [1, 4, 11]  # uneven, frames before the first key, several windows of 6
    flow = PathFrames(to_uint8(keys), positions)
    expected = torch.stack([torch.from_numpy(flow(f)) for f in range(13)]).float() / 127.5 - 1
    near = interpolate(model, keys, positions, 13, seed=1, init="flow", init_sigma=0.004)
    for key, p in zip(keys, positions, strict=True):
        assert torch.equal(near[:, p], key)
    # From a tiny noise level the model can only nudge the flow frames...
    assert (near.permute(1, 0, 2, 3) - expected.permute(0, 3, 1, 2)).abs().max() < 0.05
    # ...from a high one it redraws them, and from noise it ignores flow altogether.
    far = interpolate(model, keys, positions, 13, seed=1, init="flow", init_sigma=20.0)
    noise = interpolate(model, keys, positions, 13, seed=1, init="noise")
    made = [f for f in range(13) if f not in positions]
    assert (far[:, made] - near[:, made]).abs().max() > 0.3
    assert (noise[:, made] - near[:, made]).abs().max() > 0.3
    assert torch.equal(noise, interpolate(model, keys, positions, 13, seed=1))  # model default


def test_flow_frames_compute_each_pair_once(monkeypatch):
    import interpolate.flow as flow_module

    calls = []
    real = flow_module.dis_flows
    monkeypatch.setattr(flow_module, "dis_flows", lambda a, b: calls.append(1) or real(a, b))
    keys = to_uint8(_keys(3, size=16))
    flow = FlowFrames(keys, [0, 4, 8])
    frames = [flow(f) for f in (2, 1, 3, 6, 2)]
    assert len(calls) == 2 and all(f.shape == (16, 16, 3) for f in frames)
    assert (flow(0) == keys[0]).all() and (flow(8) == keys[2]).all() and (flow(9) == keys[2]).all()


@pytest.mark.parametrize(
    ("init", "sigma", "message"),
    [
        ("warp", 0.3, "init: expected one of noise, flow"),
        ("flow", 0.0, "init sigma"),
        ("flow", float("nan"), "init sigma"),
        ("flow", "0.3", "init sigma"),
        ("flow", 100, "init sigma"),
    ],
)
def test_bad_init_is_a_user_error(model, init, sigma, message):
    with pytest.raises(UserError, match=message):
        interpolate(model, _keys(2), [0, 4], 5, init=init, init_sigma=sigma)


# ---- training and reloading ---------------------------------------------------------------------

TRAIN_ARGS = ["--config", "configs/interpolate/tiny.yaml", "--data.size", "16"]


def test_tiny_config_trains_with_fast_dev_run(tiny_shapes, tmp_path):
    from pipeline.cli import main

    argv = ["train", "interpolate", "fit", *TRAIN_ARGS, "--trainer.fast_dev_run", "true"]
    argv += ["--data.data", str(tiny_shapes), "--trainer.default_root_dir", str(tmp_path)]
    assert main(argv) == 0


@pytest.mark.slow
def test_trained_model_reloads_from_ckpt_and_pretrained_folder(tiny_shapes, tmp_path):
    from pipeline.train import build_cli

    args = [
        *TRAIN_ARGS,
        f"--data.data={tiny_shapes}",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=0",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks=[]",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    cli = build_cli("interpolate", args, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    trained = cli.model.eval()
    assert trained.global_step == 2
    ckpt = tmp_path / "model.ckpt"
    cli.trainer.save_checkpoint(ckpt)

    keys, positions = _keys(2, size=16), [0, 5]
    options = {"seed": 4, "prompt": "a red circle bounces to the left", "guidance": 2.0}
    reference = interpolate(trained, keys, positions, 6, **options)
    from_ckpt = InterpolatePipeline.from_pretrained(ckpt)
    torch.testing.assert_close(interpolate(from_ckpt, keys, positions, 6, **options), reference)

    folder = trained.save_pretrained(tmp_path / "pretrained", fp16=False)
    with pytest.raises(UserError, match="already exists"):
        trained.save_pretrained(folder)
    from_folder = InterpolatePipeline.from_pretrained(folder)
    assert isinstance(from_folder.model, InterpolateModel)  # the EMA weights, no trainer
    assert not any(p.requires_grad for p in from_folder.model.parameters())
    torch.testing.assert_close(interpolate(from_folder, keys, positions, 6, **options), reference)
    half = InterpolatePipeline.from_pretrained(trained.save_pretrained(tmp_path / "fp16"))
    video = interpolate(half, keys, positions, 6, **options)
    assert (video - reference).abs().max() < 0.1  # fp16 weights: close, not identical


def test_unknown_model_name_says_none_is_shipped():
    with pytest.raises(UserError, match="not a shipped interpolation model"):
        InterpolatePipeline.from_pretrained("shapes-v0")
