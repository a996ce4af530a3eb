"""The frame autoencoder: shapes, chunking, identity, saving, latent scale, training, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from keyframe.autoencoder import FrameAutoencoder, IdentityAutoencoder, measure_scale
from keyframe.autoencoder_files import load_autoencoder, save_autoencoder
from keyframe.autoencoder_training import AutoencoderModule, sobel_l1
from keyframe.errors import UserError
from keyframe.frame_metrics import psnr, reconstruction_metrics, ssim

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "autoencoder"


def flat_scenes(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Flat-colour frames: one circle or square on a solid background, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    frames = []
    for i in range(n):
        bg, fg = torch.rand(3, 1, 1, generator=g) * 2 - 1, torch.rand(3, 1, 1, generator=g) * 2 - 1
        cx, cy = torch.rand(2, generator=g) * 0.5 + 0.25
        if i % 2 == 0:
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < 0.04
        else:
            inside = ((xx - cx).abs() < 0.15) & ((yy - cy).abs() < 0.15)
        m = inside.float()
        frames.append(bg * (1 - m) + fg * m)
    return torch.stack(frames)


class _Frames(Dataset):
    def __init__(self, frames: torch.Tensor):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.frames[i], "caption": "a shape"}


def _small_ae(mult=(1, 2, 2), seed: int = 0) -> FrameAutoencoder:
    torch.manual_seed(seed)
    return FrameAutoencoder(3, 4, base_channels=8, channel_mult=mult, num_res_blocks=1).eval()


@pytest.mark.parametrize("mult, factor", [((1, 2, 2), 4), ((1, 1, 2, 2), 8)])
def test_encode_decode_shapes_images_and_videos(mult, factor):
    ae = _small_ae(mult)
    assert ae.factor == factor
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    video = torch.rand(2, 3, 5, 32, 16) * 2 - 1
    with torch.no_grad():
        z = ae.encode(images)
        zv = ae.encode(video, chunk=3)
        assert z.shape == (3, 4, 32 // factor, 32 // factor) and z.dtype == torch.float32
        assert zv.shape == (2, 4, 5, 32 // factor, 16 // factor)
        assert ae.decode(z).shape == images.shape
        assert ae.decode(zv, chunk=4).shape == video.shape
        # Video frames are encoded exactly as the same frames given as images.
        frames = video.permute(0, 2, 1, 3, 4).reshape(10, 3, 32, 16)
        flat = ae.encode(frames).reshape(2, 5, 4, 32 // factor, 16 // factor)
        torch.testing.assert_close(zv, flat.permute(0, 2, 1, 3, 4), atol=1e-5, rtol=1e-4)
        assert ae.encode(images.double()).dtype == torch.float64  # output follows the input
    with pytest.raises(UserError, match="divisible by the autoencoder factor"):
        ae.encode(torch.zeros(1, 3, 30, 32))


def test_chunked_equals_one_shot():
    ae = _small_ae()
    video = torch.rand(2, 3, 7, 16, 16) * 2 - 1
    with torch.no_grad():
        z_all = ae.encode(video, chunk=1000)
        torch.testing.assert_close(ae.encode(video, chunk=3), z_all, atol=1e-5, rtol=1e-4)
        x_all = ae.decode(z_all, chunk=1000)
        torch.testing.assert_close(ae.decode(z_all, chunk=4), x_all, atol=1e-5, rtol=1e-4)
        a = ae.encode(video, sample=True, generator=torch.Generator().manual_seed(1))
        b = ae.encode(video, sample=True, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert (a - z_all).abs().max() > 0  # sampling adds posterior noise


def test_identity_is_exact():
    ae = IdentityAutoencoder()
    video = torch.rand(1, 3, 4, 10, 6) * 2 - 1
    assert ae.factor == 1 and ae.latent_channels == 3
    assert torch.equal(ae.encode(video, chunk=3), video)
    assert torch.equal(ae.decode(ae.encode(video), chunk=2), video)
    assert torch.equal(ae.encode(video[:, :, 0], sample=True), video[:, :, 0])
    metrics = reconstruction_metrics(ae, video)
    assert metrics["psnr"] >= 99 and metrics["ssim"] == pytest.approx(1.0)


def test_measure_scale_gives_unit_variance():
    ae = _small_ae()
    frames = flat_scenes(8, 16, seed=3)
    batches = [{"image": frames[:4]}, {"image": frames[4:]}]
    scale, shift = measure_scale(ae, batches)
    assert scale == ae.scale_factor and shift == ae.shift and scale != 1.0
    with torch.no_grad():
        z = ae.encode(frames)
        assert z.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-3)
        assert z.mean().item() == pytest.approx(0.0, abs=1e-3)


def test_save_load_round_trip(tmp_path):
    ae = _small_ae(seed=5)
    ae.scale_factor, ae.shift = 0.37, 0.125
    frames = flat_scenes(2, 16)
    out = save_autoencoder(ae, tmp_path / "ae")
    meta = json.loads((out / "config.json").read_text())
    assert meta["kind"] == "autoencoder" and meta["autoencoder"]["kind"] == "kl"
    assert meta["autoencoder"]["config"]["scale_factor"] == pytest.approx(0.37)
    loaded = load_autoencoder(out)
    with torch.no_grad():
        assert torch.equal(loaded.encode(frames), ae.encode(frames))
        z = ae.encode(frames)
        assert torch.equal(loaded.decode(z), ae.decode(z))
    assert load_autoencoder(out / "model.safetensors").scale_factor == pytest.approx(0.37)
    with pytest.raises(UserError, match="already exists"):
        save_autoencoder(ae, out)
    ae.scale_factor = 0.5
    assert load_autoencoder(save_autoencoder(ae, out, overwrite=True)).scale_factor == 0.5

    half = load_autoencoder(save_autoencoder(ae, tmp_path / "half", fp16=True))
    assert half.scale_factor == ae.scale_factor  # the scale is kept in fp32
    with torch.no_grad():
        torch.testing.assert_close(half.encode(frames), ae.encode(frames), atol=2e-2, rtol=2e-2)
    assert not list(tmp_path.rglob("*.tmp"))

    assert isinstance(load_autoencoder("identity"), IdentityAutoencoder)
    ident = load_autoencoder(save_autoencoder(IdentityAutoencoder(), tmp_path / "id"))
    assert isinstance(ident, IdentityAutoencoder)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="nowhere"):
        load_autoencoder(tmp_path / "nowhere")
    out = save_autoencoder(_small_ae(), tmp_path / "ae")
    (out / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="model.safetensors"):
        load_autoencoder(out)
    (out / "config.json").write_text("{ broken")
    with pytest.raises(UserError, match="config.json"):
        load_autoencoder(out)
    with pytest.raises(UserError, match="missing.ckpt"):
        load_autoencoder(tmp_path / "missing.ckpt")


def test_metrics_and_losses_behave():
    x = flat_scenes(2, 16)
    assert psnr(x, x).item() >= 99
    # A constant error of 0.1 in [0, 1] units is 20 dB.
    assert psnr((x * 0).clamp(-1, 1) + 0.2 - 1, x * 0 - 1).item() == pytest.approx(20.0, abs=1e-3)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    a, b = ssim(x + 0.05 * noise, x).item(), ssim(x + 0.3 * noise, x).item()
    assert 1.0 > a > b
    assert ssim(x + 0.3 * noise, x).item() == pytest.approx(ssim(x, x + 0.3 * noise).item())
    assert sobel_l1(x + 0.3, x).item() == pytest.approx(0.0, abs=1e-6)  # offsets have no edges
    assert sobel_l1(x.flip(-1), x).item() > 0.01


def _trainer(steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **kwargs,
    )  # fmt: skip


@pytest.mark.slow
def test_tiny_config_overfits_flat_frames_and_stores_its_scale(tmp_path):
    torch.manual_seed(0)
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())["model"]
    module = AutoencoderModule(**config)
    frames = flat_scenes(4, 32)
    loader = DataLoader(_Frames(frames), batch_size=4)
    trainer = _trainer(250)
    trainer.fit(module, loader)
    ae = module.autoencoder.eval()
    with torch.no_grad():
        z = ae.encode(frames)
        quality = psnr(ae.decode(z), frames).item()
    print(f"tiny autoencoder: {quality:.1f} dB PSNR after 250 steps")
    assert quality > 25.0, f"PSNR {quality:.1f} dB after 250 steps"
    # Fitting ended by measuring the latent scale on the training data.
    assert z.std(unbiased=False).item() == pytest.approx(1.0, abs=0.05)
    # The Lightning checkpoint carries weights and scale.
    trainer.save_checkpoint(tmp_path / "ae.ckpt")
    loaded = load_autoencoder(tmp_path / "ae.ckpt")
    assert loaded.scale_factor == ae.scale_factor and loaded.factor == 4
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(frames), z)


def test_validation_measures_the_scale_and_the_discriminator_trains():
    torch.manual_seed(0)
    module = AutoencoderModule(
        base_channels=8, channel_mult=[1, 2], disc_weight=0.5, disc_channels=8, scale_batches=0
    )
    disc_before = [p.detach().clone() for p in module.discriminator.parameters()]
    loader = DataLoader(_Frames(flat_scenes(4, 32)), batch_size=2)
    trainer = _trainer(4, limit_val_batches=2, val_check_interval=2, num_sanity_val_steps=0)
    trainer.fit(module, loader, loader)
    assert trainer.global_step == 4  # two optimizer steps per batch
    moved = [
        (a - b).abs().max()
        for a, b in zip(module.discriminator.parameters(), disc_before, strict=True)
    ]
    assert max(moved) > 0
    assert module.autoencoder.scale_factor != 1.0  # set from validation statistics
    assert "train/d_loss" in trainer.callback_metrics and "val/psnr" in trainer.callback_metrics


def test_norm_groups_zero_builds_an_autoencoder_without_group_norm(tmp_path):
    ae = FrameAutoencoder(base_channels=16, channel_mult=(1, 2), norm_groups=0)
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in ae.modules())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert ae.decode(ae.encode(x)).shape == x.shape
    save_autoencoder(ae, tmp_path / "ae")
    again = load_autoencoder(tmp_path / "ae")
    assert again.config()["norm_groups"] == 0
    assert torch.equal(again.decode(again.encode(x)), ae.decode(ae.encode(x)))


def test_freeze_encoder_trains_the_decoder_only_and_keeps_the_latent_space(tmp_path):
    source = FrameAutoencoder(base_channels=8, channel_mult=(1, 2), norm_groups=0)
    source.scale_factor, source.shift = 0.7, 0.05
    save_autoencoder(source, tmp_path / "stage1")
    args = dict(base_channels=8, channel_mult=[1, 2], norm_groups=0, lr=1e-2, scale_batches=4)
    module = AutoencoderModule(**args, init_from=str(tmp_path / "stage1"), freeze_encoder=True)
    frames = flat_scenes(4, 16)
    with torch.no_grad():
        before = module.autoencoder.encode(frames)
        decoded_before = module.autoencoder.decode(before)
    loader = DataLoader(_Frames(frames), batch_size=4)
    _trainer(5, limit_val_batches=1, num_sanity_val_steps=0).fit(module, loader, loader)
    ae = module.autoencoder.eval()
    with torch.no_grad():
        torch.testing.assert_close(ae.encode(frames), before, rtol=0, atol=0)
        assert (ae.decode(before) - decoded_before).abs().max() > 1e-3  # the decoder moved
    assert (ae.scale_factor, ae.shift) == pytest.approx(
        (0.7, 0.05)
    )  # neither validation nor fit end re-measured
    other = tmp_path / "other"
    save_autoencoder(FrameAutoencoder(base_channels=16, channel_mult=(1, 2)), other)
    with pytest.raises(UserError, match="init_from.*architecture"):
        AutoencoderModule(**args, init_from=str(other))


def test_edge_weighted_l1_counts_errors_on_outlines_more():
    from keyframe.autoencoder_training import edge_weighted_l1

    target = -torch.ones(1, 3, 16, 16)
    target[..., 6:10, 6:10] = 1.0  # a small square
    on_edge, far = target.clone(), target.clone()
    on_edge[..., 6, 6] = -1.0  # a corner rounded off
    far[..., 0, 0] = 1.0  # the same error in the flat background
    plain = [(p - target).abs().mean() for p in (on_edge, far)]
    assert plain[0] == plain[1]
    weighted = [edge_weighted_l1(p, target, 10.0) for p in (on_edge, far)]
    assert weighted[0] > 3 * weighted[1]
    assert edge_weighted_l1(far, target, 0.0) == plain[1]
