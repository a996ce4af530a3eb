"""Training masks: which frames of a window are known (keys, context) and which are generated.

One model serves every way people use keys, because training draws from a mixture of the
mask kinds they need:

- ``ends``: keys at both ends of the window (classic in-betweening);
- ``uneven``: two keys anywhere, so frames before the first or after the last are predicted too;
- ``multi``: three or more keys at random positions (several poses in one window);
- ``single``: one key (extension forwards or backwards, prediction);
- ``context``: a run of known frames then a key at the end, as long sequences are sampled window by
  window (the previous window's last frames lead into the next gap);
- ``loop``: the clip is played forwards then backwards, so its first and last frames are the same
  picture, and both are keys (a looping cycle).

`draw_mask` returns the known-frame mask and the order in which to read the clip's frames (the
identity except for ``loop``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from keyframe.errors import UserError

MASK_KINDS = ("ends", "uneven", "multi", "single", "context", "loop")
DEFAULT_MASK_WEIGHTS: dict[str, float] = {
    "ends": 0.3,
    "uneven": 0.15,
    "multi": 0.15,
    "single": 0.1,
    "context": 0.2,
    "loop": 0.1,
}


def check_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """Mixture weights for every kind (missing kinds get 0; None gives the defaults)."""
    if weights is None:
        return dict(DEFAULT_MASK_WEIGHTS)
    unknown = sorted(set(weights) - set(MASK_KINDS))
    if unknown:
        raise UserError(f"mask_weights: unknown kind {unknown[0]!r}; expected {MASK_KINDS}")
    out = {kind: float(weights.get(kind, 0.0)) for kind in MASK_KINDS}
    if any(w < 0 for w in out.values()) or sum(out.values()) <= 0:
        raise UserError(f"mask_weights: expected weights >= 0 with a positive sum, got {out}")
    return out


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high]."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _positions(num_frames: int, count: int, generator: torch.Generator | None) -> list[int]:
    return sorted(torch.randperm(num_frames, generator=generator)[:count].tolist())


def ping_pong(num_frames: int) -> torch.Tensor:
    """Frame order that plays a clip forwards then back to the start, `num_frames` long:
    0, 1, ..., 1, 0 (an even length holds the turning frame twice)."""
    idx = torch.arange(num_frames)
    return torch.minimum(idx, num_frames - 1 - idx)


def draw_mask(
    num_frames: int,
    generator: torch.Generator | None = None,
    weights: Mapping[str, float] | None = None,
    kind: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training mask: (known (f,) bool, frame order (f,) long).

    The kind is drawn from `weights` (see DEFAULT_MASK_WEIGHTS) unless given. Windows of fewer
    than 3 frames only get a single key (no frame is left to generate between two).
    """
    if num_frames < 2:
        raise ValueError(f"a training window needs at least 2 frames, got {num_frames}")
    if kind is None:
        table = check_weights(weights)
        probs = torch.tensor([table[k] for k in MASK_KINDS])
        kind = MASK_KINDS[int(torch.multinomial(probs, 1, generator=generator))]
    elif kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}")
    f = num_frames
    if f < 3:
        kind = "single"
    order = torch.arange(f)
    known = torch.zeros(f, dtype=torch.bool)
    if kind == "ends":
        known[[0, f - 1]] = True
    elif kind == "uneven":
        known[_positions(f, 2, generator)] = True
    elif kind == "multi":
        count = _randint(3, max(3, f // 2), generator) if f >= 4 else 2
        known[_positions(f, count, generator)] = True
    elif kind == "single":
        # Half the time the key starts the window (prediction), else it is anywhere.
        first = bool(torch.rand((), generator=generator) < 0.5)
        known[0 if first else _randint(0, f - 1, generator)] = True
    elif kind == "context":
        known[: _randint(2, f - 2, generator) if f > 3 else 1] = True
        known[f - 1] = True
    else:  # loop
        order = ping_pong(f)
        known[[0, f - 1]] = True
    if known.all():  # tiny windows: always leave something to learn
        known[_randint(1, f - 2, generator) if f > 2 else f - 1] = False
    return known, order
