"""TaoCacheConfig: defaults construct, every invalid field is rejected with its name and accepted range."""

import numpy as np
import pytest

from taocache.taocache.config import PREDICTORS, TaoCacheConfig


def test_defaults_are_valid_and_documented():
    config = TaoCacheConfig()
    assert config.predictor in PREDICTORS
    doc = TaoCacheConfig.__doc__
    for name in TaoCacheConfig.__dataclass_fields__:
        assert f"{name}:" in doc, f"field {name} is not documented"


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("predictor", "cubic", "geometric"),
        ("start_fraction", 1.5, "[0, 1]"),
        ("start_fraction", float("nan"), "[0, 1]"),
        ("error_budget", 0.0, "> 0"),
        ("error_budget", float("inf"), "> 0"),
        ("max_consecutive", 0, "[1, 8]"),
        ("max_consecutive", 9, "[1, 8]"),
        ("max_consecutive", 2.0, "[1, 8]"),
        ("final_steps", 0, ">= 1"),
        ("calibration", 3, "path"),
        ("calibration_dir", 3, "folder"),
        ("auto_calibrate", "yes", "True or False"),
        ("batched_guidance", 1, "None, True or False"),
    ],
)
def test_invalid_values_name_the_field(field, value, words):
    with pytest.raises(ValueError) as err:
        TaoCacheConfig(**{field: value})
    assert field in str(err.value) and words in str(err.value)


@pytest.mark.parametrize("fraction, steps, start", [(0.2, 50, 10), (0.0, 50, 0), (1.0, 20, 20), (0.25, 10, 3)])
def test_start_step_rounds_up(fraction, steps, start):
    assert TaoCacheConfig(start_fraction=fraction).start_step(steps) == start


def test_numpy_scalars_are_numbers():
    config = TaoCacheConfig(start_fraction=np.float32(0.25), error_budget=np.float64(0.1),
                            max_consecutive=np.int64(2), final_steps=np.int32(1))
    assert (config.start_fraction, config.max_consecutive) == (0.25, 2)
    assert type(config.start_fraction) is float and type(config.max_consecutive) is int
    with pytest.raises(ValueError, match="max_consecutive"):
        TaoCacheConfig(max_consecutive=np.float64(2.5))
