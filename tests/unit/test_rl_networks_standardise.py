"""training.rl.networks.Standardise (issue 18, twentieth round): fixed per-column statistics, identity until fit."""

from __future__ import annotations

import pytest
import torch

from training.rl.networks import Standardise, mlp


def test_identity_until_fit_then_standardised_columns() -> None:
    layer = Standardise(3)
    x = torch.tensor([[1.0, 10.0, 5.0], [3.0, 30.0, 5.0], [5.0, 50.0, 5.0]])
    assert torch.equal(layer(x), x)
    layer.fit(x)
    y = layer(x)
    torch.testing.assert_close(y.mean(dim=0), torch.zeros(3))
    torch.testing.assert_close(y[:, :2].std(dim=0), torch.ones(2))
    assert torch.equal(y[:, 2], torch.zeros(3))  # a constant column becomes 0, not nan


def test_statistics_are_buffers_in_the_state_dict() -> None:
    net = mlp(3, 2, [4], standardise=True)
    net[0].fit(torch.randn(10, 3) * 5 + 2)
    copy = mlp(3, 2, [4], standardise=True)
    copy.load_state_dict(net.state_dict())
    x = torch.randn(4, 3)
    torch.testing.assert_close(copy(x), net(x))
    assert "0.mean" in net.state_dict() and "0.std" in net.state_dict()


def test_off_by_default_and_bad_shapes_refused() -> None:
    assert not any(isinstance(m, Standardise) for m in mlp(3, 2, [4]))
    with pytest.raises(ValueError, match="Standardise.fit"):
        Standardise(3).fit(torch.randn(5, 4))
