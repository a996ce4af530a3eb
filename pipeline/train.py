"""`animatic train STAGE fit --config configs/STAGE/NAME.yaml`: LightningCLI for each stage.

Everything after STAGE goes to LightningCLI (jsonargparse in omegaconf+ mode, so command-line
overrides reach `${...}` interpolations): subcommands fit/validate, `--print_config`, `--ckpt_path`
to resume, and any trainer flag (`--trainer.devices 2 --trainer.strategy ddp`,
`--trainer.precision bf16-mixed`).
"""

from __future__ import annotations

import argparse
import importlib
import warnings
from pathlib import Path

from keyframe.errors import UserError

# stage -> (LightningModule, LightningDataModule), as "module:Class".
STAGES: dict[str, tuple[str, str]] = {
    "autoencoder": ("keyframe.autoencoder:AutoencoderModule", "keyframe.data:ImageDataModule"),
    "keyframe": ("keyframe.module:KeyframeModule", "keyframe.data:ImageDataModule"),
    "interpolate": ("interpolate.module:InterpolateModule", "keyframe.data:ClipDataModule"),
    "general": (
        "interpolate.general.trainer:GeneralModule",
        "interpolate.general.data:LayerDataModule",
    ),
    "motion": (
        "interpolate.motion_training:MotionModule",
        "interpolate.motion_training:TrackDataModule",
    ),
}

# Values that must agree between data and model, linked so they are set in one place.
LINKS: dict[str, list[tuple[str, str]]] = {
    "autoencoder": [],
    "keyframe": [("data.size", "model.image_size")],
    "interpolate": [("data.size", "model.image_size"), ("data.num_frames", "model.num_frames")],
    "motion": [],
    "general": [],
}


def _import(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _check_ckpt_path(cli_args: list[str]) -> None:
    """Fail with one line, before Lightning starts, when --ckpt_path names no readable file."""
    for i, arg in enumerate(cli_args):
        value = None
        if arg.startswith("--ckpt_path="):
            value = arg.split("=", 1)[1]
        elif arg == "--ckpt_path" and i + 1 < len(cli_args):
            value = cli_args[i + 1]
        if value and value not in ("last", "best", "hpc", "registry") and not Path(value).is_file():
            raise UserError(f"--ckpt_path {value}: no such checkpoint file")


def build_cli(stage: str, cli_args: list[str], run: bool = True):
    """Build (and by default run) the LightningCLI of one stage; returns the LightningCLI object."""
    from jsonargparse import set_parsing_settings
    from lightning.pytorch.cli import LightningCLI

    # Configs load under the `fit`/`validate` subcommand, so `${trainer.x}` in a YAML file is
    # made relative to that file's root (else it would have to be spelled `${fit.trainer.x}`).
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    # `args` is how this command passes its own arguments; the warning assumes a script.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    model_cls, data_cls = (_import(spec) for spec in STAGES[stage])

    class StageCLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            for source, target in LINKS[stage]:
                parser.link_arguments(source, target)

    return StageCLI(
        model_cls,
        data_cls,
        args=cli_args,
        run=run,
        parser_kwargs={
            "parser_mode": "omegaconf+",
            "prog": f"animatic train {stage}",
            "exit_on_error": False,  # run() reports a bad config or option as one line
        },
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=sorted(STAGES), help="which model to train")
    parser.add_argument(
        "cli_args",
        nargs=argparse.REMAINDER,
        help="LightningCLI arguments, e.g. fit --config configs/keyframe/shapes.yaml",
    )


def run(args: argparse.Namespace) -> int:
    from jsonargparse import ArgumentError

    _check_ckpt_path(args.cli_args)
    try:
        build_cli(args.stage, args.cli_args or ["--help"])
    except ArgumentError as err:
        raise UserError(" ".join(str(err).split())) from None
    return 0
