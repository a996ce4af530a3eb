"""The shot list: a YAML file describing a film as panels, the way a storyboard artist does.

Format (every key but ``panels`` is optional; defaults shown)::

    title: Bouncing shapes      # default: the file name without its suffix
    fps: 24                     # frames per second, a positive number
    size: 64                    # square side, or [width, height]; multiples of 8, at least 16
    loop: false                 # true: the last panel tweens back to the first (seamless loop)
    consistency: false          # true: each shot's panels keep the look of its first panel
    noise_share: 0.0            # with consistency: share of the anchor's initial noise, 0..1
    seed: 0                     # a panel without a seed gets seed + its index (0, 1, 2, ...)
    steps: 30                   # sampling steps for generated keyframes, 1..1000; default:
    guidance: 5.0               # the keyframe model's own (shapes: 30 and 5.0); guidance 0..100
    negative: ""                # default negative prompt
    duration: 2s                # default panel duration
    models:
      keyframe: shapes          # shipped model name or a path (relative to this file), or
      interpolate: shapes       # diffusers:PATH (a local diffusers text-to-image folder);
                                # interpolate defaults to shapes for shapes-world keyframe
                                # models (shapes, oracle) and to general for any other
    panels:
      - prompt: a large red circle at the top left on a navy background
        duration: 2s            # "2s" / "1.5s" = seconds; 48 or "48f" = frames
        hold: 12                # frames (or "0.5s") the image stays still before motion starts
        transition: tween       # tween (default): in-betweens to the next panel's key; or cut
      - image: keys/02.png      # an artist's own keyframe instead of a generated one
        prompt: a small blue square in the center on a navy background
        negative: blurry        # overrides the default negative prompt
        seed: 7                 # steps and guidance may be overridden per panel too
        transition: cut
      - prompt: a red apple on a wooden table
        models: {keyframe: diffusers:models/sd15}   # this panel's own keyframe model

Timing: panel ``i``'s key frame is the sum of the durations before it, and its duration runs
to the next panel's key (the last panel's runs to the end of the film), so the film is the sum
of all durations long. Seconds are rounded to whole frames. ``hold`` counts the frames, from the
key frame on, that show the panel's image unchanged (0, the default, and 1 both mean just the
key frame); it must fit in the duration, and leave at least one frame when tweening. After the
hold comes motion: ``tween`` generates in-betweens towards the next key; ``cut`` moves on from
this key alone (the animatic preview holds it) and cuts hard to the next panel. The last panel
of a film that does not loop ends with a cut to the end. A panel needs a ``prompt``, an
``image``, or both (the prompt then guides the tween). ``image`` paths are relative to the shot
list. A panel's ``models: {keyframe: ...}`` draws that panel with its own keyframe model (the
storyboard records which model drew each panel). Unknown keys are errors, and every error names
the line, the panel and the field.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from yaml.nodes import Node, SequenceNode

from keyframe.errors import UserError
from keyframe.sampling_options import EXPECTED, check_sampling_options
from pipeline.shotlist_yaml import NodeReader, compose, describe

DEFAULT_FPS = 24
DEFAULT_SIZE = 64
DEFAULT_DURATION_S = 2.0
DEFAULT_MODEL = "shapes"
DEFAULT_INTERPOLATE = "general"  # in-betweens of keys from any other keyframe model
# keyframe models whose keys are the shapes world's (their shot lists tween with `shapes`)
SHAPES_WORLD_MODELS = ("shapes", "shapes-phrasings", "oracle")
MAX_SIZE = 4096
MAX_FPS = 240
MAX_SEED = 2**63 - 1
MAX_FRAMES = 100_000  # frames in a film: over an hour at 24 fps (pipeline.safety.MAX_FRAMES)
TRANSITIONS = ("tween", "cut")

TOP_KEYS = (
    "panels",
    "title",
    "fps",
    "size",
    "loop",
    "consistency",
    "noise_share",
    "seed",
    "steps",
    "guidance",
    "negative",
    "duration",
    "models",
)
MODEL_KEYS = ("keyframe", "interpolate")
DIFFUSERS = "diffusers:"  # prefix of a local diffusers folder (keyframe.diffusers_model)
PANEL_KEYS = (
    "prompt",
    "negative",
    "image",
    "seed",
    "steps",
    "guidance",
    "duration",
    "hold",
    "transition",
    "models",
)
PANEL_MODEL_KEYS = ("keyframe",)  # a panel may draw with its own keyframe model


@dataclass(frozen=True)
class Panel:
    """One panel with every default filled in; durations are in frames."""

    number: int  # 1-based, as in messages
    prompt: str | None
    negative: str
    image: Path | None  # absolute; None means the keyframe is generated from the prompt
    seed: int
    steps: int | None  # None: the keyframe model's own default (keyframe.sampling.with_defaults)
    guidance: float | None  # likewise
    duration: int  # frames from this panel's key to the next panel's key
    hold: int  # frames from the key on that show the image unchanged (0 and 1: just the key)
    transition: str  # "tween" or "cut"
    line: int = 0  # line of the panel in the shot list
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    keyframe_model: str | None = None  # the panel's own models.keyframe (None: the shot list's)


@dataclass(frozen=True)
class ShotList:
    """A parsed, validated shot list."""

    title: str
    fps: float
    width: int
    height: int
    loop: bool
    keyframe_model: str
    interpolate_model: str
    panels: tuple[Panel, ...]
    source: str = "<shot list>"
    consistency: bool = False  # condition each shot's panels on its first (keyframe.consistency)
    noise_share: float = 0.0  # with consistency: how much of the anchor's initial noise to share

    @property
    def num_frames(self) -> int:
        return sum(panel.duration for panel in self.panels)


def panel_error(shots: ShotList, panel: Panel, key: str, message: str) -> UserError:
    """A UserError pointing at ``panel``'s ``key`` in the shot list, for later checks."""
    line = panel.lines.get(key, panel.line)
    return UserError(f"{shots.source}:{line}: panel {panel.number}: {key}: {message}")


