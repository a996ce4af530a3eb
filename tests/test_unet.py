"""The 2D U-Net: shapes, conditioning, the temporal inflation hook, batch independence."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange
from torch import nn

from keyframe.unet import UNet


def _randomise_zeros(net: nn.Module, seed: int = 0) -> nn.Module:
    """Zero-initialised output layers make a fresh U-Net output 0; give them weights for tests."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net.eval()


@pytest.mark.parametrize(
    "kwargs, size",
    [
        (
            {"model_channels": 8, "channel_mult": [1], "num_res_blocks": 1, "attention_levels": []},
            6,
        ),
        (
            {
                "model_channels": 8,
                "channel_mult": [1, 2],
                "num_res_blocks": 1,
                "attention_levels": [0],
            },
            8,
        ),
        (
            {
                "model_channels": 16,
                "channel_mult": (1, 2, 3),
                "num_res_blocks": 2,
                "attention_levels": [0, 2],
                "context_dim": 12,
                "pooled_dim": 6,
            },
            8,
        ),
        (
            {
                "model_channels": 8,
                "channel_mult": [1, 1, 2, 2],
                "num_res_blocks": 1,
                "attention_levels": [1],
                "head_dim": 4,
                "context_dim": 5,
            },
            16,
        ),
    ],
)
@pytest.mark.slow
def test_output_shape(kwargs, size):
    torch.manual_seed(0)
    net = _randomise_zeros(UNet(in_channels=5, out_channels=3, **kwargs))
    x = torch.randn(2, 5, size, size)
    cond = {}
    if kwargs.get("context_dim"):
        cond["context"] = torch.randn(2, 7, kwargs["context_dim"])
        cond["context_mask"] = torch.ones(2, 7, dtype=torch.bool)
    if kwargs.get("pooled_dim"):
        cond["pooled"] = torch.randn(2, kwargs["pooled_dim"])
    out = net(x, torch.randn(2), **cond)
    assert out.shape == (2, 3, size, size)
    assert torch.isfinite(out).all()
    assert net.emb_dim == 4 * kwargs["model_channels"]


def test_fresh_net_outputs_zero_and_bad_sizes_are_refused():
    net = UNet(3, 3, model_channels=8, channel_mult=[1, 2, 2], num_res_blocks=1)
    assert net(torch.randn(1, 3, 8, 8), torch.zeros(1)).abs().max() == 0
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(1, 3, 6, 6), torch.zeros(1))
    with pytest.raises(ValueError, match="attention_levels"):
        UNet(3, 3, channel_mult=[1, 2], attention_levels=[2])


def _text_net() -> UNet:
    torch.manual_seed(1)
    net = UNet(
        3, 3, model_channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_levels=[1],
        context_dim=8, pooled_dim=8,
    )  # fmt: skip
    return _randomise_zeros(net)


def test_cross_attention_uses_context_and_respects_mask():
    net = _text_net()
    x, c_noise = torch.randn(2, 3, 8, 8), torch.tensor([0.3, -1.0])
    ctx = torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    with torch.no_grad():
        base = net(x, c_noise, ctx, mask)
        other_valid = ctx.clone()
        other_valid[:, 0] += 1.0
        changed = net(x, c_noise, other_valid, mask)
        other_padding = ctx.clone()
        other_padding[0, 3:] = torch.randn(3, 8) * 10
        other_padding[1, 5:] = torch.randn(1, 8) * 10
        padded = net(x, c_noise, other_padding, mask)
        no_mask = net(x, c_noise, other_padding)
    assert (changed - base).abs().amax(dim=(1, 2, 3)).min() > 1e-4
    torch.testing.assert_close(padded, base)
    assert (no_mask - base).abs().max() > 1e-4


def test_fully_masked_context_acts_like_no_context():
    net = _text_net()
    x, c_noise = torch.randn(1, 3, 8, 8), torch.tensor([0.5])
    with torch.no_grad():
        masked = net(x, c_noise, torch.randn(1, 4, 8), torch.zeros(1, 4, dtype=torch.bool))
        none = net(x, c_noise)
    assert torch.isfinite(masked).all()
    torch.testing.assert_close(masked, none)


@pytest.mark.slow
def test_pooled_and_extra_embedding_condition_the_output():
    net = _text_net()
    x, c_noise = torch.randn(2, 3, 8, 8), torch.tensor([0.3, 0.3])
    with torch.no_grad():
        base = net(x, c_noise, pooled=torch.zeros(2, 8))
        pooled = net(x, c_noise, pooled=torch.ones(2, 8))
        extra = net(x, c_noise, pooled=torch.zeros(2, 8), extra_emb=torch.ones(2, net.emb_dim))
        noise = net(x, torch.tensor([1.3, 1.3]), pooled=torch.zeros(2, 8))
    for other in (pooled, extra, noise):
        assert (other - base).abs().max() > 1e-4


