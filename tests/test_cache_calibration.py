"""Calibration statistics, their JSON file (round trip, corrupt file, no overwrite) and step-count resampling."""

import json
import math

import pytest
import torch

from taocache.core.fingerprint import fingerprint
from taocache.taocache.calibration import CalibratedDenoiser, Calibration, StepStats
from taocache.taocache.recorder import CalibrationRecorder


def record_trajectory(outputs, timesteps, horizon=2, branches=None):
    recorder = CalibrationRecorder(horizon)
    branches = branches or [("cond", slice(0, outputs[0].shape[0]))]
    for step, (out, t) in enumerate(zip(outputs, timesteps)):
        recorder.observe("cond", step, t, out, branches)
    recorder.end_call()
    return recorder


def linear_trajectory(timesteps, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(batch, 3, 5, generator=g), torch.randn(batch, 3, 5, generator=g)
    return [a + b * (t / 1000) for t in timesteps]


def test_recorder_measures_cos_ratio_and_gain_at_every_gap():
    timesteps = [999.0, 900.0, 700.0, 650.0, 400.0, 300.0, 100.0]
    recorder = record_trajectory(linear_trajectory(timesteps), timesteps)
    entry = recorder.build("Toy", "abc", len(timesteps))
    table = entry.branches["cond"][(2, 1)]  # predict step i from out_{i-1} and D = out_{i-1} - out_{i-3}
    for i in range(3, len(timesteps)):
        expected = (timesteps[i] - timesteps[i - 1]) / (timesteps[i - 1] - timesteps[i - 3])
        assert table["cos_mean"][i] == pytest.approx(1.0, abs=1e-4)
        assert table["ratio_mean"][i] == pytest.approx(abs(expected), rel=1e-3)
        assert table["gain_mean"][i] == pytest.approx(expected, rel=1e-3)
        assert table["gain_std"][i] == pytest.approx(0.0, abs=1e-6)
    assert table["cos_mean"][2] is None  # step 2 has no out_{-1}
    assert recorder.samples == 1


def test_spread_across_samples_and_branch_halves():
    timesteps = [999.0, 800.0, 600.0, 400.0, 200.0]
    outs = linear_trajectory(timesteps, batch=4)
    g = torch.Generator().manual_seed(3)
    noise = [torch.randn(4, 3, 5, generator=g) * 0.3 for _ in timesteps]
    outs = [o + torch.cat([torch.zeros(2, 3, 5), n[2:]]) for o, n in zip(outs, noise)]  # rows 2-3 jitter
    branches = [("uncond", slice(0, 2)), ("cond", slice(2, 4))]
    entry = record_trajectory(outs, timesteps, branches=branches).build("Toy", "abc", len(timesteps))
    smooth, noisy = entry.branches["uncond"][(1, 1)], entry.branches["cond"][(1, 1)]
    assert smooth["cos_std"][3] == pytest.approx(0.0, abs=1e-4) and smooth["cos_mean"][3] > 0.999
    assert noisy["cos_mean"][3] < 0.99 and noisy["ratio_std"][3] > 0.0


def test_expected_error_is_zero_for_the_exact_coefficient_and_grows_away_from_it():
    stats = StepStats(cos_mean=1.0, cos_std=0.0, ratio_mean=0.5, ratio_std=0.0, gain_mean=0.5, gain_std=0.0)
    assert stats.expected_error(0.5) == pytest.approx(0.0, abs=1e-9)
    assert stats.expected_error(0.0) == pytest.approx(0.5)  # reuse misses the whole delta
    spread = StepStats(0.2, 0.3, 1.0, 0.5, 0.2, 0.4)
    best = spread.expected_error(spread.gain_mean)
    assert best < spread.expected_error(1.0) and best < spread.expected_error(0.0)
    assert best == pytest.approx(math.sqrt(1.0 + 0.25 - 0.04))


def make_calibration(steps=7, scheduler="DDIMScheduler"):
    timesteps = [1000.0 - 1000.0 * i / steps for i in range(steps)]
    recorder = record_trajectory(linear_trajectory(timesteps), timesteps, horizon=2)
    entry = recorder.build("Toy", "abc123", steps)
    return Calibration(scheduler, steps, timesteps, 2, recorder.samples, {"denoiser": entry})


def test_json_round_trip_and_no_overwrite(tmp_path):
    calibration = make_calibration()
    path = calibration.save(tmp_path / calibration.file_name())
    assert path.name == "Toy-abc123-DDIMScheduler-7.json"
    loaded = Calibration.load(path)
    assert loaded.to_dict() == calibration.to_dict()
    assert loaded.source == str(path)
    with pytest.raises(FileExistsError, match="overwrite"):
        calibration.save(path)
    calibration.save(path, overwrite=True)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("text", ["{not json", json.dumps({"format": "other"}), json.dumps({"format": "taocache-calibration", "version": 1})])
def test_corrupt_file_error_names_the_file(tmp_path, text):
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="broken.json"):
        Calibration.load(path)


def _edited(data, change):
    data = json.loads(json.dumps(data))
    change(data)
    return data


def _first_table(data):
    branches = next(iter(data["denoisers"].values()))["branches"]
    return next(iter(next(iter(branches.values())).values()))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(horizon=0), "horizon=0"),
        (lambda d: d.update(horizon=-3), "horizon=-3"),
        (lambda d: d.update(steps=12.7), "steps=12.7"),
        (lambda d: _first_table(d)["gain_mean"].__setitem__(3, "abc"), "not finite numbers"),
        (lambda d: _first_table(d)["cos_mean"].__setitem__(3, float("nan")), "not finite numbers"),
    ],
)
def test_values_out_of_range_in_a_file_name_the_file(tmp_path, change, message):
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(_edited(make_calibration().to_dict(), change)))
    with pytest.raises(ValueError, match=message) as raised:
        Calibration.load(path)
    assert "edited.json" in str(raised.value)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        Calibration.load(tmp_path / "nothing.json")


def test_resampling_to_another_step_count_rescales_ratio_and_gain():
    calibration = make_calibration(steps=21)
    entry = CalibratedDenoiser(calibration, calibration.denoisers["denoiser"])
    same = entry.stats("cond", 10, 1, 1, 21, runtime_coefficient=1.0)
    assert same.gain_mean == pytest.approx(1.0, rel=1e-3)  # uniform schedule: one step continues D exactly
    # 11 steps: step 5 is calibrated step 10; a delta twice as long relative to D doubles ratio and gain
    resampled = entry.stats("cond", 5, 1, 1, 11, runtime_coefficient=2.0)
    assert resampled.gain_mean == pytest.approx(2.0 * same.gain_mean, rel=1e-3)
    assert resampled.ratio_mean == pytest.approx(2.0 * same.ratio_mean, rel=1e-3)
    assert resampled.cos_mean == pytest.approx(same.cos_mean)
    assert entry.stats("cond", 1, 1, 1, 21, 1.0) is None  # no delta before step 1
    assert entry.stats("uncond", 10, 1, 1, 21, 1.0) is None  # branch not calibrated


def test_entry_matching_by_class_and_fingerprint():
    calibration = make_calibration()
    assert calibration.entry_for("transformer", "Toy", "abc123") is not None  # the one entry of that kind
    assert calibration.entry_for("denoiser", "Toy", "other") is None
    assert calibration.entry_for("denoiser", "Other", "abc123") is None


def test_fingerprint_follows_architecture_not_weights():
    a, b = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(torch.nn.Linear(3, 5))
