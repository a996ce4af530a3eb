"""Shared fixtures: a tiny shapes-world dataset built once per test session, one torch thread
for a test or a whole module, tiny random interpolation models; the `slow` mark."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main

TINY_SHAPES = ["--clips", "4", "--stills", "24", "--size", "32", "--frames", "12", "--seed", "7"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: the longer tests (training to a result, multi-process); -m 'not slow'"
    )


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory) -> Path:
    """`animatic dataset shapes` output at 32 px: 24 captioned stills and 4 clips of 12 frames."""
    out = tmp_path_factory.mktemp("tiny-shapes") / "shapes"
    assert main(["dataset", "shapes", "--out", str(out), *TINY_SHAPES]) == 0
    return out


def _torch_on_one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Run a test's torch work on one thread (faster for tiny models on a busy machine)."""
    yield from _torch_on_one_thread()


@pytest.fixture(scope="module")
def one_thread_module():
    """`one_thread` for a whole module (`pytestmark = pytest.mark.usefixtures(...)`), so its
    module-scoped models are built on one thread too."""
    yield from _torch_on_one_thread()


@pytest.fixture(scope="session")
def tiny_interpolate():
    """Build `InterpolateModule(**hparams)` (seed 0) with random weights in its zero-initialised
    denoiser layers, so every part of it (spatial, temporal, fps) affects the result."""
    import torch

    from interpolate.module import InterpolateModule

    def build(**hparams) -> InterpolateModule:
        torch.manual_seed(0)
        model = InterpolateModule(**hparams)
        with torch.no_grad():
            for p in model.denoiser.parameters():
                if not p.any():
                    p.normal_(0, 0.1)
        return model

    return build
