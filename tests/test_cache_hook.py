"""The TaoCache hook on a bare denoiser whose output is a known function of the timestep.

Because the toy's output depends only on the timestep, the full run is known exactly and every predicted
output can be checked against it.
"""

import gc
import logging
import math

import pytest
import torch

import taocache
from taocache import TaoCacheConfig

STEPS = 20


class Toy(torch.nn.Module):
    """out(t) = a + b * s + c * s**2 (+ jitter in the second half of the batch), s = t / 1000."""

    def __init__(self, batch=1, curvature=0.0, jitter=0.0, returns="tuple", seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.register_buffer("a", torch.randn(batch, 4, 6, generator=g))
        self.register_buffer("b", torch.randn(batch, 4, 6, generator=g))
        self.register_buffer("c", curvature * torch.randn(batch, 4, 6, generator=g))
        self.register_buffer("j", torch.randn(batch, 4, 6, generator=g) * jitter)
        self.j[: batch // 2 or 1] = 0 if batch > 1 else self.j[:1]
        self.returns = returns
        self.jump_below = None

    def forward(self, hidden_states, timestep, return_dict=False):
        s = float(timestep) / 1000
        out = (self.a + self.b * s + self.c * s * s + self.j * math.sin(60 * s)) * self.weight
        if self.jump_below is not None and s < self.jump_below:
            out = torch.full_like(out, 3.0e38)
        if self.returns == "tensor":
            return out
        if self.returns == "sample":
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            return Transformer2DModelOutput(sample=out)
        if self.returns == "dict":
            return {"sample": out}
        return (out,)


def timesteps(steps=STEPS):
    return [999.0 * (1 - i / steps) ** 1.5 for i in range(steps)]  # non-uniform, like shifted schedules


def denoise(module, steps=STEPS, batch=1, schedule=None):
    x = torch.zeros(batch, 4, 6)
    outs = []
    for t in schedule or timesteps(steps):
        out = module(x, torch.tensor(t))
        out = out if torch.is_tensor(out) else out.sample if hasattr(out, "sample") else out[0]
        outs.append(out)
        x = x - 0.01 * out
    return torch.stack(outs)


@pytest.fixture(autouse=True)
def isolated_calibrations(tmp_path, monkeypatch):
    monkeypatch.setenv("TAOCACHE_CALIBRATION_DIR", str(tmp_path / "calibrations"))


def enable(module, **fields):
    taocache.enable(module, TaoCacheConfig(**fields))
    return module


def test_zero_config_records_on_the_first_call_then_predicts(caplog):
    toy = enable(Toy())
    first = denoise(toy)
    record = taocache.stats(toy)
    assert record.predicted == 0 and record.computed == STEPS
    assert any("recording a calibration" in note for note in record.notes)
    with caplog.at_level(logging.INFO, logger="taocache"):
        second = denoise(toy)  # a bare module's call ends when the timestep goes back up
    assert "first call ran in full" in caplog.text
    record = taocache.stats(toy)
    assert record.predicted > 0 and record.calls == STEPS
    decisions = record.branches["cond"].decisions
    start = TaoCacheConfig().start_step(STEPS)
    assert set(decisions[:start]) == {"C"} and decisions[-1] == "C"
    assert "P" * (TaoCacheConfig().max_consecutive + 1) not in decisions
    assert torch.allclose(second, first, atol=1e-4)  # a linear trajectory is predicted exactly
    third = denoise(toy)
    assert torch.equal(second, third)  # state was reset when the timestep went back up


@pytest.mark.parametrize("predictor", ["geometric", "linear"])
def test_extrapolating_predictors_are_exact_on_a_linear_trajectory(predictor):
    toy = enable(Toy(), predictor=predictor, error_budget=1e3, max_consecutive=3, start_fraction=0.0)
    full = denoise(toy)
    cached = denoise(toy)
    assert taocache.stats(toy).predicted >= STEPS // 2
    assert torch.allclose(cached, full, atol=1e-4)


def test_reuse_returns_the_last_computed_output():
    toy = enable(Toy(), predictor="reuse", error_budget=1e3, max_consecutive=1, start_fraction=0.0)
    denoise(toy)
    cached = denoise(toy)
    decisions = taocache.stats(toy).branches["cond"].decisions
    predicted = [i for i, d in enumerate(decisions) if d == "P"]
    assert predicted
    for i in predicted:
        assert torch.equal(cached[i], cached[i - 1])


def test_geometric_is_never_worse_than_linear_on_its_calibrated_trajectory():
    errors = {}
    for predictor in ("geometric", "linear", "reuse"):
        toy = enable(Toy(curvature=3.0), predictor=predictor, error_budget=1e3, max_consecutive=1,
                     start_fraction=0.2)
        full = denoise(toy)
        cached = denoise(toy)
        errors[predictor] = (cached - full).norm().item()
        taocache.disable(toy)
    assert errors["geometric"] <= errors["linear"] + 1e-5
    assert errors["geometric"] < errors["reuse"]


def test_error_budget_and_start_control_how_much_is_predicted():
    counts = {}
    for budget in (1e-4, 0.05, 1e3):
        toy = enable(Toy(curvature=3.0), error_budget=budget, max_consecutive=3)
        denoise(toy)
        denoise(toy)
        counts[budget] = taocache.stats(toy).predicted
    assert counts[1e-4] < counts[0.05] <= counts[1e3]
    late = enable(Toy(curvature=3.0), error_budget=1e3, max_consecutive=3, start_fraction=0.8)
    denoise(late)
    denoise(late)
    assert 0 < taocache.stats(late).predicted < counts[1e3]


def test_batch_decides_on_the_worst_sample():
    def predicted(batch, jitter):
        toy = enable(Toy(batch=batch, jitter=jitter), error_budget=0.02, max_consecutive=2)
        denoise(toy, batch=batch)
        denoise(toy, batch=batch)
        return taocache.stats(toy).predicted

    smooth = predicted(2, 0.0)
    mixed = predicted(2, 0.5)  # second sample jitters
    assert smooth > 0 and mixed < smooth


def test_separate_guidance_calls_decide_together():
    from diffusers.models.cache_utils import CacheMixin

    class TwoBranchToy(Toy, CacheMixin):
        """Row 0 of the toy's batch for the "cond" pass (smooth), row 1 for "uncond" (jittery)."""

        row = 0

        def forward(self, hidden_states, timestep, return_dict=False):
            return (super().forward(hidden_states, timestep)[0][self.row:self.row + 1],)

    toy = TwoBranchToy(batch=2, jitter=0.5)
    enable(toy, error_budget=0.02, max_consecutive=2, start_fraction=0.0)
    x = torch.zeros(1, 4, 6)
    for _ in range(2):
        for t in timesteps():
            for name, row in (("cond", 0), ("uncond", 1)):
                toy.row = row
                with toy.cache_context(name):
                    toy(x, torch.tensor(t))
    record = taocache.stats(toy)
    cond, uncond = record.branches["cond"].decisions, record.branches["uncond"].decisions
    assert cond == uncond  # the jittery branch holds the smooth one back
    smooth_alone = enable(Toy(batch=1), error_budget=0.02, max_consecutive=2, start_fraction=0.0)
    denoise(smooth_alone)
    denoise(smooth_alone)
    assert taocache.stats(smooth_alone).predicted > cond.count("P")


def test_non_finite_prediction_is_replaced_by_a_computed_call():
    toy = enable(Toy(), predictor="linear", error_budget=1e30, max_consecutive=1, start_fraction=0.0)
    denoise(toy)
    toy.jump_below = 0.5  # outputs near float32's maximum: extrapolating them overflows
    out = denoise(toy)
    record = taocache.stats(toy)
    assert torch.isfinite(out).all()
    assert any("non-finite" in note for note in record.notes)


@pytest.mark.parametrize("returns", ["tensor", "tuple", "sample"])
def test_predicted_outputs_keep_the_output_type(returns):
    toy = enable(Toy(returns=returns), error_budget=1e3, start_fraction=0.0)
    denoise(toy)
    x = torch.zeros(1, 4, 6)
    kinds = set()
    for t in timesteps():
        kinds.add(type(toy(x, torch.tensor(t))).__name__)
    assert taocache.stats(toy).predicted > 0 and len(kinds) == 1


def test_unsupported_output_is_a_type_error():
    toy = enable(Toy(returns="dict"))
    with pytest.raises(TypeError, match="tensor, a tuple"):
        denoise(toy)


def test_other_step_count_is_resampled_and_logged(caplog):
    toy = enable(Toy(curvature=1.0), error_budget=1e3)
    full = denoise(toy, steps=STEPS)
    with caplog.at_level(logging.INFO, logger="taocache"):
        denoise(toy, steps=12)  # unknown schedule for a bare module: learned, computed in full
        short = denoise(toy, steps=12)
    assert "resampled to 12 steps" in caplog.text
    assert taocache.stats(toy).predicted > 0 and short.shape[0] == 12
    assert full.shape[0] == STEPS


def _hook(module):
    return module._diffusers_hook.get_hook("taocache")


def _recorded_calibration(steps):
    toy = enable(Toy(curvature=1.0))
    denoise(toy, steps=steps)
    denoise(toy, steps=steps)  # ends the recording call
    return _hook(toy).calibrations[0]


def test_a_calibration_of_at_least_fifty_steps_is_preferred_for_shorter_runs(caplog):
    coarse, fine, finer = (_recorded_calibration(n) for n in (12, 60, 80))
    assert (coarse.steps, fine.steps, finer.steps) == (12, 60, 80)
    runs = {}
    for name, calibrations, steps in [
        ("short", [coarse, finer, fine], 12),  # the finest nearby wins over the exact coarse one
        ("exact", [finer, coarse, fine], 60),
        ("only coarse", [coarse], 16),
    ]:
        toy = enable(Toy(curvature=1.0), calibration=None, auto_calibrate=False)
        _hook(toy).calibrations = list(calibrations)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="taocache"):
            denoise(toy, steps=steps)  # learns the schedule of a bare module
            denoise(toy, steps=steps)
        assert taocache.stats(toy).predicted > 0
        runs[name] = caplog.text
    assert "calibration for 60 steps resampled to 12 steps" in runs["short"]
    assert "resampled" not in runs["exact"]
    assert "calibration for 12 steps resampled to 16 steps" in runs["only coarse"]


def test_repeated_timestep_without_context_is_computed():
    toy = enable(Toy(), error_budget=1e3, start_fraction=0.0)
    x = torch.zeros(1, 4, 6)
    for _ in range(2):
        for t in timesteps():
            toy(x, torch.tensor(t))
            toy(x, torch.tensor(t))  # a second guidance pass without its own cache context
    record = taocache.stats(toy)
    assert record.calls == 2 * STEPS and record.computed > STEPS
    assert any("same timestep" in note for note in record.notes)


def test_disable_restores_the_exact_forward():
    toy = Toy(curvature=2.0)
    reference = denoise(toy)
    forward = toy.forward
    enable(toy, error_budget=1e3)
    denoise(toy)
    assert not torch.equal(denoise(toy), reference)
    taocache.disable(toy)
    assert torch.equal(denoise(toy), reference)
    assert toy.forward == forward


def test_compiled_module_keeps_predicting():
    toy = enable(Toy(curvature=2.0), error_budget=1e3)
    denoise(toy)
    eager = denoise(toy)
    eager_decisions = taocache.stats(toy).branches["cond"].decisions
    compiled = torch.compile(toy, backend="eager")
    out = denoise(compiled)
    assert taocache.stats(toy).branches["cond"].decisions == eager_decisions
    assert torch.allclose(out, eager)


def test_no_memory_growth_across_fifty_calls():
    toy = enable(Toy(), error_budget=1e3)

    def live_tensors():
        gc.collect()
        return sum(1 for o in gc.get_objects() if torch.is_tensor(o))

    for _ in range(5):
        denoise(toy)
    before = live_tensors()
    for _ in range(45):
        denoise(toy)
    assert live_tensors() <= before


def test_weighing_by_step_size_moves_predictions_to_short_steps():
    """The toy's steps shrink towards the end: weighed, the long early steps are predicted less."""

    def predicted_steps(weigh, schedule=None):
        toy = enable(Toy(curvature=3.0), predictor="reuse", error_budget=0.1, max_consecutive=1,
                     start_fraction=0.0, weigh_by_step=weigh)
        denoise(toy, schedule=schedule)
        out = denoise(toy, schedule=schedule)
        decisions = taocache.stats(toy).branches["cond"].decisions
        return [i for i, d in enumerate(decisions) if d == "P"], out

    plain, _ = predicted_steps(False)
    weighed, _ = predicted_steps(True)
    assert plain and weighed
    assert sum(weighed) / len(weighed) > sum(plain) / len(plain)
    uniform = [999.0 * (1 - i / STEPS) for i in range(STEPS)]  # every step weighs 1: nothing changes
    plain_steps, plain_out = predicted_steps(False, uniform)
    weighed_steps, weighed_out = predicted_steps(True, uniform)
    assert plain_steps and plain_steps == weighed_steps and torch.equal(plain_out, weighed_out)


def test_weigh_by_step_must_be_a_bool():
    with pytest.raises(ValueError, match="weigh_by_step"):
        TaoCacheConfig(weigh_by_step="yes")
