"""Shared fixtures: a tiny shapes-world dataset built once per test session, one torch thread
for a test or a whole module, tiny random interpolation models; the `slow` mark."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main

TINY_LAYERS = ["--clips", "3", "--size", "48", "--frames", "9", "--seed", "7"]
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


def make_pictures(root: Path, count: int = 3, seed: int = 0) -> list[str]:
    """Folders of test pictures: textured opaque backgrounds (PNG and JPG) and RGBA sprites."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    photos, art = root / "photos", root / "art"
    photos.mkdir(parents=True)
    art.mkdir(parents=True)
    for i in range(count):
        noise = rng.random((12, 12, 3)) * 255
        texture = cv2.resize(noise.astype(np.uint8), (96, 80), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(photos / f"p{i}.png"), texture)
        cv2.imwrite(str(photos / f"q{i}.jpg"), texture[::-1])
        sprite = np.zeros((48, 48, 4), np.uint8)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.circle(sprite, (24, 24), 18, (*colour, 255), -1)
        cv2.rectangle(sprite, (18, 18), (30, 30), (20, 20, 20, 255), -1)
        cv2.imwrite(str(art / f"s{i}.png"), sprite)
    return [str(photos), str(art)]


@pytest.fixture(scope="session")
def tiny_layers(tmp_path_factory) -> Path:
    """`animatic dataset layers` output from test pictures: 3 clips of 9 frames at 48 px."""
    root = tmp_path_factory.mktemp("tiny-layers")
    pictures = make_pictures(root / "pictures")
    out = root / "layers"
    assert main(["dataset", "layers", "--out", str(out), *TINY_LAYERS, "--images", *pictures]) == 0
    return out
