"""TaoCache itself, through the package's public API and its backend.

The settings of a sweep entry are passed as they are to ``TaoCacheConfig``, so every field the config has
can be swept without touching this adapter. Unless a setting names its own ``calibration``, the adapter
calibrates once per benchmark on the calibration prompts (never on the evaluated ones) and hands that
calibration to every setting, with ``auto_calibrate`` off so that no measured call calibrates itself. The
calibration runs take the benchmark's call with at least ``MIN_CALIBRATION_STEPS`` steps, as a user should
calibrate: a 20-step benchmark uses a 50-step calibration, resampled. The one setting that is not a config
field, ``calibration_steps``, calibrates on that many steps instead (to measure what the step count does).
"""

from __future__ import annotations

from dataclasses import replace

from ... import api
from ...taocache.calibration import DEFAULT_HORIZON, calibration_steps_for
from ...taocache.config import TaoCacheConfig
from .base import BenchContext, CacheMethod


class TaoCache(CacheMethod):
    name = "taocache"
    description = (
        "TaoCache: predicts the denoiser's output on late steps from the trend of its recent outputs, "
        "calibrated on full runs of the calibration prompts (settings are TaoCacheConfig fields)"
    )

    def __init__(self, **settings):
        # Any TaoCacheConfig field is a setting; bad settings fail here, when the sweep is read.
        self.settings = dict(settings)
        self.given = dict(settings)
        self.series = self.name
        self.calibration_steps = settings.pop("calibration_steps", None)
        if self.calibration_steps is not None and (
            not isinstance(self.calibration_steps, int)
            or isinstance(self.calibration_steps, bool)
            or self.calibration_steps < 2
        ):
            raise ValueError(
                f"method 'taocache': calibration_steps={self.calibration_steps!r} must be an integer >= 2"
            )
        try:
            self._config = TaoCacheConfig(**settings)
        except TypeError as err:
            raise ValueError(f"method 'taocache': {err} (settings are TaoCacheConfig fields)") from err

    def prepare(self, bench: BenchContext) -> dict:
        if "calibration" in self.settings:
            return {"source": str(self.settings["calibration"])}
        steps = self.calibration_steps or calibration_steps_for(bench.call["num_inference_steps"])
        horizon = max(DEFAULT_HORIZON, self._config.max_consecutive)
        key = ("taocache-calibration", steps, horizon, tuple(bench.calibration_prompts), bench.calibration_seed)
        if key not in bench.shared:
            bench.shared[key] = api.calibrate(
                bench.pipe,
                list(bench.calibration_prompts),
                call_kwargs={**bench.call, "num_inference_steps": steps},
                seed=bench.calibration_seed,
                horizon=horizon,
                save=False,
                progress=False,
            )
        self._config = replace(self._config, calibration=bench.shared[key], auto_calibrate=False)
        return {"prompts": list(bench.calibration_prompts), "seed": bench.calibration_seed, "steps": steps,
                "horizon": horizon}

    def config(self, pipe, call):
        return self._config
