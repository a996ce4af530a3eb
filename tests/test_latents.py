"""Cached latents: built once per (autoencoder, records, settings), equal to encoding on the fly,
reused when nothing changed, rebuilt when something did, and used by both stages' training."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors import safe_open

from keyframe.autoencoder import FrameAutoencoder
from keyframe.autoencoder_files import save_autoencoder
from keyframe.data import ClipDataModule, ImageDataModule
from keyframe.errors import UserError
from pipeline.cli import main


def _ae(seed: int = 0) -> FrameAutoencoder:
    torch.manual_seed(seed)
    ae = FrameAutoencoder(3, 4, base_channels=8, channel_mult=[1, 2], num_res_blocks=1)
    ae.scale_factor, ae.shift = 0.8, 0.1
    return ae.eval()


@pytest.mark.slow
def test_image_cache_equals_encoding_and_is_reused_until_something_changes(
    tiny_shapes, tmp_path, capsys
):
    path, ae = tmp_path / "stills.safetensors", _ae()
    dm = ImageDataModule(str(tiny_shapes), size=16, batch_size=5, flip=True, latents=str(path))
    dm.use_latents(ae)
    records = dm.train_set.captions
    assert len(records) == len(dm.train_set) and path.is_file()
    plain = ImageDataModule(str(tiny_shapes), size=16, batch_size=5)
    plain.setup()
    with safe_open(str(path), "pt") as f:
        stored, mirrored = f.get_tensor("latents"), f.get_tensor("mirrored")
    for i in (0, len(records) - 1):
        image = plain.train_set[i]["image"][None]
        with torch.no_grad():
            torch.testing.assert_close(stored[i].float(), ae.encode(image)[0], atol=2e-3, rtol=2e-3)
            torch.testing.assert_close(
                mirrored[i].float(), ae.encode(image.flip(-1))[0], atol=2e-3, rtol=2e-3
            )
    # Items: latents (or their mirror with the mirrored caption), never images.
    item = dm.train_set[0]
    assert set(item) == {"latent", "caption"} and item["latent"].shape == (4, 8, 8)
    # Same autoencoder and data: reused as is. Another autoencoder: rebuilt, and it says why.
    stamp = os.stat(path).st_mtime_ns
    ImageDataModule(str(tiny_shapes), 16, flip=True, latents=str(path)).use_latents(ae)
    assert os.stat(path).st_mtime_ns == stamp
    ImageDataModule(str(tiny_shapes), 16, flip=True, latents=str(path)).use_latents(_ae(1))
    assert "stale (autoencoder changed)" in capsys.readouterr().out
    assert os.stat(path).st_mtime_ns != stamp
    # A file that is not a cache is never replaced.
    (tmp_path / "mine.safetensors").write_text("my notes")
    with pytest.raises(UserError, match="not a latent cache"):
        ImageDataModule(
            str(tiny_shapes), 16, latents=str(tmp_path / "mine.safetensors")
        ).use_latents(ae)


def test_clip_cache_cuts_the_same_windows_as_the_videos(tiny_shapes, tmp_path):
    ae = _ae()
    args = dict(num_frames=5, size=16, strides=(1, 2), seed=3, val_fraction=0.0)
    cached = ClipDataModule(str(tiny_shapes), **args, latents=str(tmp_path / "clips.safetensors"))
    cached.use_latents(ae)
    plain = ClipDataModule(str(tiny_shapes), **args)
    plain.setup()
    # Fixed draws (a seeded dataset) so both pick the same start and stride.
    cached.train_set.clips.seed = plain.train_set.seed = 7
    for i in range(len(plain.train_set)):
        video, item = plain.train_set[i], cached.train_set[i]
        assert (item["fps"], item["stride"]) == (video["fps"], video["stride"])
        with torch.no_grad():
            expected = ae.encode(video["video"][None])[0]
        torch.testing.assert_close(item["latent"], expected, atol=2e-3, rtol=2e-3)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["keyframe", "interpolate"])
def test_training_runs_on_cached_latents(stage, tiny_shapes, tmp_path, one_thread):
    ae_dir = save_autoencoder(_ae(), tmp_path / "ae")
    cache = tmp_path / "cache.safetensors"
    argv = [
        "train", stage, "fit", "--config", f"configs/{stage}/tiny.yaml",
        "--data.data", str(tiny_shapes), "--data.size", "16", "--data.latents", str(cache),
        "--model.autoencoder", str(ae_dir), "--trainer.fast_dev_run", "true",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    assert main(argv) == 0
    with safe_open(str(cache), "pt") as f:
        assert f.metadata()["size"] == "16"
