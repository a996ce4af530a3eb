"""The measuring tools of `animatic bench`: the machine, FLOPs, wall-clock timings, the matmul peak,
peak resident memory, the network's calls, and attention swapped for a baseline implementation.

Memory is read from /proc/self/statm by a sampling thread, after gc and malloc_trim, because
tracemalloc cannot see torch's allocations (see PeakRSS).
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import resource
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

MB = 2**20


def _flash_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _flash_cpu_backward_flops(grad, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad, query, key, value)


# FlopCounterMode knows the GPU attention kernels only; SDPA on a CPU runs this one.
_CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _flash_cpu_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _flash_cpu_backward_flops,
}


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """FLOPs of running fn() (2 per multiply-add; conv, matmul and attention ops) and its
    result. The ops really run, so this doubles as a warm-up."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION_FLOPS) as counter:
        result = fn()
    return counter.get_total_flops(), result


def timings(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of `repeats` calls of fn() after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def matmul_peak(size: int, repeats: int = 10) -> float:
    """The machine's fp32 matmul rate in GFLOP/s: the best of `repeats` size x size products."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    best = min(timings(lambda: torch.mm(a, b, out=out), repeats, warmup=3))
    return 2 * size**3 / best / 1e9


def describe_machine(threads: int) -> dict[str, Any]:
    """The CPU, torch and thread counts the measurements ran with."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "dtype": "float32",
    }


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int | None:
    """Resident set size in bytes (Linux), else None."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so RSS is live memory."""
    gc.collect()
    with suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL(None).malloc_trim(0)


class PeakRSS:
    """Peak resident memory above its level at entry, in bytes (`.peak`), while the block runs.

    A thread samples /proc/self/statm every `interval` s (torch ops release the GIL, so it runs
    during them). Without /proc: getrusage's lifetime maximum rss growth, a lower bound.
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRSS:
        _release_free_memory()
        self._start = _rss()
        if self._start is None:
            self._start_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return self
        self._high = self._start
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self._high = max(self._high, _rss() or 0)

    def __exit__(self, *exc: Any) -> None:
        if self._thread is None:
            unit = 1 if platform.system() == "Darwin" else 1024  # bytes on macOS, KiB on Linux
            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._start_max
            self.peak = grown * unit
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self._high, _rss() or 0) - self._start


@contextmanager
def net_calls(net: nn.Module) -> Iterator[dict[str, Any]]:
    """Record the batch size of every call of `net` and the seconds spent inside it."""
    record: dict[str, Any] = {"batches": [], "seconds": 0.0}
    started: list[float] = []

    def before(module, args, kwargs):
        record["batches"].append(int(args[0].shape[0]))
        started.append(time.perf_counter())

    def after(module, args, kwargs, output):
        record["seconds"] += time.perf_counter() - started.pop()

    handles = [
        net.register_forward_pre_hook(before, with_kwargs=True),
        net.register_forward_hook(after, with_kwargs=True),
    ]
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


class _TextbookAttention:
    """torch.nn.functional with scaled_dot_product_attention written out: the score matrix
    materialised, softmax, matmul (the straightforward implementation of the baseline)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(F, name)

    @staticmethod
    def scaled_dot_product_attention(q, k, v, attn_mask=None, scale=None) -> torch.Tensor:
        scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5 if scale is None else scale)
        if attn_mask is not None:
            scores = scores + attn_mask
        return scores.softmax(dim=-1) @ v


@contextmanager
def attention_variant(kind: str) -> Iterator[None]:
    """'sdpa' (as shipped: fused kernel), 'math' (SDPA's unfused math kernel) or 'textbook'."""
    import keyframe.layers

    if kind == "sdpa":
        yield
    elif kind == "math":
        with sdpa_kernel(SDPBackend.MATH):
            yield
    elif kind == "textbook":
        with mock.patch.object(keyframe.layers, "F", _TextbookAttention()):
            yield
    else:
        raise ValueError(f"unknown attention variant {kind!r}")
