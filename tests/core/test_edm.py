"""EDM maths: preconditioning identities, noise distributions, Precond and the DSM loss."""

import pytest
import torch
from torch import nn

from presto_core import edm

SD = 0.5
SIGMAS = torch.logspace(-3, 2, 41, dtype=torch.float64)


def test_preconditioning_identities():
    c_skip, c_out, c_in, c_noise = edm.precondition(SIGMAS, SD)
    s2, sd2 = SIGMAS**2, SD**2
    # Unit-variance network input for x = y + sigma n with Var(y) = sd^2.
    torch.testing.assert_close(c_in**2 * (sd2 + s2), torch.ones_like(SIGMAS))
    torch.testing.assert_close(c_out**2, sd2 * s2 / (s2 + sd2))
    torch.testing.assert_close(c_skip, sd2 / (s2 + sd2))
    # Unit-variance training target F* = (y - c_skip x) / c_out.
    torch.testing.assert_close((1 - c_skip) ** 2 * sd2 + c_skip**2 * s2, c_out**2)
    torch.testing.assert_close(c_noise, SIGMAS.log() / 4)


def test_preconditioning_limits():
    c_skip, c_out, _, _ = edm.precondition(torch.tensor([1e-8, 1e8], dtype=torch.float64), SD)
    assert c_skip[0] == pytest.approx(1.0) and c_out[0] == pytest.approx(0.0, abs=1e-7)
    assert c_skip[1] == pytest.approx(0.0, abs=1e-12) and c_out[1] == pytest.approx(SD)


def test_training_target_has_unit_variance(gen):
    sigma = torch.tensor(1.3)
    y = SD * torch.randn(50_000, generator=gen)
    x = y + sigma * torch.randn(50_000, generator=gen)
    c_skip, c_out, c_in, _ = edm.precondition(sigma, SD)
    assert (c_in * x).var().item() == pytest.approx(1.0, abs=0.03)
    assert ((y - c_skip * x) / c_out).var().item() == pytest.approx(1.0, abs=0.03)


def test_loss_weight_times_c_out_squared_is_one():
    _, c_out, _, _ = edm.precondition(SIGMAS, SD)
    torch.testing.assert_close(edm.loss_weight(SIGMAS, SD) * c_out**2, torch.ones_like(SIGMAS))


@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_karras_sigmas_shape_and_endpoints(n):
    s = edm.karras_sigmas(n, 0.002, 80.0, 7.0)
    assert s.shape == (n + 1,) and s.dtype == torch.float64
    assert s[0].item() == pytest.approx(80.0) and s[-1].item() == 0.0
    if n > 1:
        assert s[-2].item() == pytest.approx(0.002)
    assert (s[1:] < s[:-1]).all()


def test_karras_sigmas_rho_one_is_linear_and_rho_1000_finite():
    s = edm.karras_sigmas(9, 1.0, 9.0, rho=1.0)[:-1]
    torch.testing.assert_close(s, torch.linspace(9.0, 1.0, 9, dtype=torch.float64))
    s = edm.karras_sigmas(16, rho=1000.0)
    assert torch.isfinite(s).all() and (s[1:] < s[:-1]).all()
    assert s[-2].item() == pytest.approx(0.002, rel=1e-9)


def test_karras_sigmas_rejects_zero_steps():
    with pytest.raises(ValueError):
        edm.karras_sigmas(0)


def test_training_sigmas_are_log_normal(gen):
    log_s = edm.sample_training_sigmas(200_000, -0.4, 1.0, generator=gen).log()
    assert log_s.mean().item() == pytest.approx(-0.4, abs=0.01)
    assert log_s.std().item() == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("rho", [1.0, 7.0, 1000.0])
def test_inference_sigmas_follow_karras_ramp(gen, rho):
    s = edm.sample_inference_sigmas(100_000, 0.002, 80.0, rho, generator=gen).double()
    assert s.min() >= 0.002 * (1 - 1e-6) and s.max() <= 80.0 * (1 + 1e-6)
    for q in (0.1, 0.3, 0.5, 0.7, 0.9):
        expected = edm.karras_ramp(torch.tensor(q, dtype=torch.float64), 0.002, 80.0, rho).item()
        assert expected == pytest.approx(edm.inference_quantile(q, 0.002, 80.0, rho))
        # A fraction 1 - q of the draws lies below the ramp at u = q (binomial std ~0.0016).
        assert (s < expected).double().mean().item() == pytest.approx(1 - q, abs=0.008)
    assert edm.inference_quantile(0.0) == pytest.approx(80.0)
    assert edm.inference_quantile(1.0) == pytest.approx(0.002)


def test_sample_sigmas_dispatch(gen):
    cfg = edm.EDMConfig()
    assert edm.sample_sigmas("train", 7, cfg, gen).shape == (7,)
    assert edm.sample_sigmas("inference", 7, cfg, gen).shape == (7,)
    with pytest.raises(ValueError):
        edm.sample_sigmas("test", 7, cfg, gen)


class ZeroBackbone(nn.Module):
    """Returns zeros and records what it was fed."""

    def forward(self, x_in, c_noise, **cond):
        self.seen = (x_in, c_noise, cond)
        return torch.zeros_like(x_in)


