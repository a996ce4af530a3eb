"""Each diffusion stage's three parts: a model (a plain nn.Module from its config dataclass), a
pipeline (inference) and the trainer around them; checkpoints from before the split still load."""

from __future__ import annotations

import lightning as L
import torch

from interpolate.inbetween import interpolate
from interpolate.model import InterpolateConfig, InterpolateModel
from interpolate.pipeline import InterpolatePipeline
from keyframe.model import KeyframeConfig, KeyframeModel, StageConfig
from keyframe.pipeline import KeyframePipeline
from keyframe.pretrained import from_pretrained
from tests.test_keyframe_module import PROMPTS, TINY, randomised, tiny_module

TRAINING_ONLY = ("lr", "ema_decay", "init_from", "cond_drop_rate", "p_mean", "val_prompts")


def test_the_model_is_a_plain_module_built_from_its_config_alone():
    config = KeyframeConfig.from_dict({**TINY, "lr": 1.0, "ema_decay": 0.5})  # training: ignored
    assert not any(hasattr(config, name) for name in TRAINING_ONLY)
    torch.manual_seed(0)
    model = KeyframeModel(config)
    assert not isinstance(model, L.LightningModule)
    assert {k.split(".")[0] for k in model.state_dict()} == {"autoencoder", "text", "denoiser"}
    trainer = tiny_module()
    assert trainer.model.config == config  # the trainer's network is the same config's model
    assert set(KeyframeConfig.names()) < set(trainer.hparams)  # one list of network options


def test_a_trainer_samples_through_its_pipeline_and_keeps_its_modes():
    trainer = randomised(tiny_module(ema_decay=0.9)).train()
    pipe = trainer.pipeline()
    assert pipe.model.denoiser.net is trainer.ema_net  # shared, not copied
    images = pipe(PROMPTS[:2], seed=1, steps=2)
    assert torch.equal(images, trainer.sample(PROMPTS[:2], seed=1, steps=2))
    # Sampling put everything in eval mode for its run and then back as it was.
    assert trainer.model.denoiser.training and trainer.model.text.training
    assert not trainer.ema_net.training and not trainer.ema_text.training
    assert not trainer.model.autoencoder.training
    assert all(p.requires_grad for p in trainer.model.denoiser.parameters())


def test_a_checkpoint_from_before_the_split_resumes_and_loads(tmp_path):
    trainer = randomised(tiny_module(ema_decay=0.9), seed=4)
    old = {k.removeprefix("model."): v for k, v in trainer.state_dict().items()}
    assert "denoiser.net.conv_out.weight" in old  # the old, flat layout
    checkpoint = {"state_dict": old, "hyper_parameters": dict(trainer.hparams)}
    path = tmp_path / "old.ckpt"
    torch.save(checkpoint, path)

    resumed = tiny_module(ema_decay=0.9, seed=9)
    resumed.on_load_checkpoint(checkpoint)  # what Lightning calls before loading the state
    resumed.load_state_dict(checkpoint["state_dict"])
    for (name, a), b in zip(
        resumed.state_dict().items(), trainer.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name

    pipe = from_pretrained(path)
    assert isinstance(pipe, KeyframePipeline)
    assert torch.equal(
        pipe(PROMPTS[:1], seed=2, steps=2), trainer.sample(PROMPTS[:1], seed=2, steps=2)
    )


INTERPOLATE = dict(
    image_size=8, num_frames=4, model_channels=8, channel_mult=[1], num_res_blocks=1,
    attention_levels=[], num_heads=2, temporal_heads=2, ema_decay=0.9,
)  # fmt: skip


def test_both_stages_share_one_list_of_network_options():
    shared = StageConfig.names()
    assert shared < KeyframeConfig.names() and shared < InterpolateConfig.names()
    assert "text_width" in shared and "num_frames" not in shared and "sample_place" not in shared
    assert InterpolateConfig().sample_steps == 25 and KeyframeConfig().sample_steps == 30


def test_an_interpolation_checkpoint_from_before_the_split_resumes_and_loads(
    tmp_path, tiny_interpolate
):
    trainer = tiny_interpolate(**INTERPOLATE)
    assert isinstance(trainer.model, InterpolateModel) and trainer.model.text is None
    old = {k.removeprefix("model."): v for k, v in trainer.state_dict().items()}
    checkpoint = {"state_dict": old, "hyper_parameters": dict(trainer.hparams)}
    path = tmp_path / "old.ckpt"
    torch.save(checkpoint, path)

    resumed = tiny_interpolate(**INTERPOLATE)
    with torch.no_grad():
        resumed.model.denoiser.net.unet.conv_out.weight.add_(1.0)
    resumed.on_load_checkpoint(checkpoint)
    resumed.load_state_dict(checkpoint["state_dict"])
    for (name, a), b in zip(
        resumed.state_dict().items(), trainer.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name

    pipe = from_interpolation(path)
    keys = torch.rand(2, 3, 8, 8) * 2 - 1
    video = interpolate(trainer, keys, [0, 3], 4, seed=1)  # a trainer samples with its EMA
    assert torch.equal(pipe(keys, [0, 3], 4, seed=1), video)
    assert torch.equal(torch.stack(list(pipe.frames(keys, [0, 3], 4, seed=1)), 1), video)


def from_interpolation(path) -> InterpolatePipeline:
    pipe = InterpolatePipeline.from_pretrained(path)
    assert isinstance(pipe, InterpolatePipeline) and pipe.motion_prior is None
    assert not pipe.model.training
    return pipe
