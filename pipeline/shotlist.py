"""The shot list: a YAML file describing a film as panels, the way a storyboard artist does.

Format (every key but ``panels`` is optional; defaults shown)::

    title: Bouncing shapes      # default: the file name without its suffix
    fps: 24                     # frames per second, a positive number
    size: 64                    # square side, or [width, height]; multiples of 8, at least 16
    loop: false                 # true: the last panel tweens back to the first (seamless loop)
    consistency: false          # true: each shot's panels keep the look of its first panel
    noise_share: 0.0            # with consistency: share of the anchor's initial noise, 0..1
    seed: 0                     # a panel without a seed gets seed + its index (0, 1, 2, ...)
    steps: 30                   # sampling steps for generated keyframes, 1..1000
    guidance: 5.0               # classifier-free guidance scale, 0..100
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
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from keyframe.errors import UserError

DEFAULT_FPS = 24
DEFAULT_SIZE = 64
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 5.0
DEFAULT_DURATION_S = 2.0
DEFAULT_MODEL = "shapes"
DEFAULT_INTERPOLATE = "general"  # in-betweens of keys from any other keyframe model
# keyframe models whose keys are the shapes world's (their shot lists tween with `shapes`)
SHAPES_WORLD_MODELS = ("shapes", "shapes-phrasings", "oracle")
MAX_SIZE = 4096
MAX_FPS = 240
MAX_STEPS = 1000
MAX_GUIDANCE = 100.0
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
    steps: int
    guidance: float
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
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 1
        problem = "; ".join(part for part in (err.context, err.problem) if part) or "invalid YAML"
        raise UserError(f"{source_name}:{line}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{source_name}: YAML error: {err}") from None
    return _Parser(source_name, Path(base_dir) if base_dir is not None else Path.cwd()).top(root)


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return repr(node.value)


_SECONDS = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*s(?:ec(?:onds?)?)?", re.IGNORECASE)
_FRAMES = re.compile(r"(\d+)\s*f(?:rames?)?", re.IGNORECASE)


class _Parser:
    """Walks the composed YAML node tree, so every value keeps its line for messages."""

    def __init__(self, source: str, base_dir: Path):
        self.source = source
        self.base_dir = base_dir
        self.panel = 0  # 1-based number of the panel being read; 0 at the top level
        self.constructor = SafeConstructor()

    def error(self, node: Node | None, key: str, message: str) -> UserError:
        line = node.start_mark.line + 1 if node is not None else 1
        where = f"panel {self.panel}: " if self.panel else ""
        field_part = f"{key}: " if key else ""
        return UserError(f"{self.source}:{line}: {where}{field_part}{message}")

    def mapping(self, node: Node, key: str, allowed: tuple[str, ...]) -> dict[str, Node]:
        """A mapping node -> {key: value node}, refusing duplicate and unknown keys."""
        if not isinstance(node, MappingNode):
            example = f"'{allowed[0]}: ...'"
            raise self.error(node, key, f"expected a mapping like {example}, got {_describe(node)}")
        items: dict[str, Node] = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, ScalarNode) else None
            if not isinstance(name, str) or key_node.tag != "tag:yaml.org,2002:str":
                raise self.error(key_node, key, f"expected a key name, got {_describe(key_node)}")
            where = f"{key}: {name}" if key else name
            if name in items:
                raise self.error(key_node, where, "duplicate key")
            if name not in allowed:
                close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'?" if close else f"expected one of {allowed}"
                raise self.error(key_node, where, f"unknown key ({hint})")
            items[name] = value_node
        return items

    def scalar(self, node: Node, key: str, expected: str):
        if not isinstance(node, ScalarNode):
            raise self.error(node, key, f"expected {expected}, got {_describe(node)}")
        try:
            return self.constructor.construct_object(node)
        except ConstructorError:
            raise self.error(node, key, f"expected {expected}, got {node.value!r}") from None

    def text(self, node: Node, key: str) -> str | None:
        """Any scalar as its source text (a prompt may be '1984' or 'yes'); empty/null -> None."""
        self.scalar(node, key, "text")
        if node.tag == "tag:yaml.org,2002:null":
            return None
        return " ".join(node.value.split()) or None

    def integer(self, node: Node, key: str, expected: str, low: int, high: int) -> int:
        value = self.scalar(node, key, expected)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(node, key, f"expected {expected}, got {node.value!r}")
        return value

    def number(
        self, node: Node, key: str, expected: str, low: float, high: float, above_low=False
    ) -> float:
        value = self.scalar(node, key, expected)
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (is_number and math.isfinite(value) and low <= value <= high) or (
            above_low and value == low
        ):
            raise self.error(node, key, f"expected {expected}, got {node.value!r}")
        return value

    def boolean(self, node: Node, key: str) -> bool:
        value = self.scalar(node, key, "true or false")
        if not isinstance(value, bool):
            raise self.error(node, key, f"expected true or false, got {node.value!r}")
        return value

    def frames(self, node: Node, key: str, fps: float, allow_zero: bool) -> int:
        """``48`` / ``"48f"`` frames or ``"2s"`` seconds -> whole frames."""
        smallest = "a non-negative" if allow_zero else "a positive"
        expected = f"{smallest} number of seconds like '2s' or frames like 48"
        value = self.scalar(node, key, expected)
        frames = None
        if isinstance(value, int) and not isinstance(value, bool):
            frames = value
        elif isinstance(value, float):
            hint = f"write '{value:g}s' for seconds"
            raise self.error(node, key, f"expected {expected}, got {node.value!r} ({hint})")
        elif isinstance(value, str):
            if match := _FRAMES.fullmatch(value.strip()):
                frames = int(match.group(1))
            elif match := _SECONDS.fullmatch(value.strip()):
                frames = round(float(match.group(1)) * fps)
                if frames == 0 and float(match.group(1)) > 0 and not allow_zero:
                    raise self.error(node, key, f"{value!r} is less than one frame at {fps} fps")
        if frames is None or frames < (0 if allow_zero else 1):
            raise self.error(node, key, f"expected {expected}, got {node.value!r}")
        return frames

    def size(self, node: Node) -> tuple[int, int]:
        expected = f"a multiple of 8 from 16 to {MAX_SIZE}"
        if isinstance(node, SequenceNode) and len(node.value) == 2:
            sides = node.value
        elif isinstance(node, ScalarNode):
            sides = [node, node]
        else:
            raise self.error(
                node, "size", f"expected one side or [width, height], got {_describe(node)}"
            )
        values = []
        for side in sides:
            value = self.integer(side, "size", expected, 16, MAX_SIZE)
            if value % 8:
                raise self.error(side, "size", f"expected {expected}, got {side.value!r}")
            values.append(value)
        return values[0], values[1]

    def settings(self, items: dict[str, Node], fps: float, defaults: dict) -> dict:
        """The keys a panel may override: seed, steps, guidance, negative, duration."""
        out = dict(defaults)
        if "seed" in items:
            out["seed"] = self.integer(items["seed"], "seed", "a whole number >= 0", 0, MAX_SEED)
        if "steps" in items:
            expected = f"a whole number from 1 to {MAX_STEPS}"
            out["steps"] = self.integer(items["steps"], "steps", expected, 1, MAX_STEPS)
        if "guidance" in items:
            expected = f"a number from 0 to {MAX_GUIDANCE:g}"
            out["guidance"] = self.number(items["guidance"], "guidance", expected, 0, MAX_GUIDANCE)
        if "negative" in items:
            out["negative"] = self.text(items["negative"], "negative") or ""
        if "duration" in items:
            out["duration"] = self.frames(items["duration"], "duration", fps, allow_zero=False)
        return out

    def top(self, root: Node | None) -> ShotList:
        if root is None:
            raise self.error(None, "", "empty shot list; expected a mapping with 'panels:'")
        items = self.mapping(root, "", TOP_KEYS)
        fps = DEFAULT_FPS
        if "fps" in items:
            expected = f"a positive number up to {MAX_FPS}"
            fps = self.number(items["fps"], "fps", expected, 0, MAX_FPS, above_low=True)
            fps = int(fps) if float(fps).is_integer() else fps
        size = self.size(items["size"]) if "size" in items else (DEFAULT_SIZE, DEFAULT_SIZE)
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
        base = {"seed": 0, "steps": DEFAULT_STEPS, "guidance": DEFAULT_GUIDANCE, "negative": ""}
        defaults = self.settings(items, fps, {**base, "duration": round(DEFAULT_DURATION_S * fps)})
        models = {"keyframe": DEFAULT_MODEL}
        if "models" in items:
            for key, node in self.mapping(items["models"], "models", MODEL_KEYS).items():
                models[key] = self.model(node, key)
        if "interpolate" not in models:  # a world's keys go to its own interpolator
            shapes = models["keyframe"] in SHAPES_WORLD_MODELS
            models["interpolate"] = DEFAULT_MODEL if shapes else DEFAULT_INTERPOLATE
        panel_nodes = self.panel_list(root, items)
        if loop and len(panel_nodes) < 2:
            raise self.error(items["loop"], "loop", "needs at least 2 panels to loop, got 1")
        panels = []
        for index, node in enumerate(panel_nodes):
            self.panel = index + 1
            ends_film = index == len(panel_nodes) - 1 and not loop
            panels.append(self.read_panel(node, index, fps, defaults, ends_film))
        self.panel = 0
        title = self.text(items["title"], "title") if "title" in items else None
        total = sum(panel.duration for panel in panels)
        if total > MAX_FRAMES:  # checked before any panel is drawn or frame is made
            raise self.error(
                items["panels"], "duration",
                f"the film is {total} frames, more than {MAX_FRAMES}; split it into several",
            )  # fmt: skip
        return ShotList(
            title=title or Path(self.source).stem or "untitled",
            fps=fps,
            width=size[0],
            height=size[1],
            loop=loop,
            keyframe_model=models["keyframe"],
            interpolate_model=models["interpolate"],
            panels=tuple(panels),
            source=self.source,
            consistency=consistency,
            noise_share=noise_share,
        )

    def panel_list(self, root: Node, items: dict[str, Node]) -> list[Node]:
        if "panels" not in items:
            raise self.error(root, "panels", "missing; a shot list needs a list of panels")
        node = items["panels"]
        if not isinstance(node, SequenceNode):
            raise self.error(node, "panels", f"expected a list of panels, got {_describe(node)}")
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
        model = None
        if "models" in items:
            own = self.mapping(items["models"], "models", PANEL_MODEL_KEYS)
            model = self.model(own["keyframe"], "keyframe") if "keyframe" in own else None
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

    def transition(self, node: Node, ends_film: bool) -> str:
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

    def image(self, node: Node) -> Path:
        name = self.text(node, "image")
        if name is None:
            raise self.error(node, "image", "expected a path to an image file, got nothing")
        path = (self.base_dir / Path(name).expanduser()).resolve()
        if not path.is_file():
            raise self.error(node, "image", f"file not found: {name} (looked for {path})")
        return path
