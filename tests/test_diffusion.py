"""EDM core: preconditioning identities, loss, training sigmas, schedule, conditioning dropout."""

import pytest
import torch
from torch import nn

from keyframe.diffusion import (
    Denoiser,
    drop_conditioning,
    drop_mask,
    karras_sigmas,
    sample_training_sigmas,
)
from keyframe.errors import UserError

SIGMA_DATA = 0.5


class ZeroNet(nn.Module):
    """Outputs zeros and records what it was given."""

    def forward(self, x, c_noise, **cond):
        self.seen = (x, c_noise, cond)
        return torch.zeros_like(x)


class GaussianNet(nn.Module):
    """The raw network whose preconditioned output is the exact posterior mean for N(mu, s^2)."""

    def __init__(self, mu: float, s: float, sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.mu, self.s, self.sd = mu, s, sigma_data

    def forward(self, x_in, c_noise):
        sigma = (4 * c_noise).exp().reshape(-1, *([1] * (x_in.ndim - 1)))
        x = x_in * (sigma**2 + self.sd**2).sqrt()  # undo c_in
        x0 = self.mu + self.s**2 / (self.s**2 + sigma**2) * (x - self.mu)
        c_skip = self.sd**2 / (sigma**2 + self.sd**2)
        c_out = sigma * self.sd / (sigma**2 + self.sd**2).sqrt()
        return (x0 - c_skip * x) / c_out


class ElementwiseNet(nn.Module):
    """A per-element map with a learnable-looking shape, so losses on slices are comparable."""

    def forward(self, x, c_noise):
        return torch.tanh(0.7 * x + c_noise.reshape(-1, *([1] * (x.ndim - 1))))


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x, c_noise):
        return self.conv(x)


def test_scalings_edm_identities():
    den = Denoiser(ZeroNet(), sigma_data=SIGMA_DATA)
    sigma = torch.tensor([1e-6, SIGMA_DATA, 80.0])
    c_skip, c_out, c_in, c_noise = den.scalings(sigma)
    assert c_skip[0] == pytest.approx(1.0, abs=1e-9)
    assert c_out[0] == pytest.approx(0.0, abs=1e-5)
    assert c_skip[1] == pytest.approx(0.5)
    assert torch.allclose(c_noise, sigma.log() / 4)
    # The network's input and training target both have unit variance (EDM Sec. 5).
    assert torch.allclose(c_in**2 * (SIGMA_DATA**2 + sigma**2), torch.ones(3))
    effective_target_var = ((1 - c_skip) ** 2 * SIGMA_DATA**2 + c_skip**2 * sigma**2) / c_out**2
    assert torch.allclose(effective_target_var, torch.ones(3), atol=1e-4)


@pytest.mark.parametrize("shape", [(3, 2, 4, 4), (3, 2, 5, 4, 4)])
def test_zero_net_returns_c_skip_x_for_images_and_videos(shape):
    net = ZeroNet()
    den = Denoiser(net, sigma_data=SIGMA_DATA)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.1, 1.0, 10.0])
    text = torch.ones(3, 7, 8)
    out = den(x, sigma, text=text)
    c_skip = SIGMA_DATA**2 / (sigma**2 + SIGMA_DATA**2)
    expected = c_skip.reshape(-1, *([1] * (len(shape) - 1))) * x
    assert torch.allclose(out, expected)
    seen_x, seen_c_noise, seen_cond = net.seen
    c_in = 1 / (sigma**2 + SIGMA_DATA**2).sqrt()
    assert torch.allclose(seen_x, c_in.reshape(expected.shape[:1] + (1,) * (len(shape) - 1)) * x)
    assert torch.allclose(seen_c_noise, sigma.log() / 4)
    assert seen_cond["text"] is text


def test_scalar_sigma_is_shared_by_the_batch_and_zero_sigma_is_identity():
    den = Denoiser(ElementwiseNet())
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(den(x, 0.7), den(x, torch.full((2,), 0.7)))
    assert torch.equal(den(x, 0.0), x)
    with pytest.raises(ValueError):
        den(x, torch.ones(3))


