"""What a benchmarked method is: one small adapter class per method, kept in a registry by name.

An adapter turns a method's settings into changes of a pipeline (hooks on its denoiser, or different call
arguments) and takes them off again. The harness never looks inside a method: it measures every one of them
from the outside (see :mod:`taocache.bench.probe`). A new method (a further cache, or two stacked) is one
subclass with :func:`register_method` on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

METHODS: dict[str, type[Method]] = {}


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

    #: the line a setting belongs to in charts and matched tables (a sweep entry may name its own)
    series: str = ""

    @property
    def label(self) -> str:
        """A short name of this method and setting for tables and charts."""
        if not self.given:
            return self.name
        return self.name + " " + " ".join(f"{k}={v}" for k, v in sorted(self.given.items()))

    def identity(self) -> dict:
        """What makes two runs of this method the same run (for resume keys)."""
        return {"method": self.name, "settings": self.settings}

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


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator adding an adapter to :data:`METHODS`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    METHODS[cls.name] = cls
    return cls


def make_method(name: str, settings: dict | None = None, series: str | None = None) -> Method:
    """An adapter instance for ``name`` with ``settings``; ``series`` groups settings into one frontier."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; the methods are {sorted(METHODS)}")
    method = METHODS[name](**(settings or {}))
    method.series = series or name
    return method
