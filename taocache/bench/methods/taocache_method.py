"""TaoCache itself, through the package's public API: ``taocache.enable / disable / stats / calibrate``.

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

from .base import BenchContext, Method, Unsupported, register_method


def _api():
    import taocache

    missing = [
        name
        for name in ("enable", "disable", "stats", "calibrate", "TaoCacheConfig")
        if not hasattr(taocache, name)
    ]
    if missing:
        raise Unsupported(f"this build of taocache lacks {missing}: the TaoCache hook is not available")
    return taocache


@register_method
class TaoCache(Method):
    name = "taocache"
    description = (
        "TaoCache: predicts the denoiser's output on late steps from the trend of its recent outputs, "
        "calibrated on full runs of the calibration prompts (settings are TaoCacheConfig fields)"
    )

    def __init__(self, **settings):
        # Any TaoCacheConfig field is a setting. With the hook present, bad settings fail here, when the
        # sweep is read; without it, every run is recorded as unsupported.
        self.settings = dict(settings)
        self.given = dict(settings)
        self.series = self.name
        self.config = None
        self.calibration_steps = settings.pop("calibration_steps", None)
        if self.calibration_steps is not None and (
            not isinstance(self.calibration_steps, int)
            or isinstance(self.calibration_steps, bool)
            or self.calibration_steps < 2
        ):
            raise ValueError(
                f"method 'taocache': calibration_steps={self.calibration_steps!r} must be an integer >= 2"
            )
        self.fields = settings  # the TaoCacheConfig fields
        try:
            taocache = _api()
        except Unsupported:
            return
        try:
            self.config = taocache.TaoCacheConfig(**self.fields)
        except TypeError as err:
            raise ValueError(f"method 'taocache': {err} (settings are TaoCacheConfig fields)") from err

    def prepare(self, bench: BenchContext) -> dict:
        taocache = _api()
        if self.config is None:
            self.config = taocache.TaoCacheConfig(**self.fields)
        if "calibration" in self.settings:
            return {"source": str(self.settings["calibration"])}
        from taocache.cache.calibration import DEFAULT_HORIZON, calibration_steps_for

        steps = self.calibration_steps or calibration_steps_for(bench.call["num_inference_steps"])
        horizon = max(DEFAULT_HORIZON, self.config.max_consecutive)
        key = (
            "taocache-calibration",
            steps,
            horizon,
            tuple(bench.calibration_prompts),
            bench.calibration_seed,
        )
        if key not in bench.shared:
            bench.shared[key] = taocache.calibrate(
                bench.pipe,
                list(bench.calibration_prompts),
                call_kwargs={**bench.call, "num_inference_steps": steps},
                seed=bench.calibration_seed,
                horizon=horizon,
                save=False,
                progress=False,
            )
        self.config = replace(self.config, calibration=bench.shared[key], auto_calibrate=False)
        return {
            "prompts": list(bench.calibration_prompts),
            "seed": bench.calibration_seed,
            "steps": steps,
            "horizon": horizon,
        }

    def enable(self, pipe, call):
        taocache = _api()
        if self.config is None:
            self.config = taocache.TaoCacheConfig(**self.fields)
        taocache.enable(pipe, self.config)

    def disable(self, pipe):
        _api().disable(pipe)

    def stats(self, pipe):
        value = _api().stats(pipe)
        return value.as_dict() if hasattr(value, "as_dict") else value
