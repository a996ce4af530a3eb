"""Text encoder: pretrained towers from local files (frozen), scratch towers, odd prompts."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may download; fail loudly if something tries

import json
import warnings

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from keyframe.errors import UserError
from keyframe.text import TextEncoder, clip_tokenizer, token_row

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def tiny(**kw) -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(width=32, layers=1, heads=2, context_length=16, **kw)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny open_clip CLIP registered under a name, with its JSON config and checkpoints."""
    folder = tmp_path_factory.mktemp("clip")
    config = folder / "animatic-test-tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(1)
    classic = open_clip.create_model("animatic-test-tiny-clip")
    custom = open_clip.create_model("animatic-test-tiny-clip", force_custom_text=True)
    save_file(classic.state_dict(), folder / "classic.safetensors")
    torch.save(custom.state_dict(), folder / "custom.pt")
    return {"folder": folder, "config": str(config), "classic": classic, "custom": custom}


def test_scratch_tower_shapes_and_mask():
    enc = tiny()
    tokens, pooled, mask = enc(["a red circle on navy", ""])
    assert (enc.dim, enc.pooled_dim) == (32, 32)
    assert tokens.shape == (2, 16, 32) and pooled.shape == (2, 32) and mask.shape == (2, 16)
    assert mask.dtype == torch.bool
    # [start, a, red, circle, on, navy, end] and the unconditional prompt's [start, end].
    assert mask.sum(1).tolist() == [7, 2]
    assert torch.isfinite(tokens).all() and torch.isfinite(pooled).all()


def test_scratch_tower_trains_and_pretrained_path_needs_a_model_name():
    enc = tiny()
    assert not enc.frozen and all(p.requires_grad for p in enc.parameters())
    tokens, pooled, _ = enc(["a blue square"])
    (tokens.sum() + pooled.sum()).backward()
    assert enc.tower.token_embedding.weight.grad.abs().sum() > 0
    with pytest.raises(UserError, match="model_name"):
        TextEncoder(pretrained="weights.safetensors")
    with pytest.raises(UserError, match="vocab_size"):
        TextEncoder(vocab_size=10)


def test_hashed_vocabulary_keeps_every_shapes_world_word_apart():
    enc = TextEncoder(width=32, layers=1, heads=2, context_length=32, vocab_size=4096)
    assert enc.tower.token_embedding.weight.shape == (4096, 32)
    words = (
        "a an the at on in of and to small medium large red green blue yellow purple orange white "
        "black circle square triangle top bottom left right center navy gray beige teal maroon "
        "forest sky pink background bounces place"
    ).split()
    ids, _ = enc.tokenize(words)
    token_ids = ids[:, 1].tolist()
    assert len(set(token_ids)) == len(words)
    rows = enc.tower.token_embedding(torch.tensor(token_ids))
    distances = torch.cdist(rows, rows) + torch.eye(len(words)) * 1e9
    assert distances.min() > 1e-3
    tokens, pooled, _ = enc(["a red circle", "a blue circle"])
    assert not torch.allclose(pooled[0], pooled[1])


@pytest.mark.parametrize("vocab_size", [4096, 49408])
def test_embed_std_sets_the_scale_of_each_words_embedding(vocab_size):
    torch.manual_seed(0)
    default = TextEncoder(width=64, layers=1, heads=2, context_length=32, vocab_size=vocab_size)
    wide = TextEncoder(
        width=64, layers=1, heads=2, context_length=32, vocab_size=vocab_size, embed_std=1.0
    )
    ids, _ = wide.tokenize(["red green blue circle square triangle top bottom left right"])
    words = ids[0, 1:11]
    assert float(default.tower.token_embedding(words).std()) < 0.05  # open_clip's 0.02 init
    assert abs(float(wide.tower.token_embedding(words).std()) - 1.0) < 0.15
    with pytest.raises(UserError, match="embed_std"):
        TextEncoder(width=32, layers=1, heads=2, embed_std=0.0)
    with pytest.raises(UserError, match="layers"):
        TextEncoder(width=32, layers=0, heads=2)


def test_encoding_is_deterministic_and_independent_of_the_batch():
    enc = tiny().eval()
    a = enc(["a small green triangle", "a large white circle"])
    b = enc(["a small green triangle", "a large white circle"])
    alone = enc(["a large white circle"])
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert torch.allclose(a[0][1], alone[0][0], atol=1e-6)
    assert torch.equal(enc(["", ""])[0][0], enc(["", ""])[0][1])


