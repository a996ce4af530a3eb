"""Temporal layers and the inflated video U-Net: frame independence at init, mixing after,
relative position bias, and initialisation from a keyframe model."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from interpolate.module import InterpolateModule
from interpolate.temporal import (
    TemporalAttention,
    TemporalConv,
    TemporalLayer,
    VideoUNet,
    relative_positions,
)
from keyframe.errors import UserError

UNET = {"model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_levels": [1]}


pytestmark = pytest.mark.usefixtures("one_thread_module")


def _is_temporal(name: str) -> bool:
    return "temporal" in name or name.startswith("fps_embed")


@torch.no_grad()
def _randomise_spatial(net: torch.nn.Module) -> None:
    """Give the spatial zero-initialised layers (ResBlock conv2, conv_out, ...) random weights, so
    the network's output depends on its input; temporal layers keep their zero projections."""
    for name, p in net.named_parameters():
        if not _is_temporal(name) and not p.any():
            p.normal_(0, 0.2)


@torch.no_grad()
def _randomise_temporal(net: torch.nn.Module) -> None:
    for name, p in net.named_parameters():
        if _is_temporal(name) and not p.any():
            p.normal_(0, 0.2)


def _inputs(b=1, f=5, c=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, f, size, size, generator=g)
    known = torch.randn(b, c, f, size, size, generator=g)
    mask = (torch.rand(b, 1, f, 1, 1, generator=g) < 0.5).float()
    return x, known * mask, mask


def _changed_frames(net, x, known, mask, frame: int) -> list[int]:
    """Frames of the output that change when input frame `frame` changes."""
    c_noise = torch.full((x.shape[0],), 0.3)
    with torch.no_grad():
        base = net(x, c_noise, known, mask)
        x2 = x.clone()
        x2[:, :, frame] += torch.randn_like(x2[:, :, frame])
        out = net(x2, c_noise, known, mask)
    diff = (out - base).abs().amax(dim=(0, 1, 3, 4))
    return [i for i, d in enumerate(diff.tolist()) if d > 1e-6]


def test_fresh_video_unet_treats_frames_independently_until_temporal_layers_train():
    torch.manual_seed(0)
    net = VideoUNet(3, **UNET, temporal_heads=2, max_relative_distance=4).eval()
    _randomise_spatial(net)
    x, known, mask = _inputs()
    assert _changed_frames(net, x, known, mask, frame=2) == [2]

    _randomise_temporal(net)
    changed = _changed_frames(net, x, known, mask, frame=2)
    assert 2 in changed and len(changed) == 5  # conv + attention reach every frame


def test_fresh_video_unet_matches_the_2d_unet_frame_by_frame():
    torch.manual_seed(1)
    net = VideoUNet(3, **UNET, temporal_heads=2).eval()
    _randomise_spatial(net)
    x, known, mask = _inputs(b=2, f=3)
    c_noise = torch.tensor([0.1, -0.4])
    with torch.no_grad():
        video = net(x, c_noise, known, mask)
        frames = rearrange(
            torch.cat([x, known, mask.expand(-1, -1, -1, 8, 8)], 1), "b c f h w -> (b f) c h w"
        )
        per_frame = net.unet(frames, c_noise.repeat_interleave(3), num_frames=1)
    torch.testing.assert_close(video, rearrange(per_frame, "(b f) c h w -> b c f h w", f=3))


def test_temporal_conv_reaches_only_neighbours():
    torch.manual_seed(2)
    conv = TemporalConv(4)
    with torch.no_grad():
        conv.conv2.weight.normal_()
    h = torch.randn(7, 4, 3, 3)  # (b f) c h w with b = 1, f = 7
    h2 = h.clone()
    h2[3] += torch.randn(4, 3, 3)
    with torch.no_grad():
        diff = (conv(h2, 7) - conv(h, 7)).abs().amax(dim=(1, 2, 3))
    assert [i for i, d in enumerate(diff.tolist()) if d > 1e-6] == [
        1,
        2,
        3,
        4,
        5,
    ]  # 2 convs of width 3
    # zero-initialised: the identity
    torch.testing.assert_close(TemporalConv(4)(h, 7), h)


def test_relative_position_bias_is_clipped_and_shared_by_equal_offsets():
    table = relative_positions(6, max_distance=2)
    assert table.shape == (6, 6)
    assert table[0, 0] == table[3, 3] == 2  # offset 0
    assert table[0, 1] == table[4, 5] == 3  # offset +1
    assert table[0, 5] == table[0, 4] == table[0, 3] == 4  # clipped at +2
    assert table[5, 0] == 0  # clipped at -2

    attn = TemporalAttention(8, num_heads=2, max_distance=2)
    with torch.no_grad():
        attn.position_bias.copy_(torch.arange(10.0).reshape(2, 5))
    bias = attn.bias(4)
    assert bias.shape == (1, 2, 4, 4)
    assert bias[0, 1, 0, 3] == 5 + 4 and bias[0, 0, 2, 1] == 1


