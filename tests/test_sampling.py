"""Samplers against an exact Gaussian denoiser, determinism, callbacks, and guidance."""

import pytest
import torch

from keyframe.diffusion import karras_sigmas
from keyframe.errors import UserError
from keyframe.sampling import (
    SAMPLERS,
    cfg_denoiser,
    randn,
    sample,
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
)

MU = torch.tensor([1.0, -0.5, 0.3, 0.0])
STD = torch.tensor([0.5, 0.2, 1.0, 0.05])


def gaussian_denoise(x, sigma):
    """Exact posterior mean E[x0 | x] for data x0 ~ N(MU, STD^2) per dimension."""
    s2 = STD**2
    return MU + s2 / (s2 + sigma[:, None] ** 2) * (x - MU)


# Steps that put each sampler's discretisation error well inside 5% on this problem.
CASES = [
    ("euler", 200, {}),
    ("euler", 200, {"s_churn": 10.0}),
    ("euler_ancestral", 300, {}),
    ("euler_ancestral", 300, {"eta": 0.5}),
    ("heun", 40, {}),
    ("heun", 40, {"s_churn": 5.0}),
    ("dpmpp_2m", 30, {}),
]


@pytest.mark.parametrize(("name", "steps", "options"), CASES)
def test_samplers_reproduce_the_gaussian_data(name, steps, options):
    g = torch.Generator().manual_seed(0)
    out = sample(gaussian_denoise, (8192, 4), steps, sampler=name, generator=g, **options)
    assert ((out.mean(0) - MU) / STD).abs().max() < 0.05
    assert (out.std(0) / STD - 1).abs().max() < 0.05


def test_higher_order_samplers_beat_euler_at_equal_steps():
    def std_error(name):
        g = torch.Generator().manual_seed(0)
        out = sample(gaussian_denoise, (4096, 4), 12, sampler=name, generator=g)
        return (out.std(0) / STD - 1).abs().max()

    assert std_error("dpmpp_2m") < std_error("euler") / 2
    assert std_error("heun") < std_error("euler")


@pytest.mark.parametrize(
    ("name", "options"),
    [("euler", {"s_churn": 20.0}), ("heun", {"s_churn": 20.0}), ("euler_ancestral", {})],
)
def test_stochastic_samplers_are_deterministic_for_a_seed(name, options):
    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return sample(gaussian_denoise, (16, 4), 8, sampler=name, generator=g, **options)

    assert torch.equal(run(1), run(1))
    assert not torch.allclose(run(1), run(2))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_callback_runs_once_per_step_with_the_schedule(name):
    seen = []
    steps = 6
    g = torch.Generator().manual_seed(0)
    sample(gaussian_denoise, (3, 4), steps, sampler=name, generator=g, callback=seen.append)
    sigmas = karras_sigmas(steps).tolist()
    assert [info["i"] for info in seen] == list(range(steps))
    assert [info["sigma"] for info in seen] == pytest.approx(sigmas[:-1])
    assert all(info["steps"] == steps for info in seen)
    assert all(info["x"].shape == info["denoised"].shape == (3, 4) for info in seen)


def test_network_evaluations_per_sampler():
    def count(fn):
        calls = []

        def denoise(x, sigma):
            calls.append(sigma.shape)
            return gaussian_denoise(x, sigma)

        sigmas = karras_sigmas(5)
        fn(denoise, torch.randn(2, 4) * sigmas[0], sigmas)
        assert all(shape == (2,) for shape in calls)
        return len(calls)

    assert count(sample_euler) == count(sample_dpmpp_2m) == count(sample_euler_ancestral) == 5
    assert count(sample_heun) == 2 * 5 - 1


def test_deterministic_samplers_ignore_the_generator():
    sigmas = karras_sigmas(6)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    a = sample_dpmpp_2m(gaussian_denoise, x, sigmas, generator=torch.Generator().manual_seed(1))
    b = sample_dpmpp_2m(gaussian_denoise, x, sigmas)
    assert torch.equal(a, b)
    c = sample_euler_ancestral(gaussian_denoise, x, sigmas, eta=0.0)
    assert torch.allclose(c, sample_euler(gaussian_denoise, x, sigmas))


def test_sample_draws_sigma_max_noise_and_accepts_given_noise():
    noise = randn((5, 4), torch.Generator().manual_seed(7))
    from_shape = sample(
        gaussian_denoise, (5, 4), 4, sampler="euler", generator=torch.Generator().manual_seed(7)
    )
    from_noise = sample(gaussian_denoise, noise, 4, sampler="euler")
    assert torch.equal(from_shape, from_noise)
    first = []
    sample(gaussian_denoise, noise, 4, sigma_max=20.0, callback=first.append)
    assert torch.allclose(first[0]["x"], noise * 20.0)
    with pytest.raises(UserError, match="sampler"):
        sample(gaussian_denoise, (2, 4), 4, sampler="ddim")


