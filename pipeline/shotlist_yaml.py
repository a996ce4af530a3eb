"""Reading the shot list's YAML value by value, keeping each value's line for error messages.

The shot list (pipeline.shotlist) is composed to a node tree rather than loaded to plain Python,
so every error can name the line, the panel and the field; this module holds the readers that do
not depend on what a shot list holds: mappings, text, numbers in ranges, durations.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from keyframe.errors import UserError

_SECONDS = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*s(?:ec(?:onds?)?)?", re.IGNORECASE)
_FRAMES = re.compile(r"(\d+)\s*f(?:rames?)?", re.IGNORECASE)


def compose(text: str, source_name: str) -> Node | None:
    """The YAML node tree of `text` (None when empty); syntax errors name their line."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 1
        problem = "; ".join(part for part in (err.context, err.problem) if part) or "invalid YAML"
        raise UserError(f"{source_name}:{line}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{source_name}: YAML error: {err}") from None


def describe(node: Node) -> str:
    """What a node is, for 'expected X, got Y' messages."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return repr(node.value)


class NodeReader:
    """Reads values from composed YAML nodes; every error is 'source:line: panel N: key: ...'."""

    def __init__(self, source: str, base_dir: Path):
        self.source = source
        self.base_dir = base_dir  # image paths (and model paths) are relative to it
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
            raise self.error(node, key, f"expected a mapping like {example}, got {describe(node)}")
        items: dict[str, Node] = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, ScalarNode) else None
            if not isinstance(name, str) or key_node.tag != "tag:yaml.org,2002:str":
                raise self.error(key_node, key, f"expected a key name, got {describe(key_node)}")
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
        """A scalar node's value as YAML reads it (int, float, bool, str, None)."""
        if not isinstance(node, ScalarNode):
            raise self.error(node, key, f"expected {expected}, got {describe(node)}")
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
        """A whole number in low..high (not a bool)."""
        value = self.scalar(node, key, expected)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(node, key, f"expected {expected}, got {node.value!r}")
        return value

    def number(
        self, node: Node, key: str, expected: str, low: float, high: float, above_low=False
    ) -> float:
        """A finite number in low..high (above low only, with `above_low`)."""
        value = self.scalar(node, key, expected)
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (is_number and math.isfinite(value) and low <= value <= high) or (
            above_low and value == low
        ):
            raise self.error(node, key, f"expected {expected}, got {node.value!r}")
        return value

    def boolean(self, node: Node, key: str) -> bool:
        """true or false."""
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

    def size(self, node: Node, largest: int) -> tuple[int, int]:
        """One side or [width, height]: multiples of 8 from 16 to `largest`."""
        expected = f"a multiple of 8 from 16 to {largest}"
        if isinstance(node, SequenceNode) and len(node.value) == 2:
            sides = node.value
        elif isinstance(node, ScalarNode):
            sides = [node, node]
        else:
            raise self.error(
                node, "size", f"expected one side or [width, height], got {describe(node)}"
            )
        values = []
        for side in sides:
            value = self.integer(side, "size", expected, 16, largest)
            if value % 8:
                raise self.error(side, "size", f"expected {expected}, got {side.value!r}")
            values.append(value)
        return values[0], values[1]

    def image(self, node: Node) -> Path:
        """An existing image file; a relative path is relative to the YAML file."""
        name = self.text(node, "image")
        if name is None:
            raise self.error(node, "image", "expected a path to an image file, got nothing")
        path = (self.base_dir / Path(name).expanduser()).resolve()
        if not path.is_file():
            raise self.error(node, "image", f"file not found: {name} (looked for {path})")
        return path
