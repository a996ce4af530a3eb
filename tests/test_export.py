"""`animatic export`: checkpoints to inference folders, swapping in a fine-tuned decoder, and the
shipped autoencoder found by name."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from keyframe import int8, pretrained
from keyframe.autoencoder import FrameAutoencoder
from keyframe.autoencoder_files import load_autoencoder, save_autoencoder
from keyframe.errors import UserError
from keyframe.pretrained import from_pretrained, save_pretrained
from pipeline.cli import main
from pipeline.export import export
from tests.test_keyframe_module import PROMPTS, quiet_trainer, randomised, tiny_module


def _autoencoder(seed: int) -> FrameAutoencoder:
    torch.manual_seed(seed)
    ae = FrameAutoencoder(3, 4, base_channels=8, channel_mult=[1, 2], num_res_blocks=1)
    ae.scale_factor, ae.shift = 0.7, 0.1
    return ae


@pytest.fixture()
def checkpoint(tmp_path):
    """A tiny keyframe checkpoint in the latent space of a small autoencoder."""
    ae_dir = save_autoencoder(_autoencoder(0), tmp_path / "ae")
    module = randomised(tiny_module(autoencoder=str(ae_dir)))
    trainer = quiet_trainer(max_steps=0)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    return tmp_path / "model.ckpt", module


@pytest.mark.slow
def test_export_writes_the_model_and_swaps_in_a_decoder(checkpoint, tmp_path, capsys):
    ckpt, module = checkpoint
    assert main(["export", "keyframe", str(ckpt), "--out", str(tmp_path / "plain")]) == 0
    assert "MiB" in capsys.readouterr().out
    torch.testing.assert_close(
        from_pretrained(tmp_path / "plain")(PROMPTS[:1], seed=2),
        module.sample(PROMPTS[:1], seed=2),
        atol=0.05,
        rtol=0,
    )
    tuned = _autoencoder(0)
    tuned.load_state_dict(module.autoencoder.state_dict())
    with torch.no_grad():
        for p in tuned.decoder.parameters():
            p.add_(0.01)
    tuned_dir = save_autoencoder(tuned, tmp_path / "tuned")
    export("keyframe", ckpt, tmp_path / "swapped", autoencoder=tuned_dir, fp16=False)
    loaded = from_pretrained(tmp_path / "swapped").model.autoencoder
    for key, value in tuned.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert main(["export", "keyframe", str(ckpt), "--out", str(tmp_path / "plain")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_an_fp16_export_takes_a_decoder_from_its_fp32_run(checkpoint, tmp_path):
    """The shipped fp16 model keeps its encoder rounded; the decoder run's fp32 encoder is the
    same latent space and must be accepted, while the decoder comes in (rounded to fp16)."""
    ckpt, module = checkpoint
    shipped = export("keyframe", ckpt, tmp_path / "fp16")  # fp16 by default
    tuned = _autoencoder(0)
    tuned.load_state_dict(module.autoencoder.state_dict())  # the fp32 encoder
    with torch.no_grad():
        for p in tuned.decoder.parameters():
            p.add_(0.01)
    tuned_dir = save_autoencoder(tuned, tmp_path / "tuned", fp16=False)
    export("keyframe", shipped, tmp_path / "swapped", autoencoder=tuned_dir)
    loaded = from_pretrained(tmp_path / "swapped").model.autoencoder.state_dict()
    for key, value in tuned.state_dict().items():
        if key.startswith("decoder."):
            assert torch.equal(loaded[key], value.half().float()), key


def test_a_decoder_from_another_latent_space_is_refused(checkpoint, tmp_path, capsys):
    ckpt, _ = checkpoint
    other = save_autoencoder(_autoencoder(1), tmp_path / "other")
    argv = ["export", "keyframe", str(ckpt), "--out", str(tmp_path / "x"), "--autoencoder"]
    assert main([*argv, str(other)]) == 2
    err = capsys.readouterr().err
    assert "encoder weight" in err and "latent spaces differ" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x" / "model.safetensors").exists()


def test_autoencoder_export_and_lookup_by_shipped_name(checkpoint, tmp_path, monkeypatch):
    _, module = checkpoint
    shipped = tmp_path / "weights"
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", shipped)
    with pytest.raises(UserError, match="not a shipped autoencoder name.*none are shipped"):
        load_autoencoder("toy")
    save_pretrained(module, shipped / "toy", fp16=False)
    ae = load_autoencoder("toy")
    assert ae.scale_factor == pytest.approx(0.7) and not ae.training
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ae.encode(x), module.autoencoder.encode(x))
    # An autoencoder checkpoint exports to the autoencoder folder layout.
    out = export("autoencoder", tmp_path / "ae", tmp_path / "ae16")
    assert (out / "model.safetensors").is_file()


def test_a_shared_autoencoder_ships_once(checkpoint, tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file

    ckpt, module = checkpoint
    shipped = tmp_path / "weights"
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", shipped)
    argv = ["export", "keyframe", str(ckpt), "--out", str(tmp_path / "lean")]
    assert main([*argv, "--share-autoencoder", "toy"]) == 2  # nothing shipped as toy yet
    assert "not a shipped model name" in capsys.readouterr().err
    save_pretrained(module, shipped / "toy")
    assert main([*argv, "--share-autoencoder", "toy"]) == 0
    weights = load_file(tmp_path / "lean" / "model.safetensors")
    assert weights and not any(k.startswith("autoencoder.") for k in weights)
    lean = from_pretrained(tmp_path / "lean")
    torch.testing.assert_close(
        lean(PROMPTS[:1], seed=3), module.sample(PROMPTS[:1], seed=3), atol=0.05, rtol=0
    )
    # A model whose autoencoder is not the shipped one may not leave its own out.
    other = randomised(
        tiny_module(autoencoder=str(save_autoencoder(_autoencoder(1), tmp_path / "o")))
    )
    with pytest.raises(UserError, match="shipped one differs"):
        save_pretrained(other, tmp_path / "bad", shared_autoencoder="toy")


@pytest.mark.slow
def test_int8_export_is_smaller_and_samples_like_fp16(checkpoint, tmp_path, capsys):
    ckpt, module = checkpoint
    assert main(["export", "keyframe", str(ckpt), "--out", str(tmp_path / "fp16")]) == 0
    assert main(["export", "keyframe", str(ckpt), "--out", str(tmp_path / "q"), "--int8"]) == 0
    size = {d: (tmp_path / d / pretrained.WEIGHTS_NAME).stat().st_size for d in ("fp16", "q")}
    assert size["q"] < 0.75 * size["fp16"]
    stored = load_file(str(tmp_path / "q" / pretrained.WEIGHTS_NAME))
    assert any(v.dtype == torch.int8 for k, v in stored.items() if k.startswith("net."))
    assert all(v.dtype != torch.int8 for k, v in stored.items() if k.startswith("autoencoder."))
    full, small = from_pretrained(tmp_path / "fp16").model, from_pretrained(tmp_path / "q").model
    x = torch.randn(2, full.latent_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = [m.denoiser(x, 1.0, **m.encode_text(PROMPTS[:2])) for m in (full, small)]
    # a random tiny net amplifies rounding far more than a trained one (shipped: 56 dB apart)
    assert (outs[0] - outs[1]).pow(2).mean().sqrt() < 0.02 * outs[0].pow(2).mean().sqrt()
    assert main(["export", "autoencoder", str(ckpt), "--out", str(tmp_path / "a"), "--int8"]) == 2
    assert "--int8: for keyframe and interpolate" in capsys.readouterr().err


def test_int8_round_trip_error_is_within_half_a_step_per_channel():
    gen = torch.Generator().manual_seed(0)  # not the global RNG: other tests move it
    weight = torch.randn(6, 4, 3, 3, generator=gen) * torch.logspace(-3, 1, 6)[:, None, None, None]
    state = {
        "net.conv.weight": weight,
        "net.conv.bias": torch.randn(6, generator=gen),
        "text.pos": torch.randn(3, 4, generator=gen),
    }
    stored = int8.quantize(state)
    assert stored["net.conv.weight"].dtype == torch.int8
    assert torch.equal(stored["net.conv.bias"], state["net.conv.bias"])
    assert torch.equal(stored["text.pos"], state["text.pos"])  # not a weight matrix: kept
    back = int8.dequantize(stored)
    assert set(back) == set(state)
    step = weight.abs().amax((1, 2, 3)) / 127
    err = (back["net.conv.weight"].float() - weight).abs().amax((1, 2, 3))
    assert (err <= step * 0.5 + step.clamp_min(1e-3) * 1e-2).all()


def test_an_interpolator_export_keeps_its_motion_prior(tmp_path, tiny_interpolate, capsys):
    from interpolate.motion import MotionPrior
    from interpolate.pipeline import InterpolatePipeline

    tiny = dict(num_frames=4, model_channels=8, channel_mult=[1], num_res_blocks=1)
    source = tiny_interpolate(image_size=16, attention_levels=[], **tiny).save_pretrained(
        tmp_path / "source"
    )
    assert InterpolatePipeline.from_pretrained(source).motion_prior is None
    torch.manual_seed(0)
    prior = MotionPrior(hidden=8, depth=1).eval()
    prior.save_pretrained(source / "motion", fp16=False)
    assert main(["export", "interpolate", str(source), "--out", str(tmp_path / "copy")]) == 0
    loaded = InterpolatePipeline.from_pretrained(tmp_path / "copy").motion_prior
    pos, times = torch.rand(2, 4, 2), torch.tensor([0.0, 0.1, 0.2, 0.3]).expand(2, 4)
    args = (pos, times, torch.ones(2, 4), torch.full((2,), 0.15))
    assert torch.allclose(loaded(*args), prior(*args), atol=1e-3)
    assert main(["export", "motion", str(source / "motion"), "--out", str(tmp_path / "m")]) == 0
    assert main(["export", "motion", str(source), "--out", str(tmp_path / "m2")]) == 2
    assert "its kind is 'interpolate', expected 'motion'" in capsys.readouterr().err