def test_relative_position_bias_changes_the_output_and_gets_gradients():
    torch.manual_seed(3)
    attn = TemporalAttention(8, num_heads=2, max_distance=3)
    with torch.no_grad():
        attn.proj_out.weight.normal_()
    h = torch.randn(2 * 5, 8, 2, 2)
    before = attn(h, 5)
    with torch.no_grad():
        attn.position_bias.normal_()
    after = attn(h, 5)
    assert not torch.allclose(before, after)
    after.square().mean().backward()
    assert attn.position_bias.grad is not None and attn.position_bias.grad.abs().sum() > 0


def test_temporal_layer_runs_any_number_of_frames_and_keeps_shape():
    layer = TemporalLayer(8, attention=True, num_heads=4, max_distance=2)
    for frames in (1, 3, 9):
        h = torch.randn(2 * frames, 8, 4, 4)
        assert layer(h, frames).shape == h.shape
    assert TemporalLayer(8, attention=False).attn is None


def test_fps_embedding_starts_at_zero_and_conditions_once_trained():
    torch.manual_seed(4)
    net = VideoUNet(3, **UNET, fps_conditioning=True).eval()
    _randomise_spatial(net)
    x, known, mask = _inputs(f=3)
    c = torch.tensor([0.2])
    with torch.no_grad():
        a = net(x, c, known, mask, fps=torch.tensor([24.0]))
        b = net(x, c, known, mask, fps=torch.tensor([8.0]))
        torch.testing.assert_close(a, b)  # zero-initialised: a keyframe model is unchanged
        net.fps_embed[-1].weight.normal_()
        a = net(x, c, known, mask, fps=torch.tensor([24.0]))
        b = net(x, c, known, mask, fps=torch.tensor([8.0]))
    assert not torch.allclose(a, b)


# ---- initialising from a keyframe model ---------------------------------------------------------

KEYFRAME = {
    "image_size": 16,
    "autoencoder": "identity",
    **UNET,
    "num_heads": 2,
    "text_width": 32,
    "text_layers": 1,
    "text_heads": 2,
    "text_context_length": 16,
    "text_vocab_size": 512,
}


@pytest.fixture(scope="module")
def keyframe_ckpt(tmp_path_factory):
    """A keyframe model's checkpoint file, its EMA U-Net made different from the live one."""
    from keyframe.module import KeyframeModule

    torch.manual_seed(5)
    model = KeyframeModule(**KEYFRAME)
    _randomise_spatial(model.denoiser.net)
    with torch.no_grad():
        for ema, live in zip(
            model.ema_net.parameters(), model.denoiser.net.parameters(), strict=True
        ):
            ema.copy_(live + 0.01 * torch.randn_like(live))
    path = tmp_path_factory.mktemp("keyframe") / "keyframe.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path, model


def _video_module(**overrides) -> InterpolateModule:
    args = {k: v for k, v in KEYFRAME.items() if k != "image_size"}
    args |= {"image_size": 16, "num_frames": 4, "text_conditioning": True, "temporal_heads": 2}
    return InterpolateModule(**(args | overrides))


@pytest.mark.slow
def test_init_from_a_keyframe_checkpoint_copies_the_ema_unet_and_widens_the_input(keyframe_ckpt):
    path, keyframe = keyframe_ckpt
    model = _video_module(init_from=str(path))
    model.setup("fit")
    result = model.load_keyframe_weights(str(path))
    assert result["missing"] and all("temporal" in k for k in result["missing"])

    video, image = model.denoiser.net.unet, keyframe.ema_net
    w = video.conv_in.weight
    torch.testing.assert_close(w[:, :3], image.conv_in.weight)
    assert not w[:, 3:].any()  # known latents and mask start at zero
    torch.testing.assert_close(video.conv_out.weight, image.conv_out.weight)
    torch.testing.assert_close(model.ema_net.unet.conv_out.weight, image.conv_out.weight)
    torch.testing.assert_close(
        model.text.tower.token_embedding.weight, keyframe.ema_text.tower.token_embedding.weight
    )

    # The inflated model is the keyframe model applied to each frame.
    x, known, mask = _inputs(f=3, size=16)
    cond = keyframe.sampling_model().encode_text(["a red circle"])
    c_noise = torch.tensor([0.5])
    with torch.no_grad():
        out = model.ema_net.eval()(x, c_noise, known, mask, **cond)
        frames = rearrange(x, "b c f h w -> (b f) c h w")
        per = image.eval()(
            frames,
            c_noise.expand(3),
            cond["context"].expand(3, -1, -1),
            cond["context_mask"].expand(3, -1),
            cond["pooled"].expand(3, -1),
        )
    torch.testing.assert_close(out, rearrange(per, "(b f) c h w -> b c f h w", f=3))


