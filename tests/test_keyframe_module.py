"""KeyframeModule: training step, EMA, validation, sampling (seeds, guidance, checks), and saving
and loading (Lightning checkpoints and pretrained folders); the overfit check of text control."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset

from keyframe import pretrained
from keyframe.autoencoder import FrameAutoencoder
from keyframe.autoencoder_files import save_autoencoder
from keyframe.errors import UserError
from keyframe.model import KeyframeModel
from keyframe.module import KeyframeModule
from keyframe.pretrained import from_pretrained, save_pretrained
from pipeline.shapes import Scene, SceneObject, render_still, still_caption

TINY = dict(
    image_size=16,
    model_channels=16,
    channel_mult=[1, 2],
    num_res_blocks=1,
    attention_levels=[1],
    num_heads=2,
    text_width=32,
    text_layers=1,
    text_heads=2,
    text_context_length=32,
    text_vocab_size=512,
    sample_steps=3,
)
PROMPTS = ["a red circle", "a blue square on the left", "a small green triangle"]


def tiny_module(seed: int = 0, **overrides) -> KeyframeModule:
    torch.manual_seed(seed)
    return KeyframeModule(**{**TINY, **overrides})


def randomised(module: KeyframeModule, seed: int = 0) -> KeyframeModule:
    """Zero-initialised output layers make a fresh model ignore its input; give every parameter
    (EMA copies too) random values, so samples depend on prompts, noise and weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.is_floating_point():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return module.eval()


def scene_images(size: int = 16):
    """Five flat-colour shapes-world stills with their captions, as `c h w` in [-1, 1]."""
    scenes = [
        Scene("navy", (SceneObject("circle", "red", "large", 0.5, 0.5),)),
        Scene("teal", (SceneObject("square", "yellow", "large", 0.5, 0.5),)),
        Scene("pink", (SceneObject("triangle", "blue", "large", 0.5, 0.5),)),
        Scene("beige", (SceneObject("circle", "black", "large", 0.5, 0.5),)),
        Scene("forest", (SceneObject("square", "white", "large", 0.5, 0.5),)),
    ]
    images = [torch.from_numpy(render_still(s, size)).permute(2, 0, 1) for s in scenes]
    return torch.stack(images).float() / 127.5 - 1, [still_caption(s) for s in scenes]


class Pairs(Dataset):
    def __init__(self, images: torch.Tensor, captions: list[str], length: int):
        self.images, self.captions, self.length = images, captions, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i % len(self.images)], "caption": self.captions[i % 5]}


