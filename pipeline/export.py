"""`animatic export`: a training checkpoint -> the small inference folder that ships.

Every kind becomes the one folder format of keyframe.hub, `config.json` (with its "kind") +
`model.safetensors`: keyframe and interpolation checkpoints (EMA weights, fp16 by default; an
interpolator keeps its `motion/` prior), a motion prior's (ship it in its interpolator's
`motion/` folder), an autoencoder's and a general interpolator's.
`--autoencoder` swaps in a better decoder trained on the same frozen encoder (see
configs/autoencoder/shapes-decoder.yaml): the encoder and latent scale must match exactly, so the
diffusion model's latents mean the same thing to the new decoder.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import torch

import interpolate  # noqa: F401  (registers the interpolate, motion and general kinds)
from keyframe import hub
from keyframe.autoencoder import Autoencoder
from keyframe.autoencoder_files import first_different_weight, load_autoencoder
from keyframe.errors import UserError
from keyframe.files import load_checkpoint

STAGES = ("keyframe", "interpolate", "autoencoder", "motion", "general")


def swap_decoder(own: Autoencoder, ae: Autoencoder, where: str) -> None:
    """Give a model's autoencoder `own` the weights of `ae`, whose encoder and latent scale must
    equal its own (compared as fp16, so a shipped fp16 model takes a decoder from its fp32
    training run)."""
    if own.config() != ae.config():
        raise UserError(
            f"{where}: autoencoder config {ae.config()} differs from the model's {own.config()} "
            "(the decoder must come from a run with freeze_encoder on the model's autoencoder)"
        )
    key = first_different_weight(own, ae, prefix="encoder.", fp16=True)
    if key is not None:
        raise UserError(
            f"{where}: encoder weight {key} differs from the model's: the latent spaces differ "
            "(train the decoder with freeze_encoder and init_from the model's autoencoder)"
        )
    own.load_state_dict(ae.state_dict())


def export(
    stage: str,
    checkpoint: str | Path,
    out: str | Path,
    autoencoder: str | Path | None = None,
    fp16: bool = True,
    overwrite: bool = False,
    share_autoencoder: str | None = None,
    int8: bool = False,
) -> Path:
    """Write the inference folder of a `stage` checkpoint to `out`; returns `out`.
    `share_autoencoder`: leave the autoencoder out, loading it from that shipped keyframe model.
    `int8`: store the diffusion networks' weight matrices as int8 (keyframe.int8)."""
    if stage not in STAGES:
        raise UserError(f"stage {stage!r}: expected one of {', '.join(STAGES)}")
    if stage in ("autoencoder", "motion", "general") and (autoencoder or share_autoencoder or int8):
        raise UserError("--autoencoder/--share-autoencoder/--int8: for keyframe and interpolate")
    if stage == "general":
        return _export_general(checkpoint, out, fp16, overwrite)
    if stage == "motion":
        return _export_motion(checkpoint, out, fp16, overwrite)
    if stage == "autoencoder":
        return hub.save_pretrained(
            load_autoencoder(checkpoint), out, fp16=fp16, overwrite=overwrite
        )
    module = hub.from_pretrained(checkpoint, stage)
    if autoencoder is not None:
        model = module.model if stage == "keyframe" else module  # a KeyframePipeline's model
        swap_decoder(model.autoencoder, load_autoencoder(autoencoder), str(autoencoder))
    # (an interpolator's motion prior goes to written/motion with it)
    written = hub.save_pretrained(
        module, out, fp16=fp16, overwrite=overwrite, shared_autoencoder=share_autoencoder,
        int8=int8,
    )  # fmt: skip
    if stage == "keyframe":
        _export_vocabulary(checkpoint, written, overwrite)
    return written