def test_init_from_refuses_another_unet_layout(keyframe_ckpt, tmp_path):
    path, _ = keyframe_ckpt
    with pytest.raises(UserError, match="init_from"):
        _video_module(model_channels=16).load_keyframe_weights(str(path))
    with pytest.raises(UserError, match="no such file"):
        _video_module().load_keyframe_weights(str(tmp_path / "missing.ckpt"))


def test_init_from_without_text_drops_the_keyframe_cross_attention(keyframe_ckpt):
    path, keyframe = keyframe_ckpt
    model = _video_module(text_conditioning=False)
    model.load_keyframe_weights(str(path))
    torch.testing.assert_close(
        model.denoiser.net.unet.conv_out.weight, keyframe.ema_net.conv_out.weight
    )


@pytest.mark.slow
def test_init_from_a_keyframe_pretrained_folder(keyframe_ckpt, tmp_path):
    from keyframe.pretrained import save_pretrained

    _, keyframe = keyframe_ckpt
    folder = save_pretrained(keyframe, tmp_path / "keyframe", fp16=False)
    model = _video_module(init_from=str(folder))
    model.setup("fit")
    torch.testing.assert_close(
        model.denoiser.net.unet.conv_out.weight, keyframe.ema_net.conv_out.weight
    )


def test_init_from_an_interpolation_checkpoint_continues_from_its_live_weights(tmp_path):
    torch.manual_seed(3)
    source = _video_module()
    for p in source.parameters():
        if p.is_floating_point():
            p.data.normal_(0, 0.1)
    path = tmp_path / "interpolate.ckpt"
    torch.save({"state_dict": source.state_dict(), "hyper_parameters": dict(source.hparams)}, path)
    model = _video_module(init_from=str(path), new_layers_lr=1e-2, lr=1e-4)
    model.setup("fit")
    for (name, a), b in zip(
        model.denoiser.net.named_parameters(), source.denoiser.net.parameters(), strict=True
    ):
        assert torch.equal(a, b), name
    assert torch.equal(model.ema_net.unet.conv_out.weight, source.denoiser.net.unet.conv_out.weight)

    # The layers a keyframe model lacks train at new_layers_lr, the rest at lr.
    groups = model.configure_optimizers()["optimizer"].param_groups
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    for name, p in model.denoiser.net.named_parameters():
        new = "temporal" in name or name.startswith(("fps_embed.", "unet.conv_in."))
        assert lr_of[id(p)] == (1e-2 if new else 1e-4), name
    assert any("temporal" in n for n, _ in model.denoiser.net.named_parameters())


def test_init_from_an_exported_interpolation_folder_takes_its_ema_weights(tmp_path):
    torch.manual_seed(4)
    source = _video_module(text_conditioning=False)
    for p in source.ema_net.parameters():
        p.data.normal_(0, 0.1)
    folder = InterpolateModule.save_pretrained(source, tmp_path / "tween", fp16=False)
    model = _video_module(text_conditioning=False, init_from=str(folder))
    model.setup("fit")
    for (name, a), b in zip(
        model.denoiser.net.named_parameters(), source.ema_net.parameters(), strict=True
    ):
        assert torch.equal(a, b), name
    with pytest.raises(UserError, match="init_from.*do not fit"):
        _video_module(text_conditioning=False, model_channels=16).load_keyframe_weights(str(folder))


def test_position_bands_reach_the_inflated_unet_and_start_as_a_no_op():
    torch.manual_seed(6)
    plain = _video_module(text_conditioning=False)
    placed = _video_module(text_conditioning=False, position_bands=4)
    names = [n for n, _ in placed.denoiser.net.named_parameters() if ".position." in n]
    assert names
    _randomise_spatial(plain.denoiser.net)
    result = placed.denoiser.net.load_state_dict(plain.denoiser.net.state_dict(), strict=False)
    assert sorted(result.missing_keys) == sorted(names) and not result.unexpected_keys
    x, known, mask = _inputs(f=3, size=16)
    c_noise = torch.tensor([0.5])
    with torch.no_grad():
        before = plain.denoiser.net(x, c_noise, known, mask)
        torch.testing.assert_close(placed.denoiser.net(x, c_noise, known, mask), before)
        for name, p in placed.denoiser.net.named_parameters():
            if name in names:
                p.normal_(0, 0.5)
        assert not torch.allclose(placed.denoiser.net(x, c_noise, known, mask), before)
