"""Shared fixtures: a tiny shapes-world dataset built once per test session; the `slow` mark."""

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


@pytest.fixture
def one_thread():
    """Run a test's torch work on one thread (faster for tiny models on a busy machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
