"""Sweep definitions (TOML under ``eval/sweeps/``) and prompt sets (text files under ``eval/prompts/``), both
package data in a wheel.

A sweep names the methods to run and, for each, the settings that trace its quality-versus-speed-up
frontier::

    description = "20-step frontier"
    [call]                      # changes to the recipe's call arguments (optional)
    num_inference_steps = 20
    [run]                       # defaults for the command line (optional)
    seeds = [0, 1]
    num_prompts = 16
    [[method]]
    name = "steps"
    settings = [{ steps = 13 }, { steps = 10 }]
    [[method]]
    name = "taocache"
    series = "taocache-linear"  # its own line in charts and tables (default: the method name)
    chosen = "how these settings were chosen"   # optional; the report states it
    settings = [{ predictor = "linear", error_budget = 0.2 }]
    [[method]]
    name = "magcache"
    grid = { threshold = [0.05, 0.1], max_skip_steps = [2, 4] }   # every combination

A prompt file has one prompt a line; blank lines and lines starting with ``#`` are ignored.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..core.data import data_path, data_root
from .methods import Method, make_method

DEFAULT_SWEEP = "default"


@dataclass
class Sweep:
    """A parsed sweep: the method settings to run, call changes and run defaults."""

    name: str
    description: str = ""
    call: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)
    methods: list[Method] = field(default_factory=list)

    def select(self, names: list[str] | None) -> Sweep:
        """Only the methods in ``names`` (all when None)."""
        if not names:
            return self
        known = {m.name for m in self.methods} | {m.series for m in self.methods}
        unknown = sorted(set(names) - known)
        if unknown:
            raise ValueError(f"--methods {unknown} are not in sweep {self.name!r}, which has {sorted(known)}")
        return Sweep(
            self.name,
            self.description,
            self.call,
            self.run,
            [m for m in self.methods if m.name in names or m.series in names],
        )


def _resolve(path: str | Path, folder: Path, suffix: str) -> Path:
    path = Path(path)
    for candidate in (path, data_root() / path, folder / path, folder / f"{path}{suffix}"):
        if candidate.is_file():
            return candidate
    available = ", ".join(sorted(p.stem for p in folder.glob(f"*{suffix}"))) or "none"
    raise FileNotFoundError(
        f"{path} not found (looked in ., {data_root()} and {folder}; available there: {available})"
    )


def _settings_of(entry: dict, where: str) -> list[dict]:
    if not isinstance(entry.get("settings", []), list):
        raise ValueError(f"{where}: settings must be a list of tables, e.g. settings = [{{ steps = 10 }}]")  # noqa: TRY004
    settings = list(entry.get("settings", []))
    grid = entry.get("grid")
    if grid is not None:
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise ValueError(f"{where}: grid must map each setting to a non-empty list of values")
        names = sorted(grid)
        settings += [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]
    if not settings:
        settings = [{}]
    if not all(isinstance(s, dict) for s in settings):
        raise ValueError(f"{where}: settings must be a list of tables, e.g. settings = [{{ steps = 10 }}]")
    return settings


def load_sweep(path: str | Path | None = None) -> Sweep:
    """Read a sweep by file path or by name under ``eval/sweeps/`` (default: ``default``)."""
    file = _resolve(path or DEFAULT_SWEEP, data_path("eval", "sweeps"), ".toml")
    try:
        data = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"sweep {file} is not valid TOML: {err}") from err
    unknown = sorted(set(data) - {"description", "call", "run", "method"})
    if unknown:
        raise ValueError(
            f"sweep {file}: unknown top-level key(s) {unknown}; known: description, call, run, method"
        )
    _check_tables(file, data)
    methods = []
    for number, entry in enumerate(data.get("method", []), 1):
        where = f"sweep {file}, method #{number}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be a [[method]] table")  # noqa: TRY004
        unknown = sorted(set(entry) - {"name", "series", "settings", "grid", "chosen"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known: name, series, settings, grid, chosen")
        if not isinstance(entry.get("name"), str):
            raise ValueError(f"{where} has no name (a string such as \"taocache\")")  # noqa: TRY004
        if entry["name"] == "full":
            raise ValueError(
                f"{where}: the full run is always run as the reference; leave it out of the sweep"
            )
        for settings in _settings_of(entry, where):
            try:
                methods.append(make_method(entry["name"], settings, entry.get("series")))
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from err
            methods[-1].chosen = str(entry.get("chosen", ""))
    if not methods:
        raise ValueError(f"sweep {file} defines no [[method]] entries")
    return Sweep(
        file.stem, data.get("description", ""), dict(data.get("call", {})), dict(data.get("run", {})), methods
    )


#: What a sweep's [run] table may hold, with the type of each value.
RUN_KEYS = {"prompts": str, "num_prompts": int, "seeds": list, "repeats": int}


def _check_tables(file: Path, data: dict) -> None:
    """Clear errors for a misspelt [run] key or a value of the wrong type (instead of one silently ignored)."""
    if not isinstance(data.get("call", {}), dict) or not isinstance(data.get("run", {}), dict):
        raise ValueError(f"sweep {file}: [call] and [run] must be tables")  # noqa: TRY004
    if not isinstance(data.get("method", []), list):
        raise ValueError(f"sweep {file}: methods are [[method]] tables")  # noqa: TRY004
    run = data.get("run", {})
    unknown = sorted(set(run) - set(RUN_KEYS))
    if unknown:
        raise ValueError(f"sweep {file}: unknown [run] key(s) {unknown}; known: {', '.join(RUN_KEYS)}")
    for key, kind in RUN_KEYS.items():
        value = run.get(key)
        if value is None:
            continue
        wrong = not isinstance(value, kind) or isinstance(value, bool)
        if key == "seeds":
            wrong = wrong or not value or not all(isinstance(s, int) and not isinstance(s, bool) for s in value)
        elif kind is int:
            wrong = wrong or value < 1
        if wrong:
            shown = "a list of whole numbers" if key == "seeds" else ("a whole number >= 1" if kind is int else "a string")
            raise ValueError(f"sweep {file}: [run] {key} = {value!r} must be {shown}")


def read_prompts(path: str | Path) -> list[str]:
    """The prompts in a prompt file (by path or by name under ``eval/prompts/``)."""
    file = _resolve(path, data_path("eval", "prompts"), ".txt")
    prompts = [line.strip() for line in file.read_text().splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"prompt file {file} has no prompts (one a line; # starts a comment)")
    return prompts


def world_prompts(kind: str = "video") -> list[str]:
    """The test captions of the sample world (never used for training nor for any choice): the default prompt
    set of a benchmark."""
    from ..world import scenes_of

    return [scene.caption for scene in scenes_of("test", kind == "video")]


def world_calibration_prompts(kind: str = "video", count: int = 4) -> list[str]:
    """Tune captions of the sample world, for calibration runs outside the evaluated (test) set."""
    from ..world import scenes_of

    return spread([scene.caption for scene in scenes_of("tune", kind == "video")], count)


def spread(items: list, count: int | None) -> list:
    """``count`` items spread evenly over ``items`` (all of them when count is None or too large)."""
    if count is None or count >= len(items):
        return list(items)
    if count < 1:
        raise ValueError(f"the number of prompts must be >= 1, got {count}")
    return [items[(i * len(items)) // count] for i in range(count)]
