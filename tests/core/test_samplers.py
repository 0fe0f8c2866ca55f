"""Samplers against closed-form answers: Gaussian and Gaussian-mixture data with exact denoisers."""

import math

import pytest
import torch

from presto_core import edm
from presto_core.errors import PrestoError
from presto_core.samplers import (
    SAMPLERS,
    Denoised,
    batched_guidance,
    call_sigmas,
    cfg,
    cfg_pp,
    get_sampler,
    sample_dpmpp_2s,
    sample_euler,
    sample_heun,
    sample_pingpong,
)

MU, S0 = 0.3, 0.5
SIGMA_MAX = 80.0
ODE_SAMPLERS = ["euler", "heun", "dpmpp_2s"]


def gauss_denoiser(mu=MU, s0=S0):
    """Posterior mean E[y | y + sigma n = x] for y ~ N(mu, s0^2) per dimension."""
    return lambda x, sigma: mu + s0**2 / (s0**2 + sigma**2) * (x - mu)


def gauss_flow(x_t, sigma_from, sigma_to, mu=MU, s0=S0):
    """Exact probability-flow ODE map for Gaussian data: x - mu scales with sqrt(s0^2 + sigma^2)."""
    return mu + math.sqrt(s0**2 + sigma_to**2) / math.sqrt(s0**2 + sigma_from**2) * (x_t - mu)


