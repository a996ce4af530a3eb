"""The `animatic bench` report as text: the measurement table, growth with tween length, the
sampler comparison, the profiles, and what bounds each sampling row's MFU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def _cell(row: dict[str, Any], key: str, spec: str, scale: float = 1.0) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    return f"{value:.0%}" if spec == "%" else format(value * scale, spec)


_COLUMNS: tuple[tuple[str, str, Callable[[dict[str, Any]], str]], ...] = (
    ("config", "<7", lambda r: r["config"]),
    ("what", "<42", lambda r: r["what"][:42]),
    ("ms", ">9", lambda r: _cell(r, "time_s", ".1f", 1e3)),
    ("GFLOP", ">8", lambda r: _cell(r, "flops", ".2f", 1e-9)),
    ("GFLOP/s", ">7", lambda r: _cell(r, "gflops", ".1f")),
    ("MFU", ">4", lambda r: _cell(r, "mfu", "%")),
    ("x base", ">6", lambda r: _cell(r, "ratio", ".2f")),
    ("peak MB", ">7", lambda r: _cell(r, "mem_mb", ".0f")),
    ("ms/frame", ">8", lambda r: _cell(r, "per_frame_s", ".1f", 1e3)),
    ("note", "", lambda r: r.get("note", "")),
)


def format_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The measurement rows as aligned text lines, a header first."""
    return [
        " ".join(format(title, spec) for title, spec, _ in _COLUMNS).rstrip(),
        *(" ".join(format(cell(r), spec) for _, spec, cell in _COLUMNS).rstrip() for r in rows),
    ]


def _header_lines(report: dict[str, Any]) -> list[str]:
    """The machine, the peak and what the columns mean."""
    m = report["machine"]
    return [
        f"animatic bench{' --quick' if report['quick'] else ''}: {m['cpu']} "
        f"({m['cpu_capability']}), {m['threads']} threads, torch {m['torch']}, float32",
        f"fp32 matmul peak: {report['peak_gflops']:.1f} GFLOP/s; MFU = model GFLOP/s / peak; "
        "x base = time / the shipped forward's time;",
        "peak MB = peak RSS above the block's start (/proc/self/statm every 2 ms, after gc and "
        "malloc_trim); random weights",
    ]


def _doubling_lines(report: dict[str, Any]) -> list[str]:
    """Per config: how time and peak memory grow as the tween doubles in length."""
    lines = []
    for name, d in report["doubling"].items():
        times = ", ".join(f"x{r:.2f}" for r in d["time_ratios"])
        calls = ", ".join(f"{t:.0f}" for t in d["ms_per_net_call"])
        memory = ", ".join(f"{v:.0f}" for v in d["mem_mb"])
        span = d["lengths"][-1] / d["lengths"][0]
        lines += [
            "",
            f"[{name}] tween length {' -> '.join(map(str, d['lengths']))} frames:",
            f"  time {times} per step: {'linear' if d['time_linear'] else 'NOT linear'} "
            f"(ms per network call: {calls})",
            f"  peak MB {memory}: {'flat' if d['memory_flat'] else 'GROWS'} "
            f"(max/min {d['mem_max_over_min']:.2f} over {span:g}x the length)",
        ]
    return lines


def _sampler_lines(report: dict[str, Any]) -> list[str]:
    """The sampler table and the fewest steps under each error tolerance."""
    lines = [
        "",
        "samplers on an exact Gaussian denoiser (error of the result vs the exact ODE solution,",
        "and of the samples' std and mean, relative to the data std):",
        f"  {'sampler':<9} {'steps':>5} {'NFE':>4} {'ODE err':>8} {'std err':>8} {'mean err':>8}",
    ]
    for r in report["samplers"]:
        lines.append(
            f"  {r['sampler']:<9} {r['steps']:>5} {r['nfe']:>4} {r['ode_error']:>8.4f} "
            f"{r['std_error']:>8.4f} {r['mean_error']:>8.4f}"
        )
    for tolerance, samplers in report["fewest_steps"].items():
        best = ", ".join(f"{k} {v['steps']} ({v['nfe']} NFE)" for k, v in samplers.items())
        lines.append(f"  fewest steps under {float(tolerance):.0%} ODE error: {best or 'none'}")
    return lines


def _profile_lines(report: dict[str, Any]) -> list[str]:
    """Per config and job: time shares per op category and the top ops."""
    lines = []
    for name, profiles in report["profiles"].items():
        for what, p in profiles.items():
            shares = ", ".join(f"{k} {v:.0%}" for k, v in p["categories"].items())
            lines += ["", f"[{name}] profile of {what}, {p['total_ms']:.0f} ms self CPU: {shares}"]
            for op in p["top_ops"]:
                lines.append(
                    f"  {op['op'][:48]:<48} {op['category']:<17} {op['self_ms']:>8.1f} ms "
                    f"{op['share']:>4.0%} {op['calls']:>7} calls"
                )
    return lines


def format_report(report: dict[str, Any]) -> str:
    """The report as text: measurements, growth with tween length, samplers, profiles."""
    lines = [
        *_header_lines(report),
        "",
        *format_table([r for r in report["rows"] if r["section"] != "peak"]),
        *_doubling_lines(report),
        *_sampler_lines(report),
        *_profile_lines(report),
    ]
    notes = bottleneck_notes(report)
    return "\n".join([*lines, "", *notes] if notes else lines)


def bottleneck_notes(report: dict[str, Any]) -> list[str]:
    """For each sampling row: its MFU and, below 50%, what its profile says bounds it."""
    notes = []
    for r in report["rows"]:
        if r["section"] not in ("sample", "tween") or r.get("mfu") is None:
            continue
        head = f"[{r['config']}] {r['what']}: MFU {r['mfu']:.0%}"
        if r["mfu"] >= 0.5:
            notes.append(f"{head} (>= 50%)")
            continue
        key = "keyframe_sample" if r["section"] == "sample" else "tween"
        shares = report["profiles"].get(r["config"], {}).get(key, {}).get("categories", {})
        flop_work = sum(shares.get(k, 0.0) for k in ("conv", "matmul", "attention"))
        notes.append(
            f"{head} (< 50%): {flop_work:.0%} of op time in conv/matmul/attention, the rest in "
            f"norms, copies and elementwise ops (no FLOPs counted); "
            f"{r.get('net_share', 0):.0%} of the wall time inside the network"
        )
    return notes
