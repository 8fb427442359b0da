"""Action distributions (training/rl/distributions.py) against hand values and numerical integration."""

from __future__ import annotations

import math

import pytest
import torch

from training.rl.distributions import FactorisedCategorical, ScaledBeta, TanhNormal, kl
from training.rl.networks import BetaActor, JointActor, TanhGaussianActor


def test_tanh_normal_log_prob_matches_the_hand_computed_change_of_variables() -> None:
    # y = 0.5 + 0.5·tanh(u) on [0, 1], u ~ N(0.2, 0.3²). At y = 0.8: x = 0.6, u = atanh(0.6) = 0.693147…
    d = TanhNormal(torch.tensor([0.2]), torch.tensor([0.3]), 0.0, 1.0)
    u = math.atanh(0.6)
    normal = -0.5 * ((u - 0.2) / 0.3) ** 2 - math.log(0.3) - 0.5 * math.log(2 * math.pi)
    log_det = math.log(0.5) + math.log(1 - 0.6**2)  # dy/du = h·(1 − tanh² u)
    assert d.log_prob(torch.tensor([0.8])).item() == pytest.approx(normal - log_det, abs=1e-5)
    # the median is inside the box, the mode of u mapped through the squash
    assert d.mode.item() == pytest.approx(0.5 + 0.5 * math.tanh(0.2), abs=1e-6)


def test_tanh_normal_density_integrates_to_one_even_near_a_bound() -> None:
    y = torch.linspace(-2.0 + 1e-6, 3.0 - 1e-6, 200_001)[:, None]
    for loc in (0.0, 2.5, -4.0):  # centre, and pushed hard against each bound
        d = TanhNormal(torch.tensor([loc]), torch.tensor([0.7]), -2.0, 3.0)
        mass = torch.trapezoid(d.log_prob(y).exp(), y[:, 0]).item()
        assert mass == pytest.approx(1.0, abs=2e-3), loc
    # the score with respect to loc does not vanish when the policy sits on a bound
    loc = torch.tensor([4.0], requires_grad=True)
    TanhNormal(loc, torch.tensor([0.5]), 0.0, 1.0).log_prob(torch.tensor([0.9])).backward()
    assert loc.grad is not None and abs(loc.grad.item()) > 1.0  # (atanh(0.8) − 4)/0.25 ≈ −12.9


def test_tanh_normal_from_noise_and_kl_of_the_base_gaussians() -> None:
    p = TanhNormal(torch.tensor([[0.1, -0.3]]), torch.tensor([[0.5, 0.2]]), 0.0, 1.0)
    z = torch.tensor([[1.0, -2.0]])
    assert torch.allclose(p.from_noise(z), 0.5 + 0.5 * torch.tanh(torch.tensor([[0.6, -0.7]])))
    q = TanhNormal(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]]), 0.0, 1.0)
    # KL(N(μ, σ²) ‖ N(0, 1)) = log(1/σ) + (σ² + μ²)/2 − 1/2, summed over components
    want = sum(math.log(1 / s) + (s**2 + m**2) / 2 - 0.5 for m, s in ((0.1, 0.5), (-0.3, 0.2)))
    assert kl(p, q).item() == pytest.approx(want, abs=1e-6)


def test_scaled_beta_log_prob_and_integral() -> None:
    # Beta(2, 3) density at x = 0.25 is 12·x·(1−x)² = 1.6875; on [−1, 3] (width 4) divide by 4.
    d = ScaledBeta(torch.tensor([2.0]), torch.tensor([3.0]), -1.0, 3.0)
    assert d.log_prob(torch.tensor([0.0])).item() == pytest.approx(math.log(1.6875 / 4), abs=1e-5)
    y = torch.linspace(-1.0, 3.0, 100_001)[:, None]
    assert torch.trapezoid(d.log_prob(y).exp(), y[:, 0]).item() == pytest.approx(1.0, abs=1e-3)
    assert d.mean.item() == pytest.approx(-1.0 + 4 * 0.4)


def test_factorised_categorical_log_prob_entropy_and_mode() -> None:
    probs = torch.tensor([[0.2, 0.8, 0.5, 0.25, 0.25]])
    d = FactorisedCategorical(probs.log(), (2, 3))
    assert d.log_prob(torch.tensor([[1.0, 2.0]])).item() == pytest.approx(math.log(0.8 * 0.25))
    assert d.mode.tolist() == [[1.0, 0.0]]
    h = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8)) - (0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert d.entropy().item() == pytest.approx(h, abs=1e-6)
    draws = torch.cat([d.sample_with(torch.Generator().manual_seed(i)) for i in range(2000)])
    assert draws[:, 0].mean().item() == pytest.approx(0.8, abs=0.04)


def test_actors_return_distributions_and_start_at_the_requested_action() -> None:
    obs = torch.randn(5, 4)
    tanh = TanhGaussianActor(4, 2, 0.0, 1.0, (8,), init_mean=(0.3, 1.0), init_std=0.1)
    d = tanh.distribution(obs)
    assert isinstance(d, TanhNormal)
    assert torch.allclose(d.mode[:, 0], torch.full((5,), 0.3), atol=0.02)
    assert d.mode[:, 1].min().item() > 0.98  # a bound is moved 1 % inside
    mean, log_std = tanh(obs)  # the ONNX outputs: median and linearised std (≈ init_std at the centre)
    assert torch.equal(mean, d.mode) and log_std.shape == (5, 2)
    beta = BetaActor(4, 2, 0.0, 1.0, (8,), init_mean=(0.3, 0.7), init_std=0.1)
    db = beta.distribution(obs)
    assert torch.allclose(db.mean, torch.tensor([0.3, 0.7]).expand(5, 2), atol=0.02)
    assert torch.allclose(db.variance.sqrt(), torch.full((5, 2), 0.1), atol=0.02)
    joint = JointActor([2, 2], [TanhGaussianActor(2, 1, 0.0, 1.0, (4,)), TanhGaussianActor(2, 1, 0.0, 1.0, (4,))])
    action = torch.full((5, 2), 0.4)
    per_agent = sum(
        a.log_prob(o, action[:, k : k + 1])
        for k, (a, o) in enumerate(zip(joint.agents, torch.split(obs, [2, 2], -1), strict=True))
    )
    assert torch.allclose(joint.log_prob(obs, action), per_agent)  # product of the agents' densities
