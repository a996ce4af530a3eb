"""Where sampling spends its time (`animatic bench`): torch.profiler self CPU time per op,
grouped into conv, matmul, attention, norm, copies and elementwise work.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_CATEGORIES = (  # substrings of aten op names, first match wins
    ("attention", "scaled_dot_product flash_attention softmax".split()),
    ("conv", ["conv"]),
    ("matmul", "addmm ::mm bmm matmul linear".split()),
    ("norm", "group_norm layer_norm".split()),
    ("copy/layout", "copy_ ::cat clone contiguous ::to _to_copy ::stack pad gather index".split()),
)


def op_category(name: str) -> str:
    """Which kind of work an aten op is: attention, conv, matmul, norm, copy/layout, elementwise."""
    for category, patterns in _CATEGORIES:
        if any(p in name for p in patterns):
            return category
    return "elementwise/other"


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler library's C++ start/stop lines on file descriptor 2."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_ops(fn: Callable[[], Any], top: int = 10) -> dict[str, Any]:
    """Self CPU time of fn() per op (torch.profiler), grouped into categories, and the top ops."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1
    categories: dict[str, float] = {}
    for e in events:
        key = op_category(e.key)
        categories[key] = categories.get(key, 0.0) + e.self_cpu_time_total / total
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {
        "total_ms": total / 1000,
        "categories": dict(sorted(categories.items(), key=lambda kv: -kv[1])),
        "top_ops": [
            {
                "op": e.key,
                "category": op_category(e.key),
                "self_ms": e.self_cpu_time_total / 1000,
                "share": e.self_cpu_time_total / total,
                "calls": e.count,
            }
            for e in ranked
        ],
    }
