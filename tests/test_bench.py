"""`animatic bench`: the measurements it is built from, and a short run on the tiny configs."""

from __future__ import annotations

import json
import time

import pytest
import torch
import torch.nn.functional as F

from pipeline.bench_measure import PeakRSS, attention_variant, count_flops
from pipeline.bench_profile import op_category
from pipeline.bench_samplers import QUALITY_SAMPLERS, QUALITY_STEPS, fewest_steps, sampler_quality
from pipeline.bench_stages import doubling_verdict
from pipeline.cli import COMMANDS, main

TINY_RUN = ["--quick", "--configs", "tiny", "--threads", "1", "--images", "1", "--steps", "1"]
LENGTHS = (6, 12)  # the tiny window holds 8 frames: one window, then several


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    """One `bench --quick` run on the tiny configs: its JSON report and printed text."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("bench") / "bench.json"
    text = io.StringIO()
    lengths = ",".join(map(str, LENGTHS))
    with contextlib.redirect_stdout(text):
        code = main(["bench", *TINY_RUN, "--tween-lengths", lengths, "--out", str(out)])
    assert code == 0
    return json.loads(out.read_text()), text.getvalue()


def test_bench_is_a_command():
    assert COMMANDS["bench"][0] == "pipeline.bench"


@pytest.mark.slow
def test_quick_run_has_every_row_with_flops_and_times(tiny_report):
    report, _ = tiny_report
    rows = report["rows"]
    assert report["peak_gflops"] > 0
    assert report["machine"]["threads"] == 1
    by_section = {}
    for row in rows:
        by_section.setdefault(row["section"], []).append(row)
    assert set(by_section) == {"peak", "forward", "sample", "tween", "train"}
    forwards = [r["what"].strip() for r in by_section["forward"]]
    assert forwards == [
        "keyframe U-Net forward: batch 2 (cfg)",
        "textbook attention",
        "math attention",
        "channels_last",
        "tween U-Net forward: 1 x 8 frames",
        "textbook attention",
        "math attention",
        "channels_last",
    ]
    timed = by_section["forward"] + by_section["sample"] + by_section["train"]
    for row in timed:
        assert row["config"] == "tiny"
        assert row["time_s"] > 0 and row["flops"] > 0, row["what"]
        assert row["gflops"] == pytest.approx(row["flops"] / row["time_s"] / 1e9)
        assert row["mfu"] == pytest.approx(row["gflops"] / report["peak_gflops"])
    for row in by_section["forward"]:
        if row["what"].startswith("  "):  # a variant of the same network: same FLOPs
            assert row["ratio"] > 0
    assert [r["what"] for r in by_section["train"]] == [
        "keyframe train step: batch 8",
        "interpolate train step: batch 2",
    ]


def test_sampling_rows_check_guidance_batching_and_per_frame_time(tiny_report):
    report, _ = tiny_report
    (sample,) = [r for r in report["rows"] if r["section"] == "sample"]
    assert sample["net_calls"] == 1  # --steps 1 with dpmpp_2m: one network call per step
    assert sample["net_batch"] == [2]  # one image: cond and uncond as one batch of 2
    assert sample["cfg_one_batch"] is True
    assert sample["per_frame_s"] == pytest.approx(sample["time_s"])
    assert 0 < sample["net_share"] <= 1


def test_tween_rows_for_each_length_and_the_growth_verdict(tiny_report):
    report, text = tiny_report
    tweens = [r for r in report["rows"] if r["section"] == "tween"]
    assert [r["frames"] for r in tweens] == list(LENGTHS)
    assert tweens[0]["flops"] > 0 and tweens[0]["mfu"] > 0
    assert tweens[0]["windows"] == 1 and tweens[1]["windows"] > 1
    for row in tweens:
        assert row["time_s"] > 0 and row["mem_mb"] >= 0
        assert row["per_frame_s"] == pytest.approx(row["time_s"] / row["frames"])
        assert row["net_calls"] == row["windows"]  # one step per window
    growth = report["doubling"]["tiny"]
    assert growth["lengths"] == list(LENGTHS)
    assert growth["time_ratios"][0] == pytest.approx(tweens[1]["time_s"] / tweens[0]["time_s"])
    assert isinstance(growth["time_linear"], bool) and isinstance(growth["memory_flat"], bool)
    assert "[tiny] tween length 6 -> 12 frames" in text


def test_report_has_samplers_profiles_method_and_a_table(tiny_report):
    report, text = tiny_report
    assert len(report["samplers"]) == len(QUALITY_SAMPLERS) * len(QUALITY_STEPS)
    for name in ("keyframe_sample", "tween"):
        profile = report["profiles"]["tiny"][name]
        assert sum(profile["categories"].values()) == pytest.approx(1.0)
        assert profile["top_ops"] and profile["top_ops"][0]["self_ms"] > 0
    assert set(report["method"]) >= {"flops", "mfu", "memory", "time", "sampler_quality"}
    assert report["provenance"]["argv"]
    header = next(line for line in text.splitlines() if line.startswith("config"))
    assert header.split()[:4] == ["config", "what", "ms", "GFLOP"]
    assert "fp32 matmul peak" in text and "MFU" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["--threads", "0"],
        ["--images", "-1"],
        ["--steps", "x"],
        ["--tween-lengths", "16,8"],
        ["--tween-lengths", "2,4"],
        ["--tween-lengths", ""],
        ["--configs", " , "],
        ["--no-such-option"],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    assert main(["bench", *argv]) == 2
    assert "animatic bench: error" in capsys.readouterr().err


def test_unknown_config_and_existing_out_are_one_line_errors(tmp_path, capsys):
    assert main(["bench", "--quick", "--configs", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no keyframe config 'nope'" in err and "tiny" in err and len(err.splitlines()) == 1
    out = tmp_path / "bench.json"
    out.write_text("{}")
    assert main(["bench", "--quick", "--configs", "tiny", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_text() == "{}"


def test_flop_count_of_a_linear_layer_and_of_cpu_attention():
    layer = torch.nn.Linear(32, 16)
    flops, out = count_flops(lambda: layer(torch.randn(5, 32)))
    assert flops == 2 * 5 * 32 * 16 and out.shape == (5, 16)
    q = torch.randn(2, 4, 64, 8)
    bias = torch.randn(1, 4, 64, 64)
    fused, _ = count_flops(lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=bias))
    with attention_variant("math"):
        math, _ = count_flops(lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=bias))
    assert fused == math == 4 * 2 * 4 * 64 * 64 * 8  # QK^T and AV: 2 FLOPs per multiply-add


@pytest.mark.parametrize("kind", ["sdpa", "math", "textbook"])
def test_attention_variants_compute_the_same_attention(kind):
    from keyframe.layers import Attention

    torch.manual_seed(0)
    attn = Attention(16, 2, 8, context_dim=12)
    x, context = torch.randn(3, 10, 16), torch.randn(3, 7, 12)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    reference = attn(x, context, mask)
    with attention_variant(kind):
        assert torch.allclose(attn(x, context, mask), reference, atol=1e-5)


def test_peak_rss_sees_a_held_allocation():
    with PeakRSS() as memory:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, written so its pages are resident
        time.sleep(0.05)
        del block
    assert 48 * 2**20 < memory.peak < 256 * 2**20


def test_sampler_quality_improves_with_steps():
    rows = sampler_quality(("euler", "heun", "dpmpp_2m"), (5, 20, 50), n=512)
    table = {(r["sampler"], r["steps"]): r for r in rows}
    assert table["heun", 20]["nfe"] == 39 and table["dpmpp_2m", 20]["nfe"] == 20
    for name in ("euler", "dpmpp_2m"):
        errors = [table[name, s]["ode_error"] for s in (5, 20, 50)]
        assert errors == sorted(errors, reverse=True)
    assert table["dpmpp_2m", 50]["ode_error"] < 0.02 < table["euler", 50]["ode_error"]
    best = fewest_steps(rows, 0.02)
    assert best["dpmpp_2m"] == {"steps": 50, "nfe": 50} and "euler" not in best


def test_growth_verdict_tells_linear_from_quadratic_and_flat_from_growing():
    def rows(times, memory):
        return [
            {"frames": n, "time_s": t, "per_frame_s": t / n, "mem_mb": m, "net_calls": n}
            for n, t, m in zip((16, 32, 64), times, memory, strict=True)
        ]

    linear = doubling_verdict(rows((1.0, 2.1, 4.0), (100, 120, 110)))
    assert linear["time_linear"] and linear["memory_flat"]
    assert linear["time_ratios"] == pytest.approx([2.1, 4.0 / 2.1])
    quadratic = doubling_verdict(rows((1.0, 4.0, 16.0), (100, 200, 400)))
    assert not quadratic["time_linear"] and not quadratic["memory_flat"]


def test_op_categories():
    assert op_category("aten::mkldnn_convolution") == "conv"
    assert op_category("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert op_category("aten::addmm") == "matmul"
    assert op_category("aten::native_group_norm") == "norm"
    assert op_category("aten::copy_") == "copy/layout"
    assert op_category("aten::silu") == "elementwise/other"


@pytest.mark.slow
def test_pipeline_bench_times_the_user_jobs_with_given_models(tmp_path, capsys):
    from interpolate.module import InterpolateModule
    from keyframe.module import KeyframeModule
    from keyframe.pretrained import save_pretrained

    torch.manual_seed(0)
    keyframe = KeyframeModule(
        image_size=16, model_channels=8, channel_mult=[1, 2], num_res_blocks=1,
        attention_levels=[1], num_heads=2, text_width=32, text_layers=1, text_heads=2,
        text_context_length=32, text_vocab_size=512, sample_steps=1,
    )  # fmt: skip
    tween = InterpolateModule(
        image_size=16, num_frames=8, model_channels=8, channel_mult=[1, 2], num_res_blocks=1,
        attention_levels=[1], num_heads=2, temporal_heads=2, ema_decay=0.0, sample_steps=1,
    )  # fmt: skip
    save_pretrained(keyframe, tmp_path / "kf")
    tween.save_pretrained(tmp_path / "tw")
    out = tmp_path / "pipeline.json"
    argv = ["bench", "--pipeline", "--keyframe-model", str(tmp_path / "kf"), "--tween-model"]
    assert main([*argv, str(tmp_path / "tw"), "--repeats", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["pipeline"]
    assert [r["what"].split(",")[0].split(":")[0] for r in rows] == [
        "storyboard", "tween", "README main job"
    ]  # fmt: skip
    assert all(r["median_s"] > 0 and len(r["runs_s"]) == 1 for r in rows)
    # A job that fails names the command and its error.
    assert main([*argv, str(tmp_path / "missing"), "--repeats", "1"]) == 2
    err = capsys.readouterr().err
    assert "animatic tween" in err and "missing" in err
