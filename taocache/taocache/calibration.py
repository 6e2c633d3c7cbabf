"""TaoCache calibration: statistics of consecutive output deltas measured on full runs, and their JSON file.

For a step ``i`` predicted ``m`` steps after the last computed step ``j = i - m``, whose own delta was taken
over a gap of ``g`` steps (``D = out_j - out_{j-g}``), the calibration holds, per guidance branch, the mean and
spread across the calibration samples of

    cos   = cos(out_i - out_j, D)                 the cosine of the two deltas
    ratio = ||out_i - out_j|| / ||D||             their norm ratio
    gain  = ratio * cos                           the least-squares coefficient k in  out_i ~ out_j + k * D

The statistics are kept for every gap and horizon the skip rule can meet (``m <= horizon``,
``g <= horizon + 1``), so they describe the deltas the predictor actually extrapolates, not only one-step ones.
A calibration is keyed by the denoiser's class and a fingerprint of its config, the scheduler's class and the
number of steps; used with another number of steps it is resampled (see :meth:`CalibratedDenoiser.stats`),
which is also how runs shorter than :data:`MIN_CALIBRATION_STEPS` are best served.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.data import user_cache_dir
from ..results import atomic_write_text, refuse_overwrite

logger = logging.getLogger(__name__)

FORMAT = "taocache-calibration"
VERSION = 1
DEFAULT_HORIZON = 3
#: Calibrations are best measured on runs of at least this many steps and resampled for shorter runs. On a
#: coarse schedule the solver's step-to-step oscillation dominates the deltas (at 20 steps most one-step
#: cosines of the embedded video model are negative), and statistics of that oscillation mislead a run whose
#: skipped steps leave it; the 50-step calibration resampled to 20 steps predicted better there
#: (docs/algorithm.md, section 6.1).
MIN_CALIBRATION_STEPS = 50


def calibration_steps_for(run_steps: int) -> int:
    """How many steps to calibrate a run of ``run_steps`` steps on: its own count, at least
    :data:`MIN_CALIBRATION_STEPS`."""
    return max(int(run_steps), MIN_CALIBRATION_STEPS)


FIELDS = ("cos_mean", "cos_std", "ratio_mean", "ratio_std", "gain_mean", "gain_std")
TINY = 1e-12


def default_directory() -> Path:
    """``$TAOCACHE_CALIBRATION_DIR`` or the user cache's ``calibration`` folder (``~/.cache/taocache``)."""
    env = os.environ.get("TAOCACHE_CALIBRATION_DIR")
    return Path(env) if env else user_cache_dir("calibration")


def shipped_directory() -> Path:
    """The calibrations that ship with the package (for the embedded models)."""
    from importlib import resources

    return Path(str(resources.files(__package__))) / "calibrations"


@dataclass(frozen=True)
class StepStats:
    """Calibrated statistics for one (branch, step, gap, horizon)."""

    cos_mean: float
    cos_std: float
    ratio_mean: float
    ratio_std: float
    gain_mean: float
    gain_std: float

    def scaled(self, factor: float) -> StepStats:
        """The statistics for deltas ``factor`` times longer relative to ``D`` (cosines are unchanged)."""
        f = abs(factor)
        return StepStats(
            self.cos_mean,
            self.cos_std,
            self.ratio_mean * f,
            self.ratio_std * f,
            self.gain_mean * factor,
            self.gain_std * f,
        )

    def expected_error(self, coefficient: float) -> float:
        """Root-mean-square of ``||(out_i - out_j) - coefficient * D|| / ||D||`` over the calibration samples.

        Per sample the squared error is ``ratio^2 - 2 * coefficient * gain + coefficient^2``; its mean needs
        only the first two moments of the ratio and the mean gain.
        """
        second_moment = self.ratio_mean**2 + self.ratio_std**2
        return math.sqrt(max(second_moment - 2.0 * coefficient * self.gain_mean + coefficient**2, 0.0))