def test_init_starts_from_init_plus_noise_and_a_low_sigma_keeps_it():
    noise = randn((6, 4), torch.Generator().manual_seed(3))
    init = torch.tensor([[2.0, -1.0, 0.5, 0.1]]).repeat(6, 1)
    first = []
    out = sample(gaussian_denoise, noise, 6, sigma_max=0.05, init=init, callback=first.append)
    assert torch.allclose(first[0]["x"], init + noise * 0.05)
    assert (out - init).abs().max() < 0.1  # refined, not redrawn: far from the data mean MU
    redrawn = sample(gaussian_denoise, noise, 6, sigma_max=80.0, init=init)
    assert ((redrawn - MU) / STD).abs().max() < 4 and (redrawn - init).abs().max() > 0.5
    with pytest.raises(ValueError, match="init has shape"):
        sample(gaussian_denoise, noise, 6, init=init[:2])


def test_one_generator_per_sample_makes_samples_independent_of_the_batch():
    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    pair = sample(gaussian_denoise, (2, 4), 6, sampler="euler_ancestral", generator=gens(3, 4))
    alone = sample(gaussian_denoise, (1, 4), 6, sampler="euler_ancestral", generator=gens(4))
    assert torch.allclose(pair[1:], alone)
    with pytest.raises(ValueError):
        randn((3, 4), gens(1, 2))


class TwoWay:
    """A conditional denoiser: shifts the posterior mean by a per-sample text vector."""

    def __init__(self):
        self.batches = []

    def __call__(self, x, sigma, text, prompts):
        self.batches.append((x.shape[0], list(prompts)))
        shift = text.reshape(text.shape[0], *([1] * (x.ndim - 1)))
        return 0.5 * x / (1 + sigma.reshape(shift.shape) ** 2) + shift


def _cond_uncond(b):
    cond = {"text": torch.arange(1.0, b + 1), "prompts": [f"p{i}" for i in range(b)]}
    uncond = {"text": torch.zeros(b), "prompts": [""] * b}
    return cond, uncond


def test_guidance_scale_one_and_zero_are_the_plain_denoisers():
    x, sigma = torch.randn(3, 2, 5, 4, 4), torch.tensor([0.5, 1.0, 2.0])
    cond, uncond = _cond_uncond(3)
    net = TwoWay()
    assert torch.allclose(cfg_denoiser(net, cond, uncond, 1.0)(x, sigma), net(x, sigma, **cond))
    assert torch.allclose(cfg_denoiser(net, cond, uncond, 0.0)(x, sigma), net(x, sigma, **uncond))
    ones = torch.ones(3)
    assert torch.allclose(cfg_denoiser(net, cond, uncond, ones)(x, sigma), net(x, sigma, **cond))


def test_guidance_runs_one_double_batch_and_extrapolates():
    x, sigma = torch.randn(3, 2, 5, 4, 4), torch.tensor([0.5, 1.0, 2.0])
    cond, uncond = _cond_uncond(3)
    net = TwoWay()
    guided = cfg_denoiser(net, cond, uncond, 3.0)(x, sigma)
    assert net.batches == [(6, ["", "", "", "p0", "p1", "p2"])]
    c, u = net(x, sigma, **cond), net(x, sigma, **uncond)
    assert torch.allclose(guided, u + 3.0 * (c - u))


def test_guidance_scale_per_sample_and_per_frame():
    x, sigma = torch.randn(2, 2, 4, 3, 3), torch.tensor([0.5, 1.0])
    cond, uncond = _cond_uncond(2)
    net = TwoWay()
    c, u = net(x, sigma, **cond), net(x, sigma, **uncond)
    per_frame = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 4, 1, 1)
    out = cfg_denoiser(net, cond, uncond, per_frame)(x, sigma)
    for f in range(4):
        assert torch.allclose(out[:, :, f], u[:, :, f] + (f + 1) * (c - u)[:, :, f])
    per_sample = torch.tensor([0.0, 5.0])
    out = cfg_denoiser(net, cond, uncond, per_sample)(x, sigma)
    assert torch.allclose(out[0], u[0]) and torch.allclose(out[1], u[1] + 5 * (c - u)[1])


def test_guidance_plugs_into_a_sampler_and_rejects_mismatched_keys():
    cond, uncond = _cond_uncond(2)
    out = sample(cfg_denoiser(TwoWay(), cond, uncond, 2.0), (2, 1, 3, 3), 5)
    assert out.shape == (2, 1, 3, 3) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="same keys"):
        cfg_denoiser(TwoWay(), cond, {"text": torch.zeros(2)}, 2.0)