def quiet_trainer(**kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Four training steps with a validation at the end, a CSV logger and a checkpoint."""
    root = tmp_path_factory.mktemp("trained")
    images, captions = scene_images()
    L.seed_everything(0)
    module = tiny_module(val_prompts=PROMPTS[:2], lr=1e-2, ema_decay=0.9)
    trainer = quiet_trainer(
        max_steps=4,
        logger=CSVLogger(root),
        enable_checkpointing=True,
        callbacks=[ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=4, save_last=True)],
        val_check_interval=4,
        check_val_every_n_epoch=None,
        limit_val_batches=1,
    )
    data = DataLoader(Pairs(images, captions, 16), batch_size=4)
    trainer.fit(module, data, DataLoader(Pairs(images, captions, 4), batch_size=4))
    return SimpleNamespace(
        module=module.eval(), ckpt=root / "ckpt" / "last.ckpt", log_dir=Path(trainer.log_dir)
    )


def _plain(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


# ---- training ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_checkpoint_is_plain_and_loads_with_weights_only(trained):
    ckpt = torch.load(trained.ckpt, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    hparams = ckpt["hyper_parameters"]
    assert _plain(dict(hparams)) and hparams["channel_mult"] == [1, 2]
    assert ckpt["autoencoder_config"] == {"kind": "identity", "config": {"in_channels": 3}}
    state = ckpt["state_dict"]
    # The checkpoint holds the EMA of the step it was saved at.
    module = trained.module
    for key, value in module.ema_net.state_dict().items():
        torch.testing.assert_close(state[f"ema_net.{key}"], value, rtol=0, atol=0)


def test_ema_follows_the_trained_weights_and_is_not_optimised(trained):
    module = trained.module
    live = dict(module.denoiser.net.named_parameters())
    ema = dict(module.ema_net.named_parameters())
    assert not any(p.requires_grad for p in ema.values())
    assert any(not torch.equal(live[k], ema[k]) for k in live)  # an average, not a copy
    trainable = {id(p) for p in module.trainable_parameters()}
    frozen = [*module.ema_net.parameters(), *module.ema_text.parameters()]
    assert trainable.isdisjoint(id(p) for p in frozen)
    assert module.sampling_denoiser().net is module.ema_net

    fresh = tiny_module(ema_decay=0.5)
    before = [p.clone() for p in fresh.ema_net.parameters()]
    with torch.no_grad():
        for p in fresh.denoiser.net.parameters():
            p.add_(1.0)
    fresh.update_ema()  # step 0 of warm-up: decay min(0.5, 1/10) = 0.1
    assert fresh.ema_decay_at(0) == pytest.approx(0.1) and fresh.ema_decay_at(10**6) == 0.5
    pairs = zip(fresh.ema_net.parameters(), fresh.denoiser.net.parameters(), strict=True)
    for b, (e, p) in zip(before, pairs, strict=True):
        torch.testing.assert_close(e, b + 0.9 * (p - b))


def test_training_step_drops_prompts_at_the_configured_rate(monkeypatch):
    batch = {"image": torch.rand(6, 3, 16, 16) * 2 - 1, "caption": ["a red circle"] * 6}
    for rate, expected in ((1.0, [""] * 6), (0.0, batch["caption"])):
        module = tiny_module(cond_drop_rate=rate)
        seen = []
        real = module.text.forward
        spy = lambda p, real=real, seen=seen: seen.append(p) or real(p)  # noqa: E731
        monkeypatch.setattr(module.text, "forward", spy)
        loss = module.training_step(batch, 0)
        assert seen == [expected]
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        assert module.denoiser.net.conv_out.weight.grad is not None


def test_pooled_drop_rate_leaves_only_cross_attention_for_dropped_samples():
    batch = {"image": torch.rand(4, 3, 16, 16) * 2 - 1, "caption": ["a red circle"] * 4}
    for rate in (1.0, 0.0):
        module = randomised(tiny_module(pooled_drop_rate=rate, cond_drop_rate=0.0)).train()
        module.training_step(batch, 0).backward()
        pooled_grad = module.denoiser.net.pooled_embed.weight.grad
        assert (pooled_grad is None or not pooled_grad.any()) == (rate == 1.0), rate
        assert module.text.tower.token_embedding.weight.grad.any()  # the tokens still learn
    with pytest.raises(UserError, match="pooled_drop_rate"):
        tiny_module(pooled_drop_rate=1.5)


def test_cross_attend_words_hides_the_start_and_end_tokens():
    module = randomised(tiny_module(cross_attend_words=True))
    cond = module.sampling_model().encode_text(["a red circle", ""])
    # [start, a, red, circle, end] -> the three words; "" -> nothing (cross-attention adds zeros).
    assert cond["context_mask"].sum(1).tolist() == [3, 0]
    assert cond["context_mask"][0, 1:4].all()
    plain = module.text(["a red circle", ""])[2]
    assert plain.sum(1).tolist() == [5, 2]
    images = module.sample(["a red circle", ""], seed=0, steps=2)
    assert torch.isfinite(images).all()
    # The words alone now decide the cross-attention: the end token's features no longer matter.
    tokens = cond["context"].clone()
    tokens[0, 4] += 100.0
    net = module.sampling_denoiser()
    x = torch.randn(1, module.latent_channels, *module.latent_size())
    args = {"context_mask": cond["context_mask"][:1], "pooled": cond["pooled"][:1]}
    with torch.no_grad():
        before = net(x, torch.tensor([1.0]), context=cond["context"][:1], **args)
        after = net(x, torch.tensor([1.0]), context=tokens[:1], **args)
    torch.testing.assert_close(before, after)


def test_init_from_starts_from_another_models_sampling_weights(tmp_path):
    source = randomised(tiny_module(seed=1))
    folder = save_pretrained(source, tmp_path / "source", fp16=False)
    module = tiny_module(seed=2, init_from=str(folder))
    module.setup("fit")
    for copy in (module.denoiser.net, module.ema_net):
        for (name, a), b in zip(copy.named_parameters(), source.ema_net.parameters(), strict=True):
            assert torch.equal(a, b), name
    for a, b in zip(module.text.parameters(), source.ema_text.parameters(), strict=True):
        assert torch.equal(a, b)
    assert "init_from" not in from_pretrained(folder).config.to_dict()  # a training option

    # A resumed run (setup called again after Lightning restores a checkpoint) keeps its weights.
    with torch.no_grad():
        module.denoiser.net.conv_out.weight.add_(1.0)
    module.setup("fit")
    assert not torch.equal(module.denoiser.net.conv_out.weight, source.ema_net.conv_out.weight)

    with pytest.raises(UserError, match="init_from.*U-Net does not fit"):
        tiny_module(model_channels=8, init_from=str(folder)).setup("fit")
    with pytest.raises(UserError, match="init_from.*no such file"):
        tiny_module(init_from=str(tmp_path / "missing")).setup("fit")


def test_init_from_a_shipped_model_name(monkeypatch, tmp_path):
    source = randomised(tiny_module(seed=3))
    save_pretrained(source, tmp_path / "weights" / "mine", fp16=False)
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", tmp_path / "weights")
    module = tiny_module(init_from="mine")
    module.setup("fit")
    assert torch.equal(module.denoiser.net.conv_out.weight, source.ema_net.conv_out.weight)


def test_validation_logs_fixed_sigma_losses_and_a_sample_grid(trained):
    metrics = (trained.log_dir / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    assert "val/loss" in header and "val/loss_sigma_0.05" in header
    grid = trained.log_dir / "samples" / "step_0000004.png"
    from PIL import Image

    with Image.open(grid) as image:
        assert image.size == (2 * 16 + 3, 16 + 2)  # two 16 px samples, 1 px padding

    # The validation loss uses fixed noise: the same weights give the same number.
    images, captions = scene_images()
    loader = DataLoader(Pairs(images, captions, 4), batch_size=4)
    module = trained.module
    module.hparams.val_prompts = []
    try:
        first, second = (quiet_trainer().validate(module, loader, verbose=False) for _ in "ab")
    finally:
        module.hparams.val_prompts = PROMPTS[:2]
    assert first[0]["val/loss"] == second[0]["val/loss"]


def test_image_size_must_fit_the_unet():
    with pytest.raises(UserError, match="image_size"):
        tiny_module(image_size=18, channel_mult=[1, 2, 2])  # needs a multiple of 4


# ---- sampling ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return randomised(tiny_module())


@pytest.mark.slow
def test_each_image_depends_only_on_its_own_seed(model):
    three = model.sample(PROMPTS, seed=10)
    assert three.shape == (3, 3, 16, 16) and three.dtype == torch.float32
    assert three.device.type == "cpu" and three.min() >= -1 and three.max() <= 1
    assert torch.equal(three, model.sample(PROMPTS, seed=10))
    alone = model.sample(PROMPTS[1:2], seed=11)
    torch.testing.assert_close(
        alone[0], three[1], atol=1e-4, rtol=0
    )  # batch size: float noise only
    assert not torch.allclose(model.sample(PROMPTS, seed=20), three, atol=1e-3)
    generators = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    assert torch.equal(model.sample(PROMPTS, generator=generators), three)
    # Samplers that add noise on the way draw it from the same per-image generators.
    noisy = [model.sample(PROMPTS[:2], seed=3, sampler="euler_ancestral") for _ in "ab"]
    assert torch.equal(*noisy)


@pytest.mark.slow
def test_prompts_change_the_image(model):
    a, b = model.sample(["a red circle", "a blue square"], seed=0), None
    b = model.sample(["a blue square", "a red circle"], seed=0)
    assert not torch.allclose(a[0], b[0], atol=1e-3)


@pytest.mark.slow
def test_negative_prompt_is_the_unconditional_branch(model):
    # guidance 0 is the unconditional denoiser alone, i.e. conditioned on the negative prompt.
    steered = model.sample(["a red circle"], negative_prompts="a blue square", guidance=0, seed=4)
    plain = model.sample(["a blue square"], guidance=1, seed=4)
    torch.testing.assert_close(steered, plain, atol=1e-4, rtol=0)
    default = model.sample(["a red circle"], guidance=0, seed=4)
    torch.testing.assert_close(default, model.sample([""], guidance=1, seed=4), atol=1e-4, rtol=0)
    both = model.sample(PROMPTS[:2], negative_prompts=["x", "y"], guidance=3.0, seed=4)
    assert both.shape == (2, 3, 16, 16)


def test_size_can_differ_from_training(model):
    assert model.sample(["a red circle"], seed=0, size=(8, 24)).shape == (1, 3, 8, 24)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"steps": 0}, "steps"),
        ({"steps": 1001}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"guidance": -1.0}, "guidance"),
        ({"guidance": float("nan")}, "guidance"),
        ({"sampler": "ddim"}, "sampler"),
        ({"size": 9}, "size"),
        ({"negative_prompts": ["a", "b"]}, "negative prompts"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_sampling_options_are_user_errors(model, kwargs, words):
    with pytest.raises(UserError, match=words):
        model.sample(["a red circle"], **kwargs)
    with pytest.raises(UserError, match="at least one prompt"):
        model.sample([])


# ---- saving and loading ------------------------------------------------------------------------


@pytest.mark.slow
def test_checkpoint_and_pretrained_folder_sample_the_same_images(trained, tmp_path):
    module = trained.module
    reference = module.sample(PROMPTS, seed=5)

    from_ckpt = from_pretrained(trained.ckpt)
    assert isinstance(from_ckpt.model, KeyframeModel) and not from_ckpt.model.training
    assert not any(p.requires_grad for p in from_ckpt.model.parameters())
    assert torch.equal(from_ckpt(PROMPTS, seed=5), reference)

    exact = save_pretrained(module, tmp_path / "fp32", fp16=False)
    assert torch.equal(from_pretrained(exact)(PROMPTS, seed=5), reference)
    again = save_pretrained(from_pretrained(exact), tmp_path / "again", fp16=False)
    assert torch.equal(from_pretrained(again)(PROMPTS, seed=5), reference)  # a pipeline saves too

    half = save_pretrained(module, tmp_path / "fp16")
    weights = load_file(half / "model.safetensors")
    assert {k.split(".")[0] for k in weights} == {"net", "text", "autoencoder"}
    assert weights["net.conv_out.weight"].dtype == torch.float16
    assert weights["autoencoder.latent_scale"].dtype == torch.float32
    config = json.loads((half / "config.json").read_text())
    assert config["hyperparameters"]["ema_decay"] == 0.9 and _plain(config)
    close = from_pretrained(half)(PROMPTS, seed=5)
    torch.testing.assert_close(close, reference, atol=0.05, rtol=0)

    with pytest.raises(UserError, match="already exists"):
        save_pretrained(module, half)
    save_pretrained(module, half, overwrite=True)


@pytest.mark.slow
def test_autoencoder_weights_travel_with_the_model(tmp_path):
    torch.manual_seed(0)
    ae = FrameAutoencoder(3, 4, base_channels=8, channel_mult=[1, 2], num_res_blocks=1)
    ae.scale_factor, ae.shift = 0.7, 0.1
    ae_dir = save_autoencoder(ae, tmp_path / "ae")
    module = randomised(tiny_module(autoencoder=str(ae_dir)))
    assert module.latent_channels == 4 and module.size_multiple == 4
    reference = module.sample(PROMPTS[:1], seed=1)

    folder = save_pretrained(module, tmp_path / "model", fp16=False)
    trainer = quiet_trainer(max_steps=0)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    shutil.rmtree(ae_dir)  # neither needs the autoencoder's own files any more
    for source in (folder, tmp_path / "model.ckpt"):
        loaded = from_pretrained(source)
        assert loaded.model.autoencoder.scale_factor == pytest.approx(0.7)
        assert torch.equal(loaded(PROMPTS[:1], seed=1), reference)


def test_loading_errors_name_the_problem(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", tmp_path / "shipped")
    with pytest.raises(UserError, match="not a shipped model name.*none are shipped yet"):
        from_pretrained("shapes")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=r"empty/config\.json: not found"):
        from_pretrained(empty)

    garbage = tmp_path / "broken.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="broken.ckpt: not a readable KeyframeModule checkpoint"):
        from_pretrained(garbage)

    folder = save_pretrained(tiny_module(), tmp_path / "shipped" / "tiny-shipped")
    assert pretrained.shipped_models() == ["tiny-shipped"]
    assert from_pretrained("tiny-shipped").config.model_channels == 16

    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["hyperparameters"]["model_channels"] = 8
    config_path.write_text(json.dumps(config))
    with pytest.raises(UserError, match="net weights do not fit"):
        from_pretrained(folder)
    config["hyperparameters"]["bogus"] = 1
    config_path.write_text(json.dumps(config))
    with pytest.raises(UserError, match="unknown hyperparameters bogus"):
        from_pretrained(folder)
    config_path.write_text("{")
    with pytest.raises(UserError, match="unreadable model config"):
        from_pretrained(folder)
    with pytest.raises(UserError, match="not a shipped model name.*available: tiny-shipped"):
        from_pretrained("nope")


# ---- text control ------------------------------------------------------------------------------


@pytest.mark.slow
def test_overfits_five_prompts_each_to_its_own_image(one_thread):
    """Five (prompt -> image) pairs differing in colours and shape only; sampling each prompt
    must return its own image (nearest target), which needs the text to steer the model."""
    images, captions = scene_images(16)
    L.seed_everything(0)
    module = tiny_module(
        text_width=64,
        text_layers=2,
        text_vocab_size=4096,
        cond_drop_rate=0.05,
        lr=2e-3,
        warmup_steps=10,
        ema_decay=0.99,
    )
    loader = DataLoader(Pairs(images, captions, 16 * 300), batch_size=16, shuffle=True)
    quiet_trainer(max_steps=300, limit_val_batches=0).fit(module, loader)
    samples = module.sample(captions, seed=0, steps=10, guidance=2.0)
    distance = ((samples[:, None] - images[None]) ** 2).flatten(2).mean(-1)
    assert distance.argmin(1).tolist() == list(range(5)), distance
    assert distance.diagonal().max() < 0.15, distance