def test_loss_prefers_the_exact_denoiser_and_is_one_at_sigma_data():
    g = torch.Generator().manual_seed(0)
    x0 = SIGMA_DATA * torch.randn(512, 1, 8, 8, generator=g)  # mu = 0, s = sigma_data
    sigma = sample_training_sigmas(512, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    exact = Denoiser(GaussianNet(0.0, SIGMA_DATA)).loss(x0, sigma, noise)
    wrong = Denoiser(GaussianNet(0.3, 0.8)).loss(x0, sigma, noise)
    # For data N(0, sigma_data^2) the optimal denoiser's weighted loss is exactly 1 in expectation.
    assert exact.item() == pytest.approx(1.0, rel=0.03)
    assert wrong > exact * 1.1
    assert exact.ndim == 0


def test_loss_weight_is_a_mean_over_the_masked_elements():
    g = torch.Generator().manual_seed(1)
    den = Denoiser(ElementwiseNet())
    x0 = torch.randn(2, 3, 6, 4, 4, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    sigma = torch.tensor([0.3, 2.0])
    unknown = torch.tensor([False, True, True, False, True, False])
    weight = unknown.reshape(1, 1, 6, 1, 1).expand(2, 1, 6, 1, 1)
    masked = den.loss(x0, sigma, noise, weight=weight)
    only_unknown = den.loss(x0[:, :, unknown], sigma, noise[:, :, unknown])
    assert torch.allclose(masked, only_unknown)
    assert den.loss(x0, sigma, noise, weight=torch.zeros(1)) == 0


def test_loss_draws_noise_when_not_given_and_backpropagates():
    torch.manual_seed(0)
    den = Denoiser(ConvNet())
    first = den.loss(torch.randn(4, 2, 3, 3), torch.ones(4))
    torch.manual_seed(0)
    x0 = torch.randn(4, 2, 3, 3)
    assert not torch.equal(first, den.loss(x0, torch.ones(4), torch.zeros_like(x0)))
    first.backward()
    assert torch.isfinite(first) and den.net.conv.weight.grad.abs().sum() > 0


def test_training_sigmas_are_log_normal_and_seeded():
    a = sample_training_sigmas(20000, -1.2, 1.2, generator=torch.Generator().manual_seed(3))
    b = sample_training_sigmas(20000, -1.2, 1.2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (20000,) and (a > 0).all()
    assert a.log().mean().item() == pytest.approx(-1.2, abs=0.03)
    assert a.log().std().item() == pytest.approx(1.2, rel=0.03)


@pytest.mark.parametrize("steps", [2, 10, 50])
def test_karras_schedule_endpoints_and_monotone(steps):
    sigmas = karras_sigmas(steps, sigma_min=0.01, sigma_max=50.0, rho=7.0)
    assert sigmas.shape == (steps + 1,)
    assert sigmas[0].item() == pytest.approx(50.0)
    assert sigmas[-2].item() == pytest.approx(0.01)
    assert sigmas[-1] == 0
    assert (sigmas[1:] < sigmas[:-1]).all()


def test_karras_schedule_matches_eq5_midpoint_and_rejects_bad_input():
    sigmas = karras_sigmas(3, 0.002, 80.0, 7.0)
    mid = (80.0 ** (1 / 7) + 0.5 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    assert sigmas[1].item() == pytest.approx(mid, rel=1e-5)
    with pytest.raises(ValueError, match="at least 1 step"):
        karras_sigmas(0)
    with pytest.raises(UserError, match="sigma_min"):
        karras_sigmas(10, sigma_min=1.0, sigma_max=0.5)


def test_drop_conditioning_prompts_tensors_and_dicts():
    prompts = [f"prompt {i}" for i in range(2000)]
    assert drop_conditioning(prompts, 0.0) == prompts
    assert drop_conditioning(prompts, 1.0) == [""] * 2000
    dropped = drop_conditioning(prompts, 0.2, torch.Generator().manual_seed(0))
    again = drop_conditioning(prompts, 0.2, torch.Generator().manual_seed(0))
    assert dropped == again
    assert sum(p == "" for p in dropped) / 2000 == pytest.approx(0.2, abs=0.03)
    assert all(d in ("", p) for d, p in zip(dropped, prompts, strict=True))

    frames = torch.randn(6, 3, 4, 8, 8) + 5
    both = drop_conditioning(
        {"prompts": prompts[:6], "frames": frames}, 0.5, torch.Generator().manual_seed(4)
    )
    gone = [p == "" for p in both["prompts"]]
    assert 0 < sum(gone) < 6  # this seed drops some but not all
    for i, is_gone in enumerate(gone):
        expected = torch.zeros_like(frames[i]) if is_gone else frames[i]
        assert torch.equal(both["frames"][i], expected)


def test_drop_mask_rate_is_validated():
    assert drop_mask(5, 1.0).all() and not drop_mask(5, 0.0).any()
    with pytest.raises(UserError, match="rate"):
        drop_mask(3, 1.5)
    a = drop_mask(1000, 0.3, torch.Generator().manual_seed(2))
    assert torch.equal(a, drop_mask(1000, 0.3, torch.Generator().manual_seed(2)))
    assert a.dtype == torch.bool and a.float().mean().item() == pytest.approx(0.3, abs=0.05)


def test_half_precision_input_keeps_float32_noise_levels():
    net = ZeroNet()
    x = torch.randn(2, 3, 4, 4).to(torch.bfloat16)
    out = Denoiser(net)(x, torch.tensor([0.002, 80.0]))
    assert out.dtype == torch.bfloat16 and net.seen[0].dtype == torch.bfloat16
    assert net.seen[1].dtype == torch.float32
    assert torch.allclose(net.seen[1], torch.tensor([0.002, 80.0]).log() / 4)