def test_batch_elements_are_independent():
    net = _text_net()
    x, c_noise, ctx = torch.randn(3, 3, 8, 8), torch.randn(3), torch.randn(3, 4, 8)
    with torch.no_grad():
        together = net(x, c_noise, ctx)
        alone = torch.cat([net(x[i : i + 1], c_noise[i : i + 1], ctx[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


class _Recorder(nn.Module):
    """Temporal layer stand-in: records what it sees; a scale parameter makes it inflatable."""

    def __init__(self, channels: int, log: list):
        super().__init__()
        self.channels, self.log = channels, log
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, h: torch.Tensor, num_frames: int) -> torch.Tensor:
        self.log.append((tuple(h.shape), num_frames, self.channels))
        video = rearrange(h, "(b f) c h w -> b c f h w", f=num_frames)
        return rearrange(video, "b c f h w -> (b f) c h w") * self.scale[:, None, None]


def test_temporal_factory_is_called_after_every_block_with_frames():
    log: list = []
    kwargs = {"model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1}
    kwargs |= {"attention_levels": [1], "context_dim": 8}
    torch.manual_seed(2)
    plain = _randomise_zeros(UNet(3, 3, **kwargs))
    video = UNet(3, 3, **kwargs, temporal_layer=lambda ch: _Recorder(ch, log)).eval()

    # Spatial parameter names are unchanged: the plain checkpoint loads, only temporal keys miss.
    result = video.load_state_dict(plain.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all("temporal" in k for k in result.missing_keys)
    assert set(plain.state_dict()) == {k for k in video.state_dict() if "temporal" not in k}

    b, f = 2, 3
    x = torch.randn(b * f, 3, 8, 8)
    c_noise = torch.randn(b * f)
    ctx = torch.randn(b * f, 4, 8)
    with torch.no_grad():
        out = video(x, c_noise, ctx, num_frames=f, extra_emb=torch.zeros(b, video.emb_dim))
        ref = plain(x, c_noise, ctx)
    torch.testing.assert_close(out, ref)  # identity temporal layers: frames are independent

    # Blocks: 1 + 1 down, 2 mid, 2 + 2 up = 8 ResBlocks; attention at level 1 (1 down, 1 mid, 2 up).
    n_temporal = sum(isinstance(m, _Recorder) for m in video.modules())
    assert n_temporal == 8 + 4
    assert len(log) == n_temporal
    for shape, frames, channels in log:
        assert frames == f and shape[0] == b * f and shape[1] == channels
        assert shape[2] == shape[3] and shape[2] in (8, 4)


def test_gradient_checkpointing_matches_plain_gradients():
    kwargs = {"model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1}
    kwargs |= {"attention_levels": [1], "context_dim": 4}
    torch.manual_seed(3)
    net = _randomise_zeros(UNet(3, 3, **kwargs)).train()
    ckpt = UNet(3, 3, **kwargs, checkpoint=True).train()
    ckpt.load_state_dict(net.state_dict())
    x, c, ctx = torch.randn(2, 3, 8, 8), torch.randn(2), torch.randn(2, 3, 4)
    net(x, c, ctx).square().mean().backward()
    ckpt(x, c, ctx).square().mean().backward()
    for (name, p), q in zip(net.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_parameter_count_of_a_small_config():
    net = UNet(
        4, 4, model_channels=32, channel_mult=[1, 2, 4], num_res_blocks=2, attention_levels=[1, 2],
        context_dim=64, pooled_dim=64,
    )  # fmt: skip
    count = sum(p.numel() for p in net.parameters())
    print(f"UNet(mc=32, mult=1,2,4, 2 res blocks, attention at 1,2, context 64): {count:,} params")
    assert 4e6 < count < 9e6


def test_position_features_name_every_pixel_the_same_way_at_any_resolution():
    from keyframe.layers import position_features

    small = position_features(4, 6, bands=3)
    assert small.shape == (24, 12)
    assert len({tuple(row.tolist()) for row in small}) == 24  # every pixel distinct
    # Band 0 sine of x: mirror pixels across the vertical centre line get opposite values.
    grid = small.reshape(4, 6, 12)
    torch.testing.assert_close(grid[:, 0, 3], -grid[:, 5, 3])
    # Coordinates are relative to the image: pixel (i, k) of a 3x3 grid has the centre of pixel
    # (3i + 1, 3k + 1) of a 9x9 grid, and the same features.
    coarse = position_features(3, 3, bands=3).reshape(3, 3, 12)
    fine = position_features(9, 9, bands=3).reshape(9, 9, 12)
    torch.testing.assert_close(coarse, fine[1::3, 1::3])


def test_position_bands_let_attention_tell_pixels_apart():
    from keyframe.layers import SpatialTransformer

    x = torch.ones(1, 8, 4, 4)
    for bands in (0, 3):
        block = _randomise_zeros(SpatialTransformer(8, 2, 4, position_bands=bands))
        with torch.no_grad():
            out = block(x)
        spread = (out - out.mean((2, 3), keepdim=True)).abs().max()
        assert (spread > 1e-3) == (bands > 0), bands
