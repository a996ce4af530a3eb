"""animatic's pipeline, for notebooks: the same steps as the CLI, as functions.

    from pipeline import storyboard, render, tween
    board = storyboard("film.yaml", "board/", keyframe_model="oracle")
    render("film.yaml", "film.mp4", storyboard_dir="board/", tween_model="flow")

These names are the functions (``pipeline.storyboard`` is the function, not its module: import
helpers from the modules with ``from pipeline.storyboard import ...``). ``tween`` is imported on
first use, so the package imports even where that module is missing.
"""

from __future__ import annotations

import importlib

from pipeline.render import render
from pipeline.storyboard import storyboard

__all__ = ["render", "storyboard", "tween"]


def __getattr__(name: str):
    if name == "tween":
        module = importlib.import_module("pipeline.tween")  # binds the module to this name
        function = getattr(module, "tween", None)
        if not callable(function):
            globals().pop("tween", None)
            raise ImportError("pipeline.tween has no tween() function in this build")
        globals()["tween"] = function
        return function
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
