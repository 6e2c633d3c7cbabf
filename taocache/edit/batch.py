"""Batches of edits from a TOML spec; one failing item is reported and the rest still run.

A spec names the images, prompts and settings of each edit (see ``samples/edits/world.toml``)::

    model = "tiny-t2i"              # optional: recipe name, recipe file, pipeline folder or hub id
    output_dir = "out"              # optional: where outputs go, relative to the spec file

    [defaults]                      # optional: settings shared by every item
    inversion = "null-text"

    [[edit]]
    image = "red_circle_left.png"   # relative to the spec file
    source = "a small red circle on the left on a dark background"
    target = "a small red circle on the right on a dark background"
    output = "red_circle_right.png" # relative to output_dir
    sweep_alpha = [0.4, 0.6, 0.8]   # optional, as are all EditConfig fields (alpha, steps_source, ...)

Relative paths (images, outputs, a model folder or recipe file) are read against the spec file's folder.
Settings apply in this order, later winning: the model's defaults, ``[defaults]``, the command line, the
item's own.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from tqdm.auto import tqdm

from .config import EditConfig
from .edit_file import FileEditReport, edit_file, parse_list

logger = logging.getLogger(__name__)

ITEM_KEYS = {"image", "source", "target", "output", "sweep_alpha", "sweep_steps_source"}
SETTING_KEYS = {f.name for f in fields(EditConfig)}


@dataclass
class BatchItem:
    """One edit of a spec, with its resolved paths and settings."""

    index: int
    image: Path
    source: str
    target: str
    output: Path
    settings: dict
    sweep_alpha: list | None = None
    sweep_steps_source: list | None = None


@dataclass
class BatchSpec:
    """A parsed spec: the model to load, and each item (or the error that made it unusable)."""

    path: Path
    model: str | None
    items: list[BatchItem] = field(default_factory=list)
    invalid: list[tuple[int, str]] = field(default_factory=list)
    defaults: dict = field(default_factory=dict)
    base_config: EditConfig | None = None  # set by ``configure``

    def configure(self, base_for) -> EditConfig:
        """Settle the settings every item starts from, ``base_for(defaults)``, and check each item's own
        settings against it (an item that fails moves to ``invalid``); returns the base config."""
        try:
            self.base_config = base_for(self.defaults)
        except (ValueError, TypeError) as err:
            raise ValueError(f"batch spec {self.path}: [defaults]: {err}") from err
        usable = []
        for item in self.items:
            try:
                self.base_config.with_values(**item.settings)
                usable.append(item)
            except (ValueError, TypeError) as err:
                self.invalid.append((item.index, str(err)))
        self.items = usable
        return self.base_config


def load_spec(path: str | Path, output_dir: str | Path | None = None) -> BatchSpec:
    """Parse a batch spec; a malformed item is recorded in ``invalid`` instead of stopping the batch."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"batch spec {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"cannot read batch spec {path}: {err}") from err
    unknown = sorted(set(data) - {"model", "output_dir", "defaults", "edit"})
    if unknown:
        raise ValueError(
            f"batch spec {path}: unknown top-level key(s) {unknown}; expected model, output_dir, "
            "[defaults] and [[edit]] items"
        )
    entries = data.get("edit")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"batch spec {path} has no [[edit]] items")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise TypeError(f"batch spec {path}: [defaults] must be a table of edit settings")
    unknown = sorted(set(defaults) - SETTING_KEYS - ITEM_KEYS)
    if unknown:
        known = sorted(SETTING_KEYS | ITEM_KEYS)
        raise ValueError(f"batch spec {path}: unknown [defaults] key(s) {unknown}; known: {known}")
    for key in ("model", "output_dir"):
        if key in data and not isinstance(data[key], str):
            raise TypeError(f"batch spec {path}: {key} = {data[key]!r} must be a string")
    folder = path.parent
    out_dir = Path(output_dir) if output_dir is not None else folder / data.get("output_dir", ".")
    model = data.get("model")
    if model is not None and (folder / model).exists():  # a folder or recipe file beside the spec
        model = str(folder / model)
    # edit settings from [defaults] sit under the command line's; item keys (sweeps, ...) are shared as given
    settings = {k: v for k, v in defaults.items() if k in SETTING_KEYS}
    shared = {k: v for k, v in defaults.items() if k not in SETTING_KEYS}
    spec = BatchSpec(path, model, defaults=settings)
    for index, entry in enumerate(entries, start=1):
        try:
            spec.items.append(_item(index, {**shared, **entry}, folder, out_dir))
        except (ValueError, TypeError) as err:
            spec.invalid.append((index, str(err)))
    return spec


def _item(index: int, entry: dict, folder: Path, out_dir: Path) -> BatchItem:
    unknown = sorted(set(entry) - ITEM_KEYS - SETTING_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; known: {sorted(ITEM_KEYS | SETTING_KEYS)}")
    missing = [k for k in ("image", "source", "target", "output") if k not in entry]
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    settings = {k: entry[k] for k in SETTING_KEYS & set(entry)}
    return BatchItem(
        index=index,
        image=folder / str(entry["image"]),
        source=str(entry["source"]),
        target=str(entry["target"]),
        output=out_dir / str(entry["output"]),
        settings=settings,
        sweep_alpha=parse_list(entry.get("sweep_alpha"), float, "sweep_alpha"),
        sweep_steps_source=parse_list(entry.get("sweep_steps_source"), int, "sweep_steps_source"),
    )


@dataclass
class BatchResult:
    done: list[tuple[BatchItem, FileEditReport]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)


def run_batch(
    spec: BatchSpec,
    pipe,
    recipe=None,
    base_config: EditConfig | None = None,
    cache_dir="default",
    overwrite: bool = False,
    cache_config=None,
) -> BatchResult:
    """Run every valid item of ``spec``; each failure is logged, kept in ``failed`` and the next item runs.

    Unless the spec was configured (as the command does), items start from ``base_config`` (default
    ``EditConfig()``) with the spec's ``[defaults]`` over it.
    """
    from .editor import NonRigidEditor

    if spec.base_config is None:
        spec.configure(lambda defaults: (base_config or EditConfig()).with_values(**defaults))
    base_config = spec.base_config
    result = BatchResult(failed=list(spec.invalid))
    for index, message in spec.invalid:
        logger.error("item %d of %s: %s", index, spec.path, message)
    editor = NonRigidEditor(pipe, base_config, cache_dir=cache_dir)
    for item in tqdm(spec.items, desc="edits", leave=False):
        try:
            config = base_config.with_values(**item.settings)
            report = edit_file(
                pipe,
                item.image,
                item.source,
                item.target,
                item.output,
                config,
                sweep_alpha=item.sweep_alpha,
                sweep_steps_source=item.sweep_steps_source,
                recipe=recipe,
                overwrite=overwrite,
                cache_config=cache_config,
                editor=editor,
            )
            result.done.append((item, report))
        except Exception as err:  # noqa: BLE001 - one bad item must not stop the batch; it is reported at the end
            logger.error("item %d (%s): %s", item.index, item.image, err)
            result.failed.append((item.index, f"{item.image}: {type(err).__name__}: {err}"))
    result.failed.sort()
    return result
