"""The `animatic` command: one subcommand per module, imported only when it is used."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings

from keyframe.errors import UserError

# name -> (module, one-line help). Each module defines add_arguments(parser) and run(args).
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("pipeline.bench", "measure speed, FLOPs, MFU and memory of both stages here"),
    "dataset": ("pipeline.dataset", "build a training dataset: shapes world, or picture layers"),
    "eval": ("pipeline.evaluate", "score keyframe or tween models (shapes world, real clips)"),
    "export": ("pipeline.export", "turn a training checkpoint into a small inference folder"),
    "keyframe": ("pipeline.keyframe_cmd", "draw keyframe images from a text prompt (stage 1)"),
    "render": ("pipeline.render", "render a shot list or storyboard to MP4, GIF or PNG frames"),
    "shard": ("pipeline.shard_cmd", "pack a dataset into tar shards for large-scale training"),
    "storyboard": ("pipeline.storyboard", "draw one keyframe per panel of a shot list"),
    "tween": ("pipeline.tween", "fill in the frames between key images (stage 2)"),
    "train": (
        "pipeline.train",
        "train a model with LightningCLI: animatic train STAGE fit --config",
    ),
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line (no usage dump); `--help` still shows all."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _top_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="animatic",
        description="Text-to-video the way studios work: keyframes from text, then in-betweens.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _one_line_warning(name: str):
    """Warnings shown as one line ('animatic NAME: warning: ...'), not file, line and source,
    on a line of their own while a progress bar is drawn."""

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        from tqdm import tqdm

        text = " ".join(str(message).split())
        tqdm.write(f"animatic {name}: warning: {text}", file=file or sys.stderr)

    return show_warning


def _quiet_opencv() -> None:
    """OpenCV logs its own lines (to the C stderr) for a corrupt image, on top of the one line
    animatic prints about it."""
    with contextlib.suppress(ImportError, AttributeError):
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def main(argv: list[str] | None = None) -> int:
    """Entry point: dispatch to the subcommand module; user errors become one line, exit 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _quiet_opencv()
    if not argv or argv[0] not in COMMANDS:
        try:
            _top_parser().parse_args(argv)
        except SystemExit as exit_:
            return int(exit_.code or 0)
        _top_parser().print_help()
        return 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    parser = _Parser(prog=f"animatic {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit as exit_:
        return int(exit_.code or 0)
    shown, warnings.showwarning = warnings.showwarning, _one_line_warning(name)
    try:
        return int(module.run(args) or 0)
    except UserError as err:
        print(f"animatic {name}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, read-only, no permission: writers left nothing behind
        from pipeline.safety import write_error

        message = write_error(err)
        if message is None:
            raise
        print(f"animatic {name}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"animatic {name}: interrupted; finished work is kept", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