def load_shotlist(path: str | Path) -> ShotList:
    """Read and validate a shot list file; ``image:`` paths resolve relative to it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: shot list not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: expected a shot list YAML file, got a folder") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    return parse_shotlist(text, str(path), base_dir=path.parent)


def parse_shotlist(
    text: str, source_name: str = "<shot list>", base_dir: str | Path | None = None
) -> ShotList:
    """Parse shot list YAML text; ``source_name`` prefixes errors, ``base_dir`` anchors paths."""
    root = compose(text, source_name)
    return _Parser(source_name, Path(base_dir) if base_dir is not None else Path.cwd()).top(root)


class _Parser(NodeReader):
    """Reads a shot list's node tree into a ShotList, checking each field where it is written."""

    def top(self, root: Node | None) -> ShotList:
        """The whole shot list, read in the order its errors are reported."""
        if root is None:
            raise self.error(None, "", "empty shot list; expected a mapping with 'panels:'")
        items = self.mapping(root, "", TOP_KEYS)
        # 1. film-wide settings, then the defaults panels may override
        film = self.film(items)
        fps = film["fps"]
        base = {"seed": 0, "steps": None, "guidance": None, "negative": ""}  # None: the model's
        defaults = self.settings(items, fps, {**base, "duration": round(DEFAULT_DURATION_S * fps)})
        # 2. models, 3. panels, 4. title and length
        models = self.models(items)
        panels = self.panels(root, items, fps, defaults, film["loop"])
        title = self.text(items["title"], "title") if "title" in items else None
        total = sum(panel.duration for panel in panels)
        if total > MAX_FRAMES:  # checked before any panel is drawn or frame is made
            raise self.error(
                items["panels"], "duration",
                f"the film is {total} frames, more than {MAX_FRAMES}; split it into several",
            )  # fmt: skip
        return ShotList(
            title=title or Path(self.source).stem or "untitled",
            keyframe_model=models["keyframe"],
            interpolate_model=models["interpolate"],
            panels=tuple(panels),
            source=self.source,
            **film,
        )

    def film(self, items: dict[str, Node]) -> dict:
        """fps, width, height, loop, consistency and noise_share, defaults filled in."""
        fps = DEFAULT_FPS
        if "fps" in items:
            expected = f"a positive number up to {MAX_FPS}"
            fps = self.number(items["fps"], "fps", expected, 0, MAX_FPS, above_low=True)
            fps = int(fps) if float(fps).is_integer() else fps
        size = (
            self.size(items["size"], MAX_SIZE) if "size" in items else (DEFAULT_SIZE, DEFAULT_SIZE)
        )
        loop = self.boolean(items["loop"], "loop") if "loop" in items else False
        consistency = (
            self.boolean(items["consistency"], "consistency") if "consistency" in items else False
        )
        noise_share = 0.0
        if "noise_share" in items:
            node = items["noise_share"]
            noise_share = float(self.number(node, "noise_share", "a number from 0 to 1", 0, 1))
            if noise_share and not consistency:
                raise self.error(node, "noise_share", "needs 'consistency: true'")
        return {
            "fps": fps,
            "width": size[0],
            "height": size[1],
            "loop": loop,
            "consistency": consistency,
            "noise_share": noise_share,
        }

    def models(self, items: dict[str, Node]) -> dict[str, str]:
        """models.keyframe and models.interpolate; a world's keys go to its own interpolator."""
        models = {"keyframe": DEFAULT_MODEL}
        if "models" in items:
            for key, node in self.mapping(items["models"], "models", MODEL_KEYS).items():
                models[key] = self.model(node, key)
        if "interpolate" not in models:
            shapes = models["keyframe"] in SHAPES_WORLD_MODELS
            models["interpolate"] = DEFAULT_MODEL if shapes else DEFAULT_INTERPOLATE
        return models

    def panels(
        self, root: Node, items: dict[str, Node], fps: float, defaults: dict, loop: bool
    ) -> list[Panel]:
        """Every panel, in order; the last one ends the film unless it loops."""
        panel_nodes = self.panel_list(root, items)
        if loop and len(panel_nodes) < 2:
            raise self.error(items["loop"], "loop", "needs at least 2 panels to loop, got 1")
        panels = []
        for index, node in enumerate(panel_nodes):
            self.panel = index + 1
            ends_film = index == len(panel_nodes) - 1 and not loop
            panels.append(self.read_panel(node, index, fps, defaults, ends_film))
        self.panel = 0
        return panels

    def settings(self, items: dict[str, Node], fps: float, defaults: dict) -> dict:
        """The keys a panel may override: seed, steps, guidance, negative, duration."""
        out = dict(defaults)
        if "seed" in items:
            out["seed"] = self.integer(items["seed"], "seed", "a whole number >= 0", 0, MAX_SEED)
        for key in ("steps", "guidance"):
            if key in items:
                out[key] = self.sampling_option(items[key], key)
        if "negative" in items:
            out["negative"] = self.text(items["negative"], "negative") or ""
        if "duration" in items:
            out["duration"] = self.frames(items["duration"], "duration", fps, allow_zero=False)
        return out

    def sampling_option(self, node: Node, key: str) -> int | float:
        """steps or guidance, checked by the check every entry point shares (its message, with
        this file and line in front)."""
        value = self.scalar(node, key, EXPECTED[key])
        try:
            check_sampling_options(**{key: value})
        except UserError as err:
            raise self.error(node, "", str(err)) from None
        return value

    def panel_list(self, root: Node, items: dict[str, Node]) -> list[Node]:
        """The panels' nodes: a non-empty list."""
        if "panels" not in items:
            raise self.error(root, "panels", "missing; a shot list needs a list of panels")
        node = items["panels"]
        if not isinstance(node, SequenceNode):
            raise self.error(node, "panels", f"expected a list of panels, got {describe(node)}")
        if not node.value:
            raise self.error(node, "panels", "expected at least one panel, got an empty list")
        return node.value

    def model(self, node: Node, key: str) -> str:
        """A model name as written, or a path (with a slash) resolved against the shot list."""
        name = self.text(node, f"models: {key}")
        if name is None:
            raise self.error(node, f"models: {key}", "expected a model name or path, got nothing")
        prefix = DIFFUSERS if name.startswith(DIFFUSERS) else ""
        path = name[len(prefix) :]
        candidate = self.base_dir / Path(path).expanduser()
        has_slash = "/" in path or "\\" in path
        if prefix and not path:
            raise self.error(node, f"models: {key}", "expected diffusers:PATH to a model folder")
        local = (has_slash or prefix) and candidate.exists()  # diffusers: is always a path
        return prefix + str(candidate.resolve()) if local else name

    def read_panel(
        self, node: Node, index: int, fps: float, defaults: dict, ends_film: bool
    ) -> Panel:
        """One panel: its own keys over the shot list's defaults (seed counts up per panel)."""
        items = self.mapping(node, "", PANEL_KEYS)
        prompt = self.text(items["prompt"], "prompt") if "prompt" in items else None
        image = self.image(items["image"]) if "image" in items else None
        if prompt is None and image is None:
            where = items.get("prompt", node)
            raise self.error(where, "prompt", "missing; a panel needs a prompt, an image, or both")
        settings = self.settings(items, fps, {**defaults, "seed": defaults["seed"] + index})
        duration = settings["duration"]
        transition = (
            self.transition(items["transition"], ends_film) if "transition" in items else None
        )
        transition = transition or ("cut" if ends_film else "tween")
        hold = self.frames(items["hold"], "hold", fps, allow_zero=True) if "hold" in items else 0
        model = self.panel_model(items)
        self.check_hold(items, hold, duration, transition)
        return Panel(
            number=index + 1,
            prompt=prompt,
            negative=settings["negative"],
            image=image,
            seed=settings["seed"],
            steps=settings["steps"],
            guidance=settings["guidance"],
            duration=duration,
            hold=hold,
            transition=transition,
            line=node.start_mark.line + 1,
            lines={key: value.start_mark.line + 1 for key, value in items.items()},
            keyframe_model=model,
        )

    def panel_model(self, items: dict[str, Node]) -> str | None:
        """The panel's own models.keyframe, or None for the shot list's."""
        if "models" not in items:
            return None
        own = self.mapping(items["models"], "models", PANEL_MODEL_KEYS)
        return self.model(own["keyframe"], "keyframe") if "keyframe" in own else None

    def check_hold(self, items: dict[str, Node], hold: int, duration: int, transition: str) -> None:
        """The hold fits in the duration, and leaves a frame to tween."""
        if hold > duration:
            given = items["hold"].value
            message = f"{given!r} ({hold} frames) is longer than the duration ({duration} frames)"
            raise self.error(items["hold"], "hold", message)
        if hold == duration > 1 and transition == "tween":
            raise self.error(
                items["hold"],
                "hold",
                f"fills the whole duration ({duration} frames), leaving no frame to tween; "
                "shorten it or use 'transition: cut'",
            )

    def transition(self, node: Node, ends_film: bool) -> str:
        """'tween' or 'cut'; the last panel of a film that does not loop cannot tween."""
        name = self.text(node, "transition")
        if name not in TRANSITIONS:
            close = difflib.get_close_matches(str(name), TRANSITIONS, n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise self.error(node, "transition", f"expected 'tween' or 'cut', got {name!r}{hint}")
        if name == "tween" and ends_film:
            raise self.error(
                node,
                "transition",
                "the last panel has no next panel to tween to; "
                "set 'loop: true' at the top to tween back to panel 1",
            )
        return name
