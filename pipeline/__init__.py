"""animatic's pipeline, for notebooks: the same steps as the CLI, as functions.

    from pipeline import storyboard, render, tween
    board = storyboard("film.yaml", "board/", keyframe_model="oracle")
    render("film.yaml", "film.mp4", storyboard_dir="board/", tween_model="flow")
    frames = tween(["shot_0101.png", "shot_0113.png"], "out/shot_####.png", model="flow").frames

These names are the functions (``pipeline.storyboard`` is the function, not its module: import
helpers from the modules with ``from pipeline.storyboard import ...``). ``tween`` returns the
frames too (``tween(keys).frames``), as float32 arrays at the keys' depth (pipeline.media).
"""

from __future__ import annotations

from pipeline.render import render
from pipeline.storyboard import storyboard
from pipeline.tween import tween

__all__ = ["render", "storyboard", "tween"]