@dataclass
class DenoiserCalibration:
    """One denoiser's statistics: ``branches[branch][(gap, horizon)][field]`` is a list over steps (None: unset)."""

    denoiser: str
    fingerprint: str
    branches: dict[str, dict[tuple[int, int], dict[str, list]]]

    def to_dict(self) -> dict:
        return {
            "denoiser": self.denoiser,
            "fingerprint": self.fingerprint,
            "branches": {
                branch: {f"g{g}m{m}": table for (g, m), table in sorted(pairs.items())}
                for branch, pairs in self.branches.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict, steps: int) -> DenoiserCalibration:
        branches = {}
        for branch, pairs in data["branches"].items():
            branches[branch] = {}
            for key, table in pairs.items():
                gap, horizon = key[1:].split("m")
                missing = [f for f in FIELDS if f not in table or len(table[f]) != steps]
                if missing:
                    raise ValueError(f"branch {branch!r} pair {key!r} lacks {steps}-step lists for {missing}")
                bad = [f for f in FIELDS if not all(v is None or _finite_number(v) for v in table[f])]
                if bad:
                    raise ValueError(f"branch {branch!r} pair {key!r}: {bad} hold values that are not finite numbers")
                branches[branch][(int(gap), int(horizon))] = {f: list(table[f]) for f in FIELDS}
        return cls(str(data["denoiser"]), str(data["fingerprint"]), branches)


@dataclass
class Calibration:
    """Calibrated delta statistics of one pipeline's denoisers (keyed by component name) for one schedule."""

    scheduler: str
    steps: int
    timesteps: list[float]
    horizon: int
    samples: int
    denoisers: dict[str, DenoiserCalibration]
    created: str = field(default_factory=lambda: datetime.datetime.now().isoformat(timespec="seconds"))
    source: str = "recorded in this process"

    # ------------------------------------------------------------------------------------------ the file

    def file_name(self) -> str:
        """``<denoiser class>-<fingerprint>-<scheduler class>-<steps>.json`` of the first denoiser."""
        first = next(iter(self.denoisers.values()))
        return f"{first.denoiser}-{first.fingerprint}-{self.scheduler}-{self.steps}.json"

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "created": self.created,
            "scheduler": self.scheduler,
            "steps": self.steps,
            "timesteps": [round(float(t), 6) for t in self.timesteps],
            "horizon": self.horizon,
            "samples": self.samples,
            "statistics": list(FIELDS),
            "denoisers": {name: entry.to_dict() for name, entry in self.denoisers.items()},
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "") -> Calibration:
        if data.get("format") != FORMAT:
            raise ValueError(
                f"not a TaoCache calibration (format {data.get('format')!r}, expected {FORMAT!r})"
            )
        if data.get("version") != VERSION:
            raise ValueError(
                f"calibration version {data.get('version')!r} is not supported (expected {VERSION})"
            )
        steps, horizon = data["steps"], data["horizon"]
        if not _whole_number(steps) or steps < 1:
            raise ValueError(f"steps={steps!r} must be a whole number >= 1")
        if not _whole_number(horizon) or not 1 <= horizon <= 8:
            raise ValueError(f"horizon={horizon!r} must be a whole number in [1, 8]")
        timesteps = [float(t) for t in data["timesteps"]]
        if len(timesteps) != steps or not all(math.isfinite(t) for t in timesteps):
            raise ValueError(f"{len(timesteps)} timesteps for {steps} steps, or some not finite")
        denoisers = {name: DenoiserCalibration.from_dict(d, steps) for name, d in data["denoisers"].items()}
        if not denoisers:
            raise ValueError("no denoiser in the calibration")
        return cls(
            scheduler=str(data["scheduler"]),
            steps=steps,
            timesteps=timesteps,
            horizon=horizon,
            samples=int(data["samples"]),
            denoisers=denoisers,
            created=str(data.get("created", "")),
            source=source,
        )

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the JSON file atomically; refuses to replace an existing file unless ``overwrite``."""
        path = refuse_overwrite(path, overwrite)
        atomic_write_text(path, json.dumps(self.to_dict(), separators=(",", ":")))
        self.source = str(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        """Read a calibration file; a missing, unreadable or malformed file raises an error naming it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"calibration file {path} does not exist")
        try:
            return cls.from_dict(json.loads(path.read_text()), source=str(path))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(
                f"calibration file {path} is corrupt or not a TaoCache calibration ({err}); delete it and "
                "recalibrate with `taocache calibrate` or taocache.calibrate(pipe, prompts)"
            ) from err

    # ------------------------------------------------------------------------------------------ matching

    def entry_for(self, component: str, denoiser: str, fingerprint: str) -> DenoiserCalibration | None:
        """The statistics of ``component``, else of the one denoiser of the same class and config."""
        entry = self.denoisers.get(component)
        if entry is not None and (entry.denoiser, entry.fingerprint) == (denoiser, fingerprint):
            return entry
        same = [e for e in self.denoisers.values() if (e.denoiser, e.fingerprint) == (denoiser, fingerprint)]
        return same[0] if len(same) == 1 else None

    def describe(self) -> str:
        kinds = ", ".join(
            f"{name}={e.denoiser} (config {e.fingerprint})" for name, e in self.denoisers.items()
        )
        return f"{kinds} with {self.scheduler}, {self.steps} steps"


