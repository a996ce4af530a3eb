"""Training-free keyframe consistency: anchored self-attention and shared noise."""

from __future__ import annotations

import json

import pytest
import torch

from keyframe.consistency import anchor_list, anchored_attention, share_noise
from keyframe.errors import UserError
from keyframe.layers import Attention, anchor_keys_values
from tests.test_keyframe_module import randomised, tiny_module

PROMPTS = ["a red circle", "a blue square on the left", "a small green triangle"]


@pytest.fixture(scope="module")
def model():
    return randomised(tiny_module())


@pytest.mark.slow
def test_off_is_bit_identical_and_leaves_no_state(model):
    before = model.sample(PROMPTS, seed=4)
    with anchored_attention(model.sampling_denoiser(), (0, 0, 0)):
        pass
    assert torch.equal(model.sample(PROMPTS, seed=4, anchor=None), before)
    assert all(m.anchors is None for m in model.modules() if isinstance(m, Attention))


@pytest.mark.slow
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_anchor_is_unchanged_and_others_change(model, guidance):
    plain = model.sample(PROMPTS, seed=7, guidance=guidance)
    anchored = model.sample(PROMPTS, seed=7, guidance=guidance, anchor=0)
    alone = model.sample(PROMPTS[:1], seed=7, guidance=guidance)
    torch.testing.assert_close(anchored[0], alone[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(anchored[0], plain[0], atol=1e-4, rtol=0)
    for i in (1, 2):
        assert (anchored[i] - plain[i]).abs().max() > 1e-3


def test_anchored_attention_reaches_the_anchor_in_each_cfg_half():
    torch.manual_seed(0)
    attn = Attention(8, 2, 4).eval()
    x = torch.randn(4, 5, 8)  # two groups of two: [uncond0, uncond1, cond0, cond1]
    attn.anchors = (0, 0)
    out = attn(x)
    attn.anchors = None
    # Sample 1 of each group attends to its own tokens and to sample 0 of the same group.
    for own, anchor in ((1, 0), (3, 2)):
        joined = torch.cat([x[own], x[anchor]])[None]
        q = attn.to_q(x[own : own + 1])
        k, v = attn.to_k(joined), attn.to_v(joined)
        q, k, v = (t.view(1, -1, 2, 4).transpose(1, 2) for t in (q, k, v))
        weights = (q @ k.transpose(-1, -2) / 2).softmax(-1)
        expect = attn.to_out((weights @ v).transpose(1, 2).reshape(1, 5, 8))
        torch.testing.assert_close(out[own : own + 1], expect, atol=1e-5, rtol=0)
    for anchor in (0, 2):
        torch.testing.assert_close(out[anchor], attn(x[anchor : anchor + 1])[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="groups of 2"):
        anchor_keys_values(torch.zeros(3, 1, 2, 4), torch.zeros(3, 1, 2, 4), (0, 0))


def test_full_noise_share_with_one_prompt_gives_one_image(model):
    same = model.sample([PROMPTS[1]] * 3, seed=2, anchor=0, noise_share=1.0)
    torch.testing.assert_close(same[1], same[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(same[2], same[0], atol=1e-4, rtol=0)
    distinct = model.sample([PROMPTS[1]] * 3, seed=2, anchor=0)
    assert (distinct[1] - distinct[0]).abs().max() > 1e-3


def test_share_noise_mixes_towards_the_anchor():
    noise = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    assert share_noise(noise, (0, 0, 0), 0.0) is noise
    half = share_noise(noise, (0, 0, 2), 0.5)
    assert torch.equal(half[0], noise[0]) and torch.equal(half[2], noise[2])
    torch.testing.assert_close(half[1], (noise[1] + noise[0]) * 0.5**0.5)
    assert torch.equal(share_noise(noise, (0, 0, 0), 1.0)[2], noise[0])


def test_several_anchors_in_one_batch(model):
    both = model.sample(PROMPTS + PROMPTS[:1], seed=5, anchor=[0, 0, 2, 2])
    first = model.sample(PROMPTS[:2], seed=5, anchor=0)
    torch.testing.assert_close(both[:2], first, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(anchor=3), "anchor 0: expected an index from 0 to 2"),
        (dict(anchor=[0, 0]), "expected 3 indices"),
        (dict(anchor=[1, 2, 2]), "sample 1 is not its own anchor"),
        (dict(anchor=0, noise_share=1.5), "noise share: expected a number from 0 to 1"),
        (dict(noise_share=0.5), "noise share: needs an anchor"),
    ],
)
def test_bad_anchor_options_are_user_errors(model, kwargs, words):
    with pytest.raises(UserError, match=words):
        model.sample(PROMPTS, seed=0, steps=1, **kwargs)
    assert anchor_list(1, 2) == (1, 1)


# ---- storyboard --consistency -------------------------------------------------------------------

SHOTS = """\
title: tiny
size: 16
fps: 12
seed: 3
steps: 2
panels:
  - prompt: a large red circle at the top left on a navy background
    duration: 6
    transition: cut
  - prompt: a large red circle at the bottom right on a navy background
    duration: 6
  - prompt: a large red circle at the top right on a navy background
    duration: 6
"""


class Recording:
    """The oracle keyframe model, recording each call's seeds and anchors."""

    model_id = "oracle"
    supports_anchors = True

    def __init__(self):
        from pipeline.storyboard_models import oracle_keyframes

        self.draw = oracle_keyframes(16, 16)
        self.calls: list[tuple[list[int], list[int] | None]] = []

    def __call__(self, prompts, negatives, seeds, steps, guidance, anchors=None, noise_share=0.0):
        self.calls.append((list(seeds), anchors))
        return self.draw(prompts, negatives, seeds, steps, guidance)


def test_storyboard_draws_each_shot_with_its_first_panel(tmp_path):
    from pipeline.storyboard import storyboard

    shots = tmp_path / "shots.yaml"
    shots.write_text(SHOTS, encoding="utf-8")
    out, model = tmp_path / "board", Recording()
    board = storyboard(shots, out, model, consistency=True, batch_size=2, verbose=False)
    # Shot 1 is panel 1 alone; shot 2 is panels 2-3, anchored on panel 2.
    assert model.calls == [([3], None), ([4, 5], [0, 0])]
    assert "anchor" not in board.panels[1] and board.panels[2]["anchor"]["seed"] == 4
    model.calls.clear()
    storyboard(shots, out, model, consistency=True, batch_size=2, verbose=False)
    assert model.calls == []
    # Turning it off redraws only the anchored panel; a re-rolled anchor makes it stale.
    assert storyboard(shots, out, model, verbose=False).generated == (3,)
    storyboard(shots, out, model, consistency=True, noise_share=0.5, verbose=False)
    assert model.calls[-1] == ([4, 5], [0, 0])
    model.calls.clear()
    again = storyboard(shots, out, model, reroll="3", seed=9, consistency=True, verbose=False)
    assert model.calls == [([4, 9], [0, 0])] and again.generated == (3,)
    with pytest.raises(UserError, match="--noise-share needs --consistency"):
        storyboard(shots, out, model, noise_share=0.5, verbose=False)


def test_the_shot_list_can_ask_for_consistency(tmp_path):
    from pipeline.cli import main
    from pipeline.storyboard import storyboard

    shots = tmp_path / "shots.yaml"
    shots.write_text("consistency: true\nnoise_share: 0.25\n" + SHOTS, encoding="utf-8")
    model = Recording()
    board = storyboard(shots, tmp_path / "board", model, batch_size=2, verbose=False)
    assert model.calls == [([3], None), ([4, 5], [0, 0])]
    assert board.panels[2]["anchor"]["noise_share"] == 0.25
    # The command line wins: --no-consistency draws every panel on its own.
    argv = ["storyboard", str(shots), "--out", str(tmp_path / "off"), "--keyframe-model", "oracle"]
    assert main([*argv, "--no-consistency", "--quiet"]) == 0
    manifest = json.loads((tmp_path / "off" / "storyboard.json").read_text())
    assert not any("anchor" in panel for panel in manifest["panels"])


@pytest.mark.slow
def test_storyboard_consistency_with_a_tiny_saved_model(tmp_path):
    import numpy as np

    from keyframe.module import KeyframeModule
    from keyframe.pretrained import save_pretrained
    from pipeline.storyboard import storyboard

    torch.manual_seed(0)
    module = KeyframeModule(**{**TINY_SAVED, "image_size": 16})
    save_pretrained(randomised(module), tmp_path / "model", fp16=False)
    shots = tmp_path / "shots.yaml"
    shots.write_text(SHOTS, encoding="utf-8")
    name = str(tmp_path / "model")
    plain = storyboard(shots, tmp_path / "plain", name, device="cpu", verbose=False)
    kept = storyboard(shots, tmp_path / "kept", name, device="cpu", verbose=False,
                      consistency=True, noise_share=0.3)  # fmt: skip
    for i in (0, 1):
        difference = np.abs(plain.images[i].astype(int) - kept.images[i].astype(int))
        assert difference.max() <= 1
    assert np.abs(plain.images[2].astype(int) - kept.images[2].astype(int)).max() > 2


TINY_SAVED = dict(
    model_channels=8,
    channel_mult=[1, 2],
    num_res_blocks=1,
    attention_levels=[1],
    num_heads=2,
    ema_decay=0.0,
    sample_steps=2,
    text_width=32,
    text_layers=1,
    text_heads=2,
    text_context_length=16,
    text_vocab_size=512,
)
