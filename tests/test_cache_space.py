"""The estimate space: the lines agree with the schedulers' own clean-sample estimates and invert exactly."""

import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from taocache.taocache import space


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_line_matches_ddims_clean_sample_estimate(prediction_type):
    scheduler = DDIMScheduler(prediction_type=prediction_type, clip_sample=False)
    scheduler.set_timesteps(20)
    generator = torch.Generator().manual_seed(0)
    sample, output = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
    for step in (3, 12):
        t = scheduler.timesteps[step]
        expected = scheduler.step(output, t, sample).pred_original_sample
        line = space.line_at(scheduler, step, float(t))
        assert torch.allclose(line.estimate(output, sample), expected, atol=1e-4)


@pytest.mark.parametrize("scheduler", [
    FlowMatchEulerDiscreteScheduler(shift=3.0),
    UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
])
def test_flow_line_recovers_the_clean_sample_and_inverts(scheduler):
    scheduler.set_timesteps(10)
    generator = torch.Generator().manual_seed(1)
    clean, noise = torch.randn(1, 4, 6, 6, generator=generator), torch.randn(1, 4, 6, 6, generator=generator)
    step = 6
    sigma = float(scheduler.sigmas[step])
    sample, velocity = (1 - sigma) * clean + sigma * noise, noise - clean
    line = space.line_at(scheduler, step, float(scheduler.timesteps[step]))
    assert line.output_scale == pytest.approx(-sigma)
    estimate = line.estimate(velocity, sample)
    assert torch.allclose(estimate, clean, atol=1e-5)
    assert torch.allclose(line.output(estimate, sample, torch.float32), velocity, atol=1e-4)


def test_batched_guidance_repeats_the_sample_and_other_shapes_do_not_fit():
    line = space.Line(1.0, -0.5)
    sample, outputs = torch.ones(1, 2, 3), torch.zeros(2, 2, 3)
    assert space.fits(sample, outputs)
    assert torch.equal(line.estimate(outputs, sample), torch.ones(2, 2, 3))
    assert not space.fits(sample, torch.zeros(1, 4, 3))  # learned variances: twice the channels
    assert not space.fits(None, outputs)


def test_schedulers_that_do_not_say_their_parametrisation_have_no_line():
    sample_prediction = DDIMScheduler(prediction_type="sample")
    assert space.line_at(sample_prediction, 0, 500.0) is None
    assert space.line_at(None, 0, 500.0) is None
    assert space.line_at(DDIMScheduler(), 0, None) is None