def noise(gen, shape=(4, 2, 8), dtype=torch.float64):
    return SIGMA_MAX * torch.randn(shape, generator=gen, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Gaussian data: exact solution and convergence order


@pytest.mark.parametrize("name, order", [("euler", 1), ("heun", 2), ("dpmpp_2s", 2)])
def test_ode_samplers_converge_at_their_order(gen, name, order):
    # Stop at sigma_min (no trailing 0) so the comparison is purely the ODE discretisation error.
    x_t, sampler, sigma_min = noise(gen), get_sampler(name), 0.002
    exact = gauss_flow(x_t, SIGMA_MAX, sigma_min)
    errs = []
    for n in (32, 64, 128):
        sigmas = edm.karras_sigmas(n, sigma_min=sigma_min)[:-1]
        errs.append((sampler(gauss_denoiser(), x_t, sigmas) - exact).abs().max().item())
    ratios = [a / b for a, b in zip(errs, errs[1:])]
    for r in ratios:
        assert 2**order * 0.85 < r < 2**order * 1.2, (errs, ratios)


@pytest.mark.parametrize("name, tol", [("euler", 0.05), ("heun", 3e-3), ("dpmpp_2s", 3e-3)])
def test_ode_samplers_land_on_exact_solution(gen, name, tol):
    x_t = noise(gen)
    out = get_sampler(name)(gauss_denoiser(), x_t, edm.karras_sigmas(128))
    exact = gauss_flow(x_t, SIGMA_MAX, 0.0)
    assert out.shape == x_t.shape and out.dtype == torch.float64
    assert (out - exact).abs().max().item() < tol


@pytest.mark.parametrize("rho, tol", [(1.0, None), (7.0, 0.05), (1000.0, 0.05)])
def test_dpmpp_2s_float32_over_rho_range(gen, rho, tol):
    # rho = 1 spends almost no steps at low noise, so only finiteness is asked of it.
    x_t = noise(gen, dtype=torch.float32)
    out = sample_dpmpp_2s(gauss_denoiser(), x_t, edm.karras_sigmas(24, rho=rho))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    if tol is not None:
        exact = gauss_flow(x_t.double(), SIGMA_MAX, 0.0)
        assert (out.double() - exact).abs().max().item() < tol


def test_evaluation_counts_and_callback(gen):
    # Second-order samplers take an Euler step (one call) on the final step to 0.
    expected = {"euler": 6, "heun": 11, "dpmpp_2s": 11, "pingpong": 6}
    for name, calls in expected.items():
        count, seen = [0], []

        def den(x, sigma):
            count[0] += 1
            assert sigma.ndim == 0
            return gauss_denoiser()(x, sigma)

        get_sampler(name)(den, noise(gen), edm.karras_sigmas(6), gen, lambda i, n, x: seen.append((i, n)))
        assert count[0] == calls, name
        assert seen == [(i, 6) for i in range(6)]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("steps", [1, 2, 6])
def test_call_sigmas_lists_every_denoiser_call(gen, name, steps):
    sigmas = edm.karras_sigmas(steps)
    seen = []

    def den(x, sigma):
        seen.append(float(sigma))
        return gauss_denoiser()(x, sigma)

    get_sampler(name)(den, noise(gen), sigmas, gen)
    assert call_sigmas(name, sigmas) == pytest.approx(seen, rel=1e-6)
    s = sigmas.tolist()
    if name == "dpmpp_2s":  # each step's log-sigma midpoint, except on the final step to 0
        mids = [math.sqrt(a * b) for a, b in zip(s[:-2], s[1:-1])]
        assert call_sigmas(name, sigmas)[1::2] == pytest.approx(mids)
    with pytest.raises(PrestoError, match="sampler must be one of"):
        call_sigmas("nope", sigmas)


# ---------------------------------------------------------------------------------------------
# Two-component Gaussian mixture: the sampled distribution


W, MEANS, STD = (0.3, 0.7), (-1.0, 1.5), 0.2


def mixture_denoiser(x, sigma):
    """Exact posterior mean for y ~ sum_k W_k N(MEANS_k, STD^2), per element."""
    var = STD**2 + sigma**2
    logits = torch.stack([math.log(w) - (x - m) ** 2 / (2 * var) for w, m in zip(W, MEANS)])
    resp = torch.softmax(logits, dim=0)
    means = torch.stack([m + STD**2 / var * (x - m) for m in MEANS])
    return (resp * means).sum(0)


@pytest.mark.parametrize("name", ["dpmpp_2s", "heun"])
def test_mixture_weights_and_means_recovered(gen, name):
    x_t = noise(gen, shape=(100, 1, 40))
    out = get_sampler(name)(mixture_denoiser, x_t, edm.karras_sigmas(32)).flatten()
    hi = out > (MEANS[0] + MEANS[1]) / 2
    assert abs(hi.double().mean().item() - W[1]) < 0.03
    assert abs(out[~hi].mean().item() - MEANS[0]) < 0.02
    assert abs(out[hi].mean().item() - MEANS[1]) < 0.02
    assert abs(out[hi].std().item() - STD) < 0.02


# ---------------------------------------------------------------------------------------------
# Ping-pong


@pytest.mark.parametrize("rho", [1.0, 7.0, 1000.0])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_pingpong_with_exact_generator_reproduces_data(gen, steps, rho):
    def generator_net(x, sigma):  # the ideal few-step generator: the exact flow map to sigma = 0
        return MU + S0 / torch.sqrt(S0**2 + sigma**2) * (x - MU)

    x_t = noise(gen, shape=(20000, 1, 1))
    out = sample_pingpong(generator_net, x_t, edm.karras_sigmas(steps, rho=rho), generator=gen)
    assert abs(out.mean().item() - MU) < 0.015
    assert abs(out.var().item() - S0**2) < 0.012


def test_pingpong_generator_determinism():
    x_t = noise(torch.Generator().manual_seed(1), shape=(2, 3, 5))
    sigmas = edm.karras_sigmas(4)
    runs = [sample_pingpong(gauss_denoiser(), x_t, sigmas, torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])


# ---------------------------------------------------------------------------------------------
# Guidance


def test_guidance_with_equal_branches_is_unguided(gen):
    x_t, sigmas, den = noise(gen), edm.karras_sigmas(8), gauss_denoiser()
    for name in ODE_SAMPLERS:
        plain = get_sampler(name)(den, x_t, sigmas)
        torch.testing.assert_close(get_sampler(name)(cfg(den, den, 3.0), x_t, sigmas), plain)
        torch.testing.assert_close(get_sampler(name)(cfg_pp(den, den, 0.8), x_t, sigmas), plain)


def test_cfg_pp_single_euler_step_is_cfgpp_ddim(gen):
    cond, uncond = gauss_denoiser(mu=1.0, s0=0.4), gauss_denoiser(mu=-0.5, s0=0.7)
    x, sigma, sigma_next = noise(gen) / SIGMA_MAX * 3.0, 3.0, 1.2
    out = sample_euler(cfg_pp(cond, uncond, 1.0), x, torch.tensor([sigma, sigma_next], dtype=torch.float64))
    s = torch.tensor(sigma, dtype=torch.float64)
    torch.testing.assert_close(out, cond(x, s) + sigma_next * (x - uncond(x, s)) / sigma)


def test_cfg_pp_dpmpp_2s_matches_log_sigma_form(gen):
    # Reference written in k-diffusion's t = -log(sigma) / expm1 form, shifting x by (x0 - x0_uncond).
    cond, uncond, lam = gauss_denoiser(mu=1.0, s0=0.4), gauss_denoiser(mu=-0.5, s0=0.7), 0.8
    den = cfg_pp(cond, uncond, lam)
    x = noise(gen) / SIGMA_MAX * 5.0
    sig = torch.tensor([5.0, 2.0], dtype=torch.float64)
    t, t_next = -sig[0].log(), -sig[1].log()
    h = t_next - t
    x0, x0_u = den(x, sig[0])
    shifted = x + x0 - x0_u
    x_mid = (-(t + h / 2)).exp() / sig[0] * shifted - torch.expm1(-h / 2) * x0
    x0_mid = den(x_mid, (-(t + h / 2)).exp()).x0
    expected = sig[1] / sig[0] * shifted - torch.expm1(-h) * x0_mid
    torch.testing.assert_close(sample_dpmpp_2s(den, x, sig), expected)


def test_cfg_and_cfg_pp_values(gen):
    cond, uncond = gauss_denoiser(mu=1.0), gauss_denoiser(mu=-1.0)
    x, s = noise(gen), torch.tensor(2.0, dtype=torch.float64)
    c, u = cond(x, s), uncond(x, s)
    torch.testing.assert_close(cfg(cond, uncond, 4.5)(x, s), u + 4.5 * (c - u))
    out = cfg_pp(cond, uncond, 0.8)(x, s)
    assert isinstance(out, Denoised)
    torch.testing.assert_close(out.x0, u + 0.8 * (c - u))
    torch.testing.assert_close(out.x0_renoise, u)


@pytest.mark.parametrize("plus_plus, scale", [(False, 4.5), (True, 0.8)])
def test_batched_guidance_matches_separate_calls(gen, plus_plus, scale):
    cond, uncond = gauss_denoiser(mu=1.0), gauss_denoiser(mu=-1.0)

    def model_fn(x2, sigma):
        a, b = x2.chunk(2)
        return torch.cat([cond(a, sigma), uncond(b, sigma)])

    x_t, sigmas = noise(gen), edm.karras_sigmas(6)
    separate = (cfg_pp if plus_plus else cfg)(cond, uncond, scale)
    torch.testing.assert_close(
        sample_dpmpp_2s(batched_guidance(model_fn, scale, plus_plus), x_t, sigmas),
        sample_dpmpp_2s(separate, x_t, sigmas),
    )


def test_guidance_weights_validated():
    den = gauss_denoiser()
    with pytest.raises(PrestoError, match="CFG\\+\\+"):
        cfg_pp(den, den, 1.5)
    with pytest.raises(PrestoError):
        cfg(den, den, float("nan"))


# ---------------------------------------------------------------------------------------------
# Dtypes, shapes, names, schedules


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_bf16_in_bf16_out(gen, name):
    def den(x, sigma):
        assert x.dtype == torch.bfloat16  # the model sees the caller's dtype
        return gauss_denoiser()(x.float(), sigma).to(torch.bfloat16)

    x_t = noise(gen, shape=(2, 3, 16), dtype=torch.float32).to(torch.bfloat16)
    out = get_sampler(name)(cfg_pp(den, den, 0.5), x_t, edm.karras_sigmas(4), generator=gen)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 3, 16)
    assert torch.isfinite(out.float()).all()


def test_get_sampler_names():
    assert get_sampler("heun") is sample_heun and get_sampler("pingpong") is sample_pingpong
    with pytest.raises(PrestoError, match="dpmpp_2s"):
        get_sampler("ddim")


@pytest.mark.parametrize(
    "sigmas",
    [torch.tensor([1.0, 2.0, 0.0]), torch.tensor([80.0]), torch.ones(2, 2), torch.tensor([1.0, -1.0]),
     torch.tensor([float("nan"), 0.0]), torch.tensor([0.0, 0.0])],
)
def test_bad_sigmas_raise(gen, sigmas):
    with pytest.raises(PrestoError):
        sample_euler(gauss_denoiser(), noise(gen), sigmas)
