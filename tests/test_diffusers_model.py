"""`diffusers:PATH` keyframe models: a tiny randomly initialised Stable-Diffusion-style pipeline,
built and saved offline here, draws keyframes and storyboard panels beside the shipped model; its
seeds, steps, guidance, negative prompt, size, sampler and panel consistency map onto it."""

from __future__ import annotations

import gzip
import json
import shlex

import numpy as np
import pytest

pytest.importorskip(
    "diffusers", reason="the diffusers extra is not installed (animatic[diffusers])"
)
pytest.importorskip("transformers", reason="diffusers pipelines need transformers (CLIP)")

import torch  # noqa: E402

from keyframe import diffusers_model as dm  # noqa: E402
from pipeline import io  # noqa: E402
from pipeline.cli import main  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread_module")


def clip_tokenizer(folder):
    """A CLIP tokenizer from open_clip's bundled BPE vocabulary (nothing downloaded)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    with gzip.open(default_bpe()) as f:  # as open_clip's SimpleTokenizer reads it
        merges = f.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77
    )


def build_tiny_pipeline(folder):
    """A randomly initialised text-to-image pipeline (U-Net, KL autoencoder, CLIP text model,
    DDIM scheduler) saved with save_pretrained; 16 px native size, a 2x latent grid."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
        attention_head_dim=4, norm_num_groups=8,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(16, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
        sample_size=16,
    )  # fmt: skip
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=77, bos_token_id=49406,
            eos_token_id=49407, pad_token_id=49407,
        )
    )  # fmt: skip
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=clip_tokenizer(folder / "tokenizer-files"),
        unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(folder / "pipe")
    return folder / "pipe"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return f"diffusers:{build_tiny_pipeline(tmp_path_factory.mktemp('diffusers'))}"


def keyframe(tiny, out, *extra):
    return main(["keyframe", "a red circle", "--out", str(out), "--keyframe-model", tiny, *extra])


@pytest.mark.slow
def test_keyframes_from_a_diffusers_folder_reproduce(tiny, tmp_path, capsys):
    base = ("--seed", "3", "--steps", "2", "--size", "32", "--num", "2")
    assert keyframe(tiny, tmp_path / "x.png", *base) == 0
    assert "records no vocabulary; the prompt is not checked" in capsys.readouterr().err
    first, second = (io.read_image(tmp_path / f"x_{i}.png") for i in range(2))
    assert first.shape == (32, 32, 3) and not np.array_equal(first, second)

    record = json.loads((tmp_path / "x_1.png.json").read_text())
    assert record["model"]["kind"] == "diffusers" and len(record["model"]["fingerprint"]) == 64
    assert record["model"]["pipeline"] == "StableDiffusionPipeline"
    assert (record["seed"], record["steps"], record["size"]) == (4, 2, [32, 32])
    assert record["guidance"] == 7.5 and record["sampler"] is None  # the pipeline's defaults
    argv = shlex.split(record["command"])
    argv[argv.index("--out") + 1] = str(tmp_path / "again.png")
    assert main(argv[1:]) == 0
    assert np.array_equal(io.read_image(tmp_path / "again.png"), second)

    # Negative prompt, guidance and sampler all reach the pipeline.
    one = ("--seed", "4", "--steps", "2", "--size", "32")
    variants = {
        "negative": ("--negative", "a blue square"),
        "guidance": ("--guidance", "2"),
        "sampler": ("--sampler", "euler"),
    }
    for name, extra in variants.items():
        assert keyframe(tiny, tmp_path / f"{name}.png", *one, *extra) == 0
        assert not np.array_equal(io.read_image(tmp_path / f"{name}.png"), second), name
    assert json.loads((tmp_path / "sampler.png.json").read_text())["sampler"] == "euler"


@pytest.mark.parametrize(
    "model, extra, words",
    [
        ("diffusers:{tmp}/missing", (), "no such folder"),
        ("diffusers:{tmp}", (), "has no model_index.json"),
        ("{tiny}", ("--place",), "--place: the shapes models' plug-in"),
        ("{tiny}", ("--size", "18"), "size: 18x18 must be multiples of 4"),
    ],
)
def test_bad_diffusers_models_and_options_are_one_line_errors(tiny, tmp_path, capsys, model,
                                                              extra, words):  # fmt: skip
    name = model.format(tmp=tmp_path, tiny=tiny)
    assert keyframe(name, tmp_path / "x.png", "--steps", "1", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert words in err[-1] and err[-1].startswith("animatic keyframe: error:"), err
    assert not (tmp_path / "x.png").exists()


def test_consistency_maps_onto_the_pipeline(tiny):
    model = dm.load_diffusers(tiny)
    prompts, negatives = ["a red circle", "a blue square"], ["", ""]
    alone = dm.sample_diffusers(model, prompts, negatives, [5, 6], 2, 5.0, (16, 16))
    anchored = dm.sample_diffusers(
        model, prompts, negatives, [5, 6], 2, 5.0, (16, 16), anchors=[0, 0], noise_share=0.5
    )
    assert np.abs(anchored[0].astype(int) - alone[0]).max() <= 1  # the anchor draws as alone
    assert np.abs(anchored[1].astype(int) - alone[1]).mean() > 1  # the other follows it
    assert all(
        type(p).__name__ != "_AnchoredSelfAttention" for p in model.unet.attn_processors.values()
    )
    assert dm.draw_size(model, 8, 8) == (16, 16) and dm.draw_size(model, 64, 32) == (64, 32)


def test_a_storyboard_with_a_diffusers_panel_and_a_shipped_panel_renders(tiny, tmp_path):
    shots = tmp_path / "shots.yaml"
    shots.write_text(
        f"""\
size: 32
steps: 2
panels:
  - prompt: a red apple on a wooden table
    models: {{keyframe: "{tiny}"}}
    duration: 6
  - prompt: a large red circle at the top left on a navy background
    duration: 6
""",
        encoding="utf-8",
    )
    board = tmp_path / "board"
    assert main(["storyboard", str(shots), "--out", str(board), "--quiet"]) == 0
    panels = json.loads((board / "storyboard.json").read_text())["panels"]
    assert panels[0]["model"] == tiny and panels[1]["model"] == "shapes"
    assert not panels[0]["vocabulary"]["checked"] and panels[1]["vocabulary"]["checked"]
    film = tmp_path / "film.mp4"
    assert main(["render", str(board), "--out", str(film), "--tween-model", "crossfade",
                 "--quiet"]) == 0  # fmt: skip
    assert film.stat().st_size > 0
    record = json.loads((tmp_path / "film.mp4.json").read_text())
    assert record["keyframe_models"] == {"1": tiny, "2": "shapes"}
    assert record["num_frames"] == 12
