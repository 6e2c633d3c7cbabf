"""What a benchmarked method is: one small adapter class per method.

An adapter turns a method's settings into changes of a pipeline (a cache on its denoisers, or different call
arguments) and takes them off again. The harness never looks inside a method: it measures every one of them
from the outside (see :mod:`taocache.bench.probe`). A cache's adapter is a :class:`CacheMethod`: it only says
how its settings make the cache's config, and the cache goes on and off, and reports, through
``taocache.enable`` / ``disable`` and the cache's backend in :mod:`taocache.registry`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from ... import api, registry


class Unsupported(Exception):
    """The method cannot run on this pipeline or in this build; the record says why instead of a number."""


@dataclass
class BenchContext:
    """What a method may use to prepare itself (e.g. a calibration run) before its measured runs.

    ``run(prompt, seed, call)`` runs the pipeline once, unmeasured, and returns its output frames
    (calibration prompt ``n`` is run with seed ``calibration_seed + n``);
    ``shared`` lives as long as the benchmark, so settings of one method can share one calibration.
    """

    pipe: object
    call: dict
    calibration_prompts: list[str]
    calibration_seed: int
    run: Callable
    shared: dict = field(default_factory=dict)


class Method:
    """Base of every adapter. Subclasses set ``name``, ``description`` and ``defaults`` (their settings).

    Settings are validated on construction: an unknown name raises ``ValueError`` listing the known ones.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    defaults: ClassVar[dict] = {}
    #: True for methods whose changes go into the call arguments only (no hooks)
    changes_call_only: ClassVar[bool] = False
    #: the line a setting belongs to in charts and matched tables (a sweep entry may name its own)
    series: str = ""
    #: how the setting was chosen (a sweep entry's ``chosen``; the report states it)
    chosen: str = ""

    def __init__(self, **settings):
        unknown = sorted(set(settings) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"method {self.name!r} has no setting(s) {unknown}; its settings are "
                f"{sorted(self.defaults) or 'none'}"
            )
        self.settings = {**self.defaults, **settings}
        self.given = dict(settings)
        self.series = self.name
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` for settings out of range."""

    @property
    def label(self) -> str:
        """A short name of this method and setting for tables and charts."""
        if not self.given:
            return self.name
        return self.name + " " + " ".join(f"{k}={v}" for k, v in sorted(self.given.items()))

    def identity(self) -> dict:
        """What makes two runs of this method the same run (for resume keys)."""
        return {"method": self.name, "settings": self.settings}

    def refuse(self, calls_per_step: int) -> str | None:
        """Why the method cannot be measured on a pipeline making ``calls_per_step`` denoiser calls a step
        (2 when the guidance branches are separate calls), or None. The run is recorded as unsupported."""
        return None

    def caveats(self, calls_per_step: int) -> list[str]:
        """Notes every record of this method carries on such a pipeline (known limits of a peer)."""
        return []

    def prepare(self, bench: BenchContext) -> dict:
        """One-off work before the measured runs (calibration); returns what to record about it."""
        return {}

    def call_overrides(self, call: dict) -> dict:
        """Changes to the pipeline call arguments."""
        return {}

    def enable(self, pipe, call: dict) -> None:
        """Put the method on ``pipe`` (raise :class:`Unsupported` if it cannot)."""

    def disable(self, pipe) -> None:
        """Take the method off ``pipe``, leaving it exactly as before :meth:`enable`."""

    def stats(self, pipe) -> dict | None:
        """What the method says about its last call itself, if anything (kept beside the probe's count)."""
        return None


class CacheMethod(Method):
    """A cache of :mod:`taocache.registry` as a benchmarked method: :meth:`config` makes its config from the
    settings; enabling, disabling and its own report go through the cache's backend."""

    #: the config of the run in progress (set by :meth:`enable`)
    enabled_config = None

    def config(self, pipe, call: dict):
        """The cache config for a run of ``pipe`` with ``call``."""
        raise NotImplementedError

    def enable(self, pipe, call):
        self.enabled_config = self.config(pipe, call)
        enable_caches(pipe, [self.enabled_config])

    def disable(self, pipe):
        api.disable(pipe)

    def stats(self, pipe):
        if self.enabled_config is None:
            return None
        report = registry.backend_for(self.enabled_config).stats(pipe)
        return report.as_dict() if hasattr(report, "as_dict") else report


def enable_caches(pipe, configs: list) -> None:
    """``taocache.enable(pipe, configs)``; a target that cannot carry a cache makes the run unsupported."""
    try:
        api.enable(pipe, configs)
    except TypeError as err:
        raise Unsupported(str(err)) from err


def backend_method(backend: registry.CacheBackend) -> type[CacheMethod]:
    """An adapter for a cache with no adapter of its own: its settings are its config's fields."""
    defaults = {
        f.name: f.default for f in dataclasses.fields(backend.config_type)
        if f.default is not dataclasses.MISSING
    }

    class Generic(CacheMethod):
        name = backend.name
        description = f"{backend.label} (its settings are {backend.config_type.__name__} fields)"

        def validate(self):
            self._config = backend.config_type(**self.given)

        def config(self, pipe, call):
            return self._config

    Generic.defaults = defaults
    Generic.__name__ = Generic.__qualname__ = f"{backend.label}Method"
    return Generic