def test_precond_zero_backbone_returns_c_skip_x(gen):
    net = edm.Precond(ZeroBackbone(), sigma_data=SD)
    x = torch.randn(3, 2, 5, generator=gen)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    c_skip, _, c_in, c_noise = edm.precondition(sigma, SD)
    out = net(x, sigma, text="hi")
    torch.testing.assert_close(out, c_skip.view(-1, 1, 1) * x)
    x_in, seen_noise, cond = net.backbone.seen
    torch.testing.assert_close(x_in, c_in.view(-1, 1, 1) * x)
    torch.testing.assert_close(seen_noise, c_noise)
    assert cond == {"text": "hi"}
    # A scalar sigma broadcasts over the batch.
    torch.testing.assert_close(net(x, 1.0), edm.precondition(torch.tensor(1.0), SD)[0] * x)


def test_precond_passes_hidden_through(gen):
    class WithHidden(nn.Module):
        def forward(self, x_in, c_noise):
            return torch.ones_like(x_in), x_in.sum()

    x = torch.randn(2, 1, 4, generator=gen)
    out, hidden = edm.Precond(WithHidden(), SD)(x, torch.tensor([0.5, 2.0]))
    c_skip, c_out, c_in, _ = edm.precondition(torch.tensor([0.5, 2.0]), SD)
    torch.testing.assert_close(out, c_skip.view(-1, 1, 1) * x + c_out.view(-1, 1, 1))
    assert hidden.shape == ()


def test_dsm_loss_of_ideal_gaussian_denoiser(gen):
    # y ~ N(0, s0^2): the posterior mean leaves error variance s0^2 s^2 / (s0^2 + s^2), and
    # lambda(s) scales it to s0^2 (s^2 + sd^2) / (sd^2 (s0^2 + s^2)).
    s0 = 0.3
    y = s0 * torch.randn(2048, 4, 32, generator=gen, dtype=torch.float64)
    n = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    sigma = edm.sample_training_sigmas(2048, generator=gen).double()

    def ideal(x, s):
        return s0**2 / (s0**2 + s.view(-1, 1, 1) ** 2) * x

    loss = edm.dsm_loss(ideal, y, sigma, n, sigma_data=SD)
    closed = (s0**2 * (sigma**2 + SD**2) / (SD**2 * (s0**2 + sigma**2))).mean()
    assert loss.item() == pytest.approx(closed.item(), rel=0.01)
    # With s0 == sigma_data the weighted loss is exactly 1 at every noise level.
    y = SD * torch.randn(2048, 4, 32, generator=gen, dtype=torch.float64)
    ideal_sd = lambda x, s: SD**2 / (SD**2 + s.view(-1, 1, 1) ** 2) * x  # noqa: E731
    assert edm.dsm_loss(ideal_sd, y, sigma, n, sigma_data=SD).item() == pytest.approx(1.0, rel=0.01)


def _tiny_dit():
    from presto_core.dit import DiT, DiTConfig

    torch.manual_seed(0)
    m = DiT(DiTConfig(latent_channels=4, dim=16, depth=3, heads=2, text_dim=8, freq_dim=16)).eval()
    with torch.no_grad():  # random weights everywhere, so the zero-initialised paths carry signal
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("return_hidden, return_features", [(False, ()), (True, ()), (False, (2, 0)),
                                                            (True, (1,))])
def test_precond_handles_every_dit_return_form(gen, return_hidden, return_features):
    """den | (den, hidden) | (den, feats) | (den, hidden, feats): only den is preconditioned, the
    extras pass through in order and equal the raw backbone's, and den equals the plain call's."""
    dit = _tiny_dit()
    net = edm.Precond(dit, sigma_data=SD)
    b, t = 2, 6
    x = torch.randn(b, 4, t, generator=gen)
    sigma = torch.tensor([0.3, 4.0])
    cond = dict(text=torch.randn(b, 3, 8, generator=gen), bpm=torch.tensor([90.0, 128.0]))
    with torch.no_grad():
        plain = net(x, sigma, **cond)
        out = net(x, sigma, **cond, return_hidden=return_hidden, return_features=return_features)
        c_in, c_noise = edm.precondition(sigma, SD)[2:]
        raw = dit(c_in.view(-1, 1, 1) * x, c_noise, **cond, return_hidden=return_hidden,
                  return_features=return_features)
    assert torch.is_tensor(plain) and plain.shape == x.shape
    if not return_hidden and not return_features:
        assert torch.is_tensor(out) and torch.equal(out, plain)
        return
    n_extras = int(return_hidden) + int(bool(return_features))
    assert isinstance(out, tuple) and len(out) == 1 + n_extras == len(raw)
    den, *extras = out
    assert torch.equal(den, plain)
    if return_hidden:
        hidden = extras.pop(0)
        assert hidden.shape == (b, t, 16) and torch.equal(hidden, raw[1])
    if return_features:
        (feats,) = extras
        assert isinstance(feats, list) and len(feats) == len(return_features)
        assert all(f.shape == (b, t, 16) for f in feats)
        assert all(torch.equal(f, r) for f, r in zip(feats, raw[-1]))


def test_precond_passes_any_number_of_extras_in_order(gen):
    class Extras(nn.Module):
        def forward(self, x_in, c_noise):
            return torch.zeros_like(x_in), "a", ["b"]

    x = torch.randn(2, 1, 4, generator=gen)
    den, a, b = edm.Precond(Extras(), SD)(x, torch.tensor([0.5, 2.0]))
    c_skip = edm.precondition(torch.tensor([0.5, 2.0]), SD)[0]
    torch.testing.assert_close(den, c_skip.view(-1, 1, 1) * x)
    assert (a, b) == ("a", ["b"])