def test_long_prompts_are_truncated_with_a_warning():
    enc = tiny()
    long = "a red circle falls " * 20
    with pytest.warns(UserWarning, match="truncated to 16 tokens"):
        ids, mask = enc.tokenize([long, "short"])
    assert mask[0].all() and mask[1].sum() == 3
    eot = clip_tokenizer().eot_token_id
    assert ids[0, -1] == eot and ids[1, 2] == eot
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc(["short prompts do not warn"])


def test_tokens_match_the_clip_tokenizer_and_repeats_come_from_the_cache():
    enc = tiny()
    prompts = [
        "a small green triangle at the top left",
        "",
        "a small green triangle at the top left",
    ]
    ids, mask = enc.tokenize(prompts)
    tok = clip_tokenizer()
    for i, prompt in enumerate(prompts):
        row = [tok.sot_token_id, *tok.encode(prompt), tok.eot_token_id]
        assert ids[i, : len(row)].tolist() == row and mask[i].sum() == len(row)
        assert not ids[i, len(row) :].any()
    hits = token_row.cache_info().hits
    enc.tokenize(prompts)
    assert token_row.cache_info().hits == hits + len(prompts)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "!!!",
        " ",
        "\x00\x01\t\n",
        "日本語のテキスト 😀🎬",
        "\ud800 lone surrogate",
        "<|endoftext|>",
    ],
)
def test_any_text_encodes(text):
    tokens, pooled, mask = tiny()([text])
    assert torch.isfinite(tokens).all() and torch.isfinite(pooled).all()
    assert mask[0, :2].all()  # start and end tokens are always there


def test_non_text_prompt_is_a_user_error():
    with pytest.raises(UserError, match="prompt 1"):
        tiny()(["fine", 42])


@pytest.mark.parametrize(
    ("checkpoint", "by"), [("classic.safetensors", "name"), ("custom.pt", "config")]
)
def test_pretrained_tower_loads_the_checkpoint_frozen(tiny_clip, checkpoint, by):
    model_name = "animatic-test-tiny-clip" if by == "name" else tiny_clip["config"]
    path = str(tiny_clip["folder"] / checkpoint)
    enc = TextEncoder(model_name=model_name, pretrained=path)
    clip = tiny_clip[checkpoint.split(".")[0]]
    source = clip.text if hasattr(clip, "text") else clip  # CustomTextCLIP keeps it under .text
    assert torch.equal(enc.tower.token_embedding.weight, source.token_embedding.weight)
    assert torch.equal(enc.tower.text_projection, source.text_projection)
    for name, value in source.transformer.state_dict().items():
        assert torch.equal(enc.tower.transformer.state_dict()[name], value)
    assert (enc.dim, enc.pooled_dim, enc.context_length) == (32, 16, 16)
    assert enc.frozen and not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.tower.training  # a frozen tower stays in eval mode
    # The pooled output is exactly CLIP's text embedding of the same tokens.
    ids, _ = enc.tokenize(["a purple square", ""])
    tokens, pooled, mask = enc(["a purple square", ""])
    with torch.no_grad():
        assert torch.allclose(pooled, clip.encode_text(ids), atol=1e-6)
    assert tokens.shape == (2, 16, 32) and mask.sum(1).tolist() == [5, 2]


def test_pretrained_tower_can_be_unfrozen_and_arch_only_is_trainable(tiny_clip):
    path = str(tiny_clip["folder"] / "classic.safetensors")
    enc = TextEncoder(model_name=tiny_clip["config"], pretrained=path, freeze=False)
    assert all(p.requires_grad for p in enc.parameters())
    fresh = TextEncoder(model_name=tiny_clip["config"])
    assert not fresh.frozen and fresh(["x"])[1].shape == (1, 16)


def test_pretrained_errors_are_user_errors(tiny_clip, tmp_path):
    with pytest.raises(UserError, match="not a file"):
        TextEncoder(model_name=tiny_clip["config"], pretrained=str(tmp_path / "missing.pt"))
    other = dict(TINY_CLIP, text_cfg=dict(TINY_CLIP["text_cfg"], width=48))
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(UserError, match="does not fit"):
        TextEncoder(
            model_name=str(tmp_path / "other.json"),
            pretrained=str(tiny_clip["folder"] / "classic.safetensors"),
        )
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable text encoder checkpoint"):
        TextEncoder(model_name=tiny_clip["config"], pretrained=str(tmp_path / "junk.bin"))
    with pytest.raises(UserError, match="not an open_clip model"):
        TextEncoder(model_name="no-such-model")
    with pytest.raises(UserError, match="Hugging Face"):
        TextEncoder(model_name="ViT-B-16-SigLIP")
    with pytest.raises(UserError, match="nothing is downloaded"):
        TextEncoder(model_name="hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
