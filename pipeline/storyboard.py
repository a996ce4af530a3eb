"""`animatic storyboard`: a shot list -> one keyframe per panel, a contact sheet and a manifest.

The folder it writes (and owns)::

    shot01_panel01.png ...   one PNG per panel, named by shot (cuts start a new shot) and panel
    contact_sheet.png, .pdf  every panel with its number, timing, seed and prompt (PDF: to print,
                             with lines for notes)
    storyboard.otio          the panels as a timeline for editors (OpenTimelineIO)
    storyboard.json          everything needed to redraw each panel, plus the film's timing

A panel is redrawn only when the content hash of its inputs changes (prompt, negative prompt,
seed, steps, guidance, model id and size; for an artist's ``image:``, the file's bytes and the
size), so a rerun with no changes writes nothing. With ``consistency``, the first prompt panel of
each shot is its anchor: the shot's other panels are drawn in one batch with it, attending to it
(training-free, keyframe.consistency), and their hashes include the anchor's prompt, negative
prompt and seed and the noise share; the anchor itself draws as it would alone.
``reroll`` (``--panel N``) redraws chosen panels with a new seed and leaves every other file
alone; the new seed is remembered until that panel's seed in the shot list is edited. Locked
panels keep their image (and the settings that made it) whatever the shot list says; locks follow
panel numbers. A panel PNG edited by hand is kept and locked, never overwritten.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline import locks
from pipeline.shotlist import ShotList, load_shotlist
from pipeline.storyboard_draw import Progress, draw_panels
from pipeline.storyboard_folder import find_panels, open_board, remove_old_files
from pipeline.storyboard_manifest import Storyboard, manifest_core
from pipeline.storyboard_models import KeyframeFn, PanelModels, check_prompts
from pipeline.storyboard_options import check_batch_size, check_options
from pipeline.storyboard_plan import check_targets, plan_panels
from pipeline.storyboard_sheet import write_sheet

DEFAULT_BATCH = 8


def _exclusive(function: Callable) -> Callable:
    """Run ``function(shots, out, ...)`` holding the lock of folder ``out`` (pipeline.locks)."""

    @functools.wraps(function)
    def locked(shots, out, *args, **kwargs):
        with locks.exclusive(out, what=f"storyboard {out}"):
            return function(shots, out, *args, **kwargs)

    return locked


@_exclusive
def storyboard(
    shots: str | os.PathLike | ShotList,
    out: str | os.PathLike,
    keyframe_model: str | KeyframeFn | None = None,
    reroll: str | Iterable[int] | None = None,
    seed: int | None = None,
    lock: str | Iterable[int] | None = None,
    unlock: str | Iterable[int] | None = None,
    overwrite: bool = False,
    batch_size: int = DEFAULT_BATCH,
    device: str | None = None,
    verbose: bool = True,
    consistency: bool | None = None,
    noise_share: float | None = None,
    force: bool = False,
) -> Storyboard:
    """Draw one keyframe per panel of a shot list into folder ``out``; see the module docstring.

    ``keyframe_model``: a KeyframeFn, a model name/path, ``"oracle"``, or None for the shot
    list's ``models.keyframe``. ``reroll``: panel numbers to redraw with a new seed (``seed``, if
    given, for a single panel). ``lock``/``unlock``: numbers or ``"all"``. ``overwrite`` allows a
    folder that is not a storyboard yet to be written into. ``consistency`` conditions each
    shot's panels on its first prompt panel, starting from ``noise_share`` (0-1) of its noise;
    None for either takes the shot list's ``consistency:`` / ``noise_share:``. A panel's model
    may be its own (``models: {keyframe: ...}``) unless ``keyframe_model`` is given. Prompts are
    checked against their model's vocabulary: unknown words are flagged (manifest, sheet, a
    line); a prompt naming no subject the model knows is an error unless ``force``.
    """
    # 1. Resolve the shot list; check the options before the folder is touched.
    shots = shots if isinstance(shots, ShotList) else load_shotlist(shots)
    check_batch_size(batch_size)
    folder = Path(out)
    old = open_board(folder, overwrite)  # the last run's manifest (None for a new board)
    options = check_options(shots, reroll, seed, lock, unlock, consistency, noise_share)
    models = PanelModels(shots, keyframe_model, shots.width, shots.height, device)

    # 2. Resume: what the last run left, which panels were edited by hand, which are locked.
    found = find_panels(folder, old, shots, options, verbose)

    # 3. Plan each panel (a new record; its file drawn, copied, renamed or kept) and check it.
    plan = plan_panels(shots, found, options, models, verbose)
    check_targets(found, plan, overwrite)
    check_prompts(shots, plan.records, plan.prompt_todo, models, force, verbose)

    # 4. Draw the panels, rewriting the manifest as each finishes.
    board = Progress(found, shots, models.default, plan)
    manifest = draw_panels(board, models, batch_size, options.noise_share, verbose)

    # 5. The contact sheet, its PDF and the timeline; then files of panels gone or renamed.
    changed = bool(board.done) or manifest_core(manifest) != manifest_core(old)
    images = write_sheet(folder, shots, manifest, board.images, changed)
    if not options.reroll:
        remove_old_files(found, manifest["panels"])
    done = sorted(set(board.done) - set(plan.renames))
    generated = tuple(manifest["panels"][i]["number"] for i in done)
    return Storyboard(folder, manifest, tuple(images), generated)


# ---------------------------------------------------------------------------------------------
# The command


def add_keyframe_model_argument(parser: argparse.ArgumentParser) -> None:
    """`--keyframe-model` and `--force`, shared by `storyboard` and `render`."""
    parser.add_argument(
        "--keyframe-model",
        metavar="NAME",
        help="trained model name or path for every panel (default: each panel's, else the shot "
        "list's models.keyframe); diffusers:PATH, a local diffusers text-to-image folder; "
        "'oracle' draws shapes-world captions exactly (a preview, no model)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="draw panels whose prompt names no subject their model knows (else an error); "
        "they are flagged on the contact sheet",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shots", metavar="SHOTS.yaml", help="the shot list")
    parser.add_argument("--out", required=True, metavar="DIR", help="storyboard folder")
    parser.add_argument(
        "--panel", metavar="N", help="re-roll only these panels (e.g. 3 or 2,5) with new seeds"
    )
    parser.add_argument("--seed", type=int, metavar="K", help="the seed for a --panel re-roll")
    parser.add_argument("--lock", metavar="N", help="keep these panels as they are (1,3 or all)")
    parser.add_argument("--unlock", metavar="N", help="let these panels change again (or all)")
    add_keyframe_model_argument(parser)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH,
        metavar="B",
        help="panels per model call (8)",
    )
    parser.add_argument(
        "--consistency",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep each shot's look: its panels attend to the shot's first panel (no training); "
        "default: the shot list's 'consistency:'",
    )
    parser.add_argument(
        "--noise-share",
        type=float,
        default=None,
        metavar="M",
        help="with --consistency, the share of the anchor's initial noise, 0-1 (shot list's, or 0)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a folder that is not a storyboard"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or notes")


def run(args: argparse.Namespace) -> int:
    board = storyboard(
        args.shots,
        args.out,
        keyframe_model=args.keyframe_model,
        reroll=args.panel,
        seed=args.seed,
        lock=args.lock,
        unlock=args.unlock,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        device=args.device,
        verbose=not args.quiet,
        consistency=args.consistency,
        noise_share=args.noise_share,
        force=args.force,
    )
    if not args.quiet:
        made = ", ".join(map(str, board.generated)) or "none (all up to date)"
        print(f"{board.folder}: {len(board.images)} panels; drawn this run: {made}")
        if args.panel and board.generated:
            for number in board.generated:
                record = board.panels[number - 1]
                if record["source"] == "prompt" and record["seed"] != record["shotlist_seed"]:
                    print(f"panel {number}: seed {record['seed']} (put 'seed: {record['seed']}' "
                          "in the shot list to keep it there)")  # fmt: skip
    return 0
