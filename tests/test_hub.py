"""keyframe.hub: one folder format (config.json with a "kind" + model.safetensors) and one loader
for every component; shipped folders (written before "kind") still load by name."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import interpolate  # noqa: F401  (registers the interpolate, motion and general kinds)
from interpolate.general.pipeline import GeneralInterpolator
from interpolate.motion import MotionPrior
from interpolate.pipeline import InterpolatePipeline
from keyframe import hub
from keyframe.autoencoder import FrameAutoencoder, IdentityAutoencoder
from keyframe.errors import UserError
from keyframe.pipeline import KeyframePipeline
from tests.test_general import TINY, tiny_pipe
from tests.test_keyframe_module import randomised, tiny_module

PRIOR_ARGS = (
    torch.rand(2, 4, 2),
    torch.tensor([0.0, 0.1, 0.2, 0.3]).expand(2, 4),
    torch.ones(2, 4),
    torch.full((2,), 0.15),
)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().float() for k, v in module.state_dict().items()}


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    mine, theirs = _state(a), _state(b)
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def _autoencoder() -> FrameAutoencoder:
    torch.manual_seed(3)
    ae = FrameAutoencoder(3, 4, base_channels=8, channel_mult=[1, 2], num_res_blocks=1)
    ae.scale_factor, ae.shift = 0.7, 0.1
    return ae.eval()


def _interpolator(tiny_interpolate) -> InterpolatePipeline:
    """A trainer's pipeline with a motion prior plug-in (the shapes model's kind)."""
    trainer = tiny_interpolate(
        image_size=16, num_frames=4, model_channels=8, channel_mult=[1], num_res_blocks=1,
        attention_levels=[],
    )  # fmt: skip
    torch.manual_seed(1)
    return InterpolatePipeline(trainer.sampling_model(), MotionPrior(hidden=8, depth=1).eval())


def test_every_kind_round_trips_through_the_one_api(tmp_path, tiny_interpolate):
    torch.manual_seed(0)
    trainer = randomised(tiny_module())
    models = {
        "keyframe": trainer.pipeline(),  # a trainer saves as its pipeline (EMA weights)
        "interpolate": _interpolator(tiny_interpolate),
        "motion": MotionPrior(hidden=8, depth=1).eval(),
        "general": tiny_pipe(),
        "autoencoder": _autoencoder(),
    }
    for kind, model in models.items():
        folder = hub.save_pretrained(model, tmp_path / kind, fp16=False)
        config = json.loads((folder / hub.CONFIG_NAME).read_text())
        assert config["kind"] == kind and (folder / hub.WEIGHTS_NAME).is_file()
        loaded = hub.from_pretrained(folder)  # dispatched on the folder's kind alone
        assert type(loaded) is type(model) and hub.kind_of(loaded) == kind
        assert type(hub.from_pretrained(folder, kind=kind)) is type(model)
    loaded = {kind: hub.from_pretrained(tmp_path / kind) for kind in models}
    assert _same_weights(loaded["keyframe"].model.denoiser.net, trainer.ema_net)
    own_net = models["interpolate"].model.denoiser.net  # the trainer's EMA network
    assert _same_weights(loaded["interpolate"].model.denoiser.net, own_net)
    prior = loaded["interpolate"].motion_prior  # saved with its interpolator, in motion/
    own = models["interpolate"].motion_prior
    assert prior is not None and torch.equal(prior(*PRIOR_ARGS), own(*PRIOR_ARGS))
    assert torch.equal(loaded["motion"](*PRIOR_ARGS), models["motion"](*PRIOR_ARGS))
    assert _same_weights(loaded["general"].denoiser, models["general"].denoiser)
    assert loaded["general"].config == TINY
    assert _same_weights(loaded["autoencoder"], models["autoencoder"])
    assert loaded["autoencoder"].scale_factor == pytest.approx(0.7)
    with pytest.raises(UserError, match="already exists.*overwrite"):
        hub.save_pretrained(models["motion"], tmp_path / "motion")
    hub.save_pretrained(models["motion"], tmp_path / "motion", overwrite=True)


def test_a_network_free_general_model_and_the_identity_autoencoder_need_no_weights(
    tmp_path, monkeypatch
):
    folder = hub.save_pretrained(GeneralInterpolator(None, TINY), tmp_path / "general")
    assert not hub.from_pretrained(folder).trained
    with monkeypatch.context() as patch:  # as if the interpolate package were not imported
        patch.delitem(hub.KINDS, "general")
        with pytest.raises(UserError, match="kind 'general': not a registered.*import interpolate"):
            hub.from_pretrained(folder)
    folder = hub.save_pretrained(IdentityAutoencoder(), tmp_path / "identity")
    assert not (folder / hub.WEIGHTS_NAME).exists()
    assert isinstance(hub.from_pretrained(folder, kind="autoencoder"), IdentityAutoencoder)


def test_a_model_folder_shares_its_autoencoder(tmp_path, monkeypatch):
    from keyframe import pretrained

    module = randomised(tiny_module())
    folder = hub.save_pretrained(module, tmp_path / "kf", fp16=False)
    ae = hub.from_pretrained(folder, kind="autoencoder")  # the model's own autoencoder
    assert _same_weights(ae, module.autoencoder)
    monkeypatch.setattr(pretrained, "SHIPPED_DIR", tmp_path / "shipped")
    shutil.copytree(folder, tmp_path / "shipped" / "toy")
    assert _same_weights(hub.from_pretrained("toy", kind="autoencoder"), module.autoencoder)
    with pytest.raises(UserError, match="its kind is 'keyframe', expected 'motion'"):
        hub.from_pretrained(folder, kind="motion")


def test_shipped_names_resolve_from_both_weights_folders():
    assert isinstance(hub.from_pretrained("shapes-phrasings"), KeyframePipeline)
    assert isinstance(hub.from_pretrained("general"), GeneralInterpolator)
    assert hub.resolve("shapes", "keyframe").parent.parent.name == "keyframe"
    assert hub.resolve("shapes", "interpolate").parent.parent.name == "interpolate"
    with pytest.raises(UserError, match="'shapes': names 2 shipped models.*pass kind="):
        hub.from_pretrained("shapes")  # a keyframe model and an interpolator
    # The shipped `shapes` config predates "kind": it is inferred, and the file stays as it is;
    # `shapes-phrasings` was exported after "kind" was recorded.
    config, found = hub.read_config(hub.resolve("shapes", "keyframe"))
    assert "kind" not in config and found == "keyframe"
    config, found = hub.read_config(hub.resolve("shapes-phrasings", "keyframe"))
    assert config["kind"] == found == "keyframe"
    for name, kind in (("shapes", "interpolate"), ("general", "general")):
        assert hub.read_config(hub.resolve(name, "interpolate"))[1] == kind
    motion = hub.resolve("shapes", "interpolate") / "motion"
    assert hub.read_config(motion)[1] == "motion"


def test_bad_folders_and_kinds_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, message in (
        (empty, r"empty/config\.json: not found \(a model folder holds config\.json and model"),
        (tmp_path / "nowhere", "'.*nowhere': no such file or folder"),
    ):
        with pytest.raises(UserError, match=message) as caught:
            hub.from_pretrained(folder)
        assert "\n" not in str(caught.value)
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text('{"kind": "sound"}')
    with pytest.raises(UserError, match="unknown kind 'sound' \\(expected one of keyframe, "):
        hub.from_pretrained(tmp_path / "odd")
    with pytest.raises(UserError, match="kind 'sound': not a registered model kind"):
        hub.from_pretrained(tmp_path / "odd", kind="sound")
    (tmp_path / "odd" / "config.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="unreadable model config"):
        hub.from_pretrained(tmp_path / "odd")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"")
    with pytest.raises(UserError, match="model.ckpt: a file, not a model folder.*pass kind="):
        hub.from_pretrained(ckpt)  # a keyframe, interpolation or autoencoder checkpoint?
    with pytest.raises(UserError, match="model.ckpt: a file, not a model folder"):
        hub.from_pretrained(ckpt, kind="motion")
    with pytest.raises(UserError, match="str: not a model component"):
        hub.save_pretrained("text", tmp_path / "x")


def test_autoencoder_folders_from_before_config_json_still_load(tmp_path):
    from safetensors.torch import save_file

    ae = _autoencoder()
    old = tmp_path / "old"
    old.mkdir()
    save_file(
        {k: v.contiguous() for k, v in ae.state_dict().items()}, old / "autoencoder.safetensors"
    )
    record = {"format_version": 1, "kind": "kl", "config": ae.config()}
    (old / "autoencoder.json").write_text(json.dumps(record))
    assert _same_weights(hub.from_pretrained(old), ae)
    assert _same_weights(hub.from_pretrained(old / "autoencoder.safetensors", "autoencoder"), ae)
