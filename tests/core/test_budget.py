"""Layer-dropping schedules: quintile bounds, counts per quintile, rescaling, validation."""

import dataclasses

import pytest
import torch

from presto_core import budget, edm
from presto_core.budget import D3, PRESTO_LS, DropSchedule, layers_dropped, quintile_bounds, scale_schedule
from presto_core.errors import PrestoError


def test_quintile_bounds_descending_and_on_the_ramp():
    cfg = edm.EDMConfig()
    bounds = quintile_bounds(cfg)
    assert len(bounds) == 4 and all(a > b for a, b in zip(bounds, bounds[1:]))
    assert cfg.sigma_min < bounds[-1] and bounds[0] < cfg.sigma_max
    for q, b in zip((0.2, 0.4, 0.6, 0.8), bounds):
        ramp = edm.karras_ramp(torch.tensor(q, dtype=torch.float64), cfg.sigma_min, cfg.sigma_max, cfg.rho)
        assert b == pytest.approx(ramp.item())
    # rho = 1 is a linear ramp: bounds at 80 - q * (80 - 0.002).
    lin = quintile_bounds(edm.EDMConfig(rho=1.0))
    assert lin == pytest.approx(tuple(80 - q * (80 - 0.002) for q in (0.2, 0.4, 0.6, 0.8)))


def test_each_quintile_gets_its_count():
    cfg = edm.EDMConfig()
    u_mid = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
    mids = edm.karras_ramp(u_mid, cfg.sigma_min, cfg.sigma_max, cfg.rho)
    for schedule in (D3, PRESTO_LS):
        assert [layers_dropped(float(s), schedule) for s in mids] == list(schedule)
    # Ends and beyond: the noisiest level drops the most, the cleanest (and below) the least.
    assert layers_dropped(80.0, D3) == 14 and layers_dropped(500.0, D3) == 14
    assert layers_dropped(0.002, D3) == 0 and layers_dropped(0.0, D3) == 0


def test_inference_draws_split_evenly(gen):
    sigmas = edm.sample_inference_sigmas(50_000, generator=gen)
    dropped = layers_dropped(sigmas, D3)
    for count in D3:
        assert (dropped == count).double().mean().item() == pytest.approx(0.2, abs=0.01)


def test_boundary_goes_to_lower_noise_side_in_any_precision():
    b0 = quintile_bounds()[0]
    assert layers_dropped(b0, D3) == 12
    assert layers_dropped(b0 * 1.01, D3) == 14
    # A 6-step Karras schedule lands exactly on the quintile boundaries, in float32 or float64.
    s64 = edm.karras_sigmas(6)[:-1]
    expected = torch.tensor([14, 12, 8, 4, 0, 0])
    assert torch.equal(layers_dropped(s64, D3), expected)
    assert torch.equal(layers_dropped(s64.float(), D3), expected)


def test_tensor_input_gives_long_tensor():
    sigmas = torch.tensor([70.0, 0.01, 5.0])
    out = layers_dropped(sigmas, D3)
    assert out.dtype == torch.long and out.shape == (3,)
    assert out.tolist() == [layers_dropped(float(s), D3) for s in sigmas]
    assert isinstance(layers_dropped(3.0, D3), int)
    assert layers_dropped(torch.tensor(70.0), D3).ndim == 0


def test_scale_schedule():
    assert scale_schedule(D3, 28) == D3
    assert scale_schedule(D3, 8) == (4, 3, 2, 1, 0)
    assert scale_schedule(D3, 12) == (6, 5, 3, 2, 0)
    assert scale_schedule(PRESTO_LS, 8) == (3, 2, 2, 0, 0)
    # Clamped so the final block always runs.
    assert scale_schedule((27, 0, 0, 0, 0), 2) == (1, 0, 0, 0, 0)
    assert scale_schedule(D3, 1) == (0, 0, 0, 0, 0)


def test_drop_schedule_object():
    sched = DropSchedule.scaled(D3, 8)
    assert sched.counts == (4, 3, 2, 1, 0) and sched.depth == 8
    assert sched(79.0) == 4 and sched.kept(79.0) == 4
    assert sched(torch.tensor([79.0, 0.003])).tolist() == [4, 0]
    assert DropSchedule(D3) == DropSchedule(list(D3), budget.REFERENCE_DEPTH)
    # A different noise process moves the bounds: sigma = 5 is in the top quintile when sigma_max = 6.
    assert DropSchedule(D3, edm=edm.EDMConfig(sigma_max=6.0))(5.0) == 14
    assert hash(sched) == hash(DropSchedule((4, 3, 2, 1, 0), 8))
    assert sched != DropSchedule((4, 3, 2, 1, 0), 8, edm.EDMConfig(rho=3.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        sched.depth = 3


@pytest.mark.parametrize(
    "schedule, depth",
    [((14, 12, 8, 4), 28), ((14, 12, 8, 4, 0, 0), 28), ((28, 0, 0, 0, 0), 28), ((-1, 0, 0, 0, 0), 28),
     ((1.5, 0, 0, 0, 0), 28), ((5, 0, 0, 0, 0), 4), ("abcde", 28), (D3, 0), (D3, True)],
)
def test_bad_schedules_raise(schedule, depth):
    with pytest.raises(PrestoError):
        DropSchedule(schedule, depth)


def test_bad_inputs_raise():
    with pytest.raises(PrestoError):
        layers_dropped(1.0, (1, 2, 3))
    with pytest.raises(PrestoError):
        layers_dropped(float("nan"), D3)
    with pytest.raises(PrestoError):
        scale_schedule(D3, 0)
    with pytest.raises(PrestoError):
        scale_schedule((29, 0, 0, 0, 0), 8)
