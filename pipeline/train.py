"""`animatic train STAGE fit --config configs/STAGE/NAME.yaml`: LightningCLI for each stage.

Everything after STAGE goes to LightningCLI (jsonargparse in omegaconf+ mode, so command-line
overrides reach `${...}` interpolations): subcommands fit/validate, `--print_config`, `--ckpt_path`
to resume, and any trainer flag (`--trainer.devices 2 --trainer.strategy ddp`,
`--trainer.precision bf16-mixed`).
"""

from __future__ import annotations

import argparse
import importlib
import re
import warnings
from pathlib import Path

from keyframe.errors import UserError
from keyframe.files import load_checkpoint

# stage -> (LightningModule, LightningDataModule), as "module:Class".
STAGES: dict[str, tuple[str, str]] = {
    "autoencoder": (
        "keyframe.autoencoder_training:AutoencoderModule",
        "keyframe.data:ImageDataModule",
    ),
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
        if value and Path(value).is_file():
            # Lightning reads it with torch.load's default, which unpickles anything under
            # torch < 2.6: read it safely first, so a crafted file is refused before it runs.
            load_checkpoint(value, "checkpoint to resume")


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
    from keyframe.resume import BadSamples, StepSeeds

    class StageCLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            for source, target in LINKS[stage]:
                parser.link_arguments(source, target)

        def before_fit(self):
            if self.trainer.fast_dev_run:  # a debug run must leave nothing to resume from
                drop_checkpointing(self.trainer)

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
        # exact resume and bad-file counting (keyframe.resume), appended to the config's own
        trainer_defaults={"callbacks": [StepSeeds(), BadSamples()]},
    )


def drop_checkpointing(trainer) -> None:
    """Remove the checkpoint callbacks: Lightning's ModelCheckpoint still writes last.ckpt at
    the end of a fast_dev_run, which a later `--ckpt_path last` would resume from."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, ModelCheckpoint)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=sorted(STAGES), help="which model to train")
    parser.add_argument(
        "cli_args",
        nargs=argparse.REMAINDER,
        help="LightningCLI arguments, e.g. fit --config configs/keyframe/shapes.yaml",
    )


def run(args: argparse.Namespace) -> int:
    from jsonargparse import ArgumentError
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    _check_ckpt_path(args.cli_args)
    check_overrides(args.cli_args)
    try:
        build_cli(args.stage, args.cli_args or ["--help"])
    except ArgumentError as err:
        raise UserError(" ".join(str(err).split())) from None
    except (ValueError, TypeError, MisconfigurationException) as err:
        if not (isinstance(err, MisconfigurationException) or _trainer_settings_error(err)):
            raise
        raise UserError(f"trainer: {' '.join(str(err).split())}") from None
    return 0


def config_base(path: Path) -> Path | None:
    """The base of an override config (its header says "# An override of BASE.yaml"), or None."""
    try:
        match = OVERRIDE_HEADER.search(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None  # LightningCLI reports an unreadable config itself
    return path.parent / match.group(1) if match else None


def check_overrides(cli_args: list[str]) -> None:
    """An override config given without its base, earlier, would train with class defaults for
    everything it leaves out: refuse it with the command that works."""
    order = [Path(a.split("=", 1)[1]) if a.startswith("--config=") else Path(b)
             for a, b in zip(cli_args, [*cli_args[1:], ""], strict=True)
             if a.startswith("--config=") or a == "--config"]  # fmt: skip
    for index, path in enumerate(order):
        base = config_base(path)
        if base is not None and not any(p.resolve() == base.resolve() for p in order[:index]):
            raise UserError(
                f"{path}: an override of {base.name}; give its base first: "
                f"--config {base} --config {path}"
            )


OVERRIDE_HEADER = re.compile(r"^# An override of (\S+\.yaml)", re.MULTILINE)


def _trainer_settings_error(err: BaseException) -> bool:
    """Whether Lightning raised `err` checking the trainer's settings (strategy, accelerator,
    devices, precision: e.g. `--trainer.strategy fsdp` on a CPU), a bad option, not a bug."""
    frame, where = err.__traceback__, ""
    while frame is not None:
        where, frame = frame.tb_frame.f_code.co_filename, frame.tb_next
    return any(part in where.replace("\\", "/") for part in SETTINGS_CHECKS)


# Lightning's modules that check trainer settings; errors raised in them are the user's options.
SETTINGS_CHECKS = (
    "lightning/pytorch/trainer/connectors/accelerator_connector.py",
    "lightning/fabric/connector.py",
    "lightning/pytorch/trainer/setup.py",
)