def find_calibrations(directories, denoiser: str, fp: str, scheduler: str | None) -> list[Calibration]:
    """Every calibration file in ``directories`` for this denoiser (and scheduler, when known)."""
    found = []
    for directory in directories:
        for path in sorted(Path(directory).glob(f"{denoiser}-{fp}-*.json")):
            calibration = Calibration.load(path)
            if scheduler is None or calibration.scheduler == scheduler:
                found.append(calibration)
    return found


class CalibratedDenoiser:
    """A calibration's statistics for one denoiser, looked up for any number of steps."""

    def __init__(self, calibration: Calibration, entry: DenoiserCalibration):
        self.calibration = calibration
        self.entry = entry

    @property
    def horizon(self) -> int:
        return self.calibration.horizon

    def has_branch(self, branch: str) -> bool:
        return branch in self.entry.branches

    def stats(
        self, branch: str, step: int, gap: int, horizon: int, num_steps: int, runtime_coefficient: float
    ) -> StepStats | None:
        """Statistics for predicting ``step`` of a ``num_steps`` run, or None where none were measured.

        With another number of steps than calibrated, the nearest calibrated step at the same fraction of
        the run is used and ratio and gain are rescaled by how much longer the delta to predict is than
        ``D`` in this run (``runtime_coefficient``, the first-order coefficient in timestep) compared with the
        calibrated run. With the calibrated schedule the factor is 1.
        """
        tables = self.entry.branches.get(branch, {}).get((gap, horizon))
        if tables is None:
            return None
        n = self.calibration.steps
        source = step if num_steps == n else round(step * (n - 1) / max(num_steps - 1, 1))
        if source - horizon - gap < 0 or source >= n:
            return None
        values = [tables[f][source] for f in FIELDS]
        if any(v is None for v in values):
            return None
        stats = StepStats(*values)
        t = self.calibration.timesteps
        calibrated = _first_order(t[source], t[source - horizon], t[source - horizon - gap])
        if calibrated is None or not math.isfinite(runtime_coefficient):
            return stats
        return stats.scaled(runtime_coefficient / calibrated)


def _first_order(x_target: float, x_last: float, x_before: float) -> float | None:
    span = x_last - x_before
    return None if abs(span) < TINY else (x_target - x_last) / span


def first_order_coefficient(x_target, x_last, x_before, step, last_step, before_step) -> float:
    """How far to continue ``D = out_last - out_before`` to reach the target, linearly in timestep.

    Falls back to step indices when a timestep is unknown or two timesteps coincide.
    """
    if None not in (x_target, x_last, x_before):
        value = _first_order(x_target, x_last, x_before)
        if value is not None:
            return value
    return (step - last_step) / (last_step - before_step)


def _whole_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def round_statistic(value: float) -> float:
    return float(f"{value:.5g}")