def _export_vocabulary(checkpoint: str | Path, out: Path, overwrite: bool) -> None:
    """The words the model trained on (keyframe.vocabulary) next to its weights; its subjects are
    the ones it recorded and any shapes-world shape nouns among its words."""
    from keyframe.pretrained import resolve_model
    from keyframe.vocabulary import Vocabulary, load_vocabulary, save_vocabulary
    from pipeline.phrasings import SUBJECTS

    vocabulary = load_vocabulary(resolve_model(checkpoint))
    if vocabulary is None:
        print(f"note: {checkpoint} records no vocabulary; prompts to {out} will not be checked")
        return
    subjects = (vocabulary.subjects or frozenset()) | (vocabulary.words & SUBJECTS)
    vocabulary = Vocabulary(vocabulary.words, subjects or None)
    save_vocabulary(out, vocabulary, "captions trained on", overwrite=overwrite)


def _export_motion(checkpoint: str | Path, out: str | Path, fp16: bool, overwrite: bool) -> Path:
    """A MotionModule .ckpt (or an exported prior folder) -> the prior's folder."""
    from interpolate.motion_training import MotionModule

    path = Path(checkpoint)
    if path.is_dir():
        prior = hub.from_pretrained(path, "motion")
    else:
        ckpt = load_checkpoint(path, "motion prior checkpoint")  # weights_only: never unpickles
        try:
            names = inspect.signature(MotionModule).parameters  # not LightningCLI's extras
            hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if k in names}
            module = MotionModule(**hparams)
            module.load_state_dict(ckpt["state_dict"])
        except (KeyError, RuntimeError, TypeError) as err:
            detail = " ".join(str(err).split())[:200]
            raise UserError(f"{path}: not a motion prior checkpoint ({detail})") from None
        prior = module.prior
    return hub.save_pretrained(prior, out, fp16=fp16, overwrite=overwrite)


def _export_general(checkpoint: str | Path, out: str | Path, fp16: bool, overwrite: bool) -> Path:
    """A GeneralModule .ckpt (its EMA weights, `ema_denoiser.*`; the live ones of a run without
    EMA) -> the general interpolator's folder."""
    from interpolate.general.model import build_denoiser
    from interpolate.general.pipeline import GeneralInterpolator
    from interpolate.general.trainer import GeneralModule

    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
        known = inspect.signature(GeneralModule.__init__).parameters
        module = GeneralModule(**{k: v for k, v in ckpt["hyper_parameters"].items() if k in known})
        ema = any(k.startswith("ema_denoiser.") for k in ckpt["state_dict"])
        prefix = "ema_denoiser." if ema else "denoiser."
        state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        denoiser = build_denoiser(module.config)
        denoiser.load_state_dict(state)
    except (OSError, KeyError, RuntimeError, TypeError, ValueError) as err:
        raise UserError(f"{checkpoint}: not a general interpolator checkpoint ({err})") from None
    pipe = GeneralInterpolator(denoiser, module.config)
    return hub.save_pretrained(pipe, out, fp16=fp16, overwrite=overwrite)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=STAGES, help="which kind of checkpoint")
    parser.add_argument("checkpoint", help="a Lightning .ckpt (or an exported folder)")
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument(
        "--autoencoder", help="a decoder fine-tuned on the model's frozen encoder (.ckpt or folder)"
    )
    parser.add_argument(
        "--share-autoencoder",
        metavar="NAME",
        help="leave the autoencoder out: it is the one inside shipped keyframe model NAME",
    )
    parser.add_argument("--fp32", action="store_true", help="keep float32 weights (default fp16)")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="store the diffusion networks' weight matrices as int8 with per-channel scales "
        "(about half the size; the rest fp16)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export")


def run(args: argparse.Namespace) -> int:
    out = export(
        args.stage, args.checkpoint, args.out, args.autoencoder, not args.fp32, args.overwrite,
        args.share_autoencoder, args.int8,
    )  # fmt: skip
    size = sum(p.stat().st_size for p in Path(out).iterdir() if p.is_file())
    print(f"exported {args.stage} {args.checkpoint} -> {out} ({size / 2**20:.1f} MiB)")
    return 0
