"""The results file: one JSON record a line, appended whole and synced as each run finishes.

An interrupted benchmark loses at most the run in progress; re-running the same command reads the file
back and skips every run whose key is already there. A torn last line (a crash in mid-write) is ignored
with a warning and the run is simply done again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path

from ..io import atomic_write_text

logger = logging.getLogger(__name__)

SCHEMA = 1
#: Statuses of a finished run; a resumed benchmark skips these keys.
FINISHED = ("ok", "unsupported")


def run_key(**identity) -> str:
    """A short stable key for a run from what defines it (model, call, prompt, seed, method, setting)."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _jsonable(value):
    """Plain JSON: tensors and numpy values become lists or numbers, infinities become strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else ("inf" if value > 0 else ("-inf" if value < 0 else "nan"))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Append ``record`` as one line with a single write, then flush and fsync."""
    line = json.dumps(_jsonable(record), sort_keys=True) + "\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as existing:
            existing.seek(-1, os.SEEK_END)
            if existing.read(1) != b"\n":  # a torn last line: end it, so this record stands on its own line
                line = "\n" + line
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def read_records(path: str | os.PathLike) -> list[dict]:
    """Every complete record in ``path`` (an absent file has none); unreadable lines are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning(
                    "%s line %d is not a complete record (interrupted write?): skipped", path, number
                )
                continue
            if (
                not isinstance(record, dict)
                or not isinstance(record.get("type"), str)
                or "key" not in record
                or (record["type"] == "run" and not {"method", "status"} <= set(record))
            ):
                logger.warning("%s line %d is not a benchmark record: skipped (is this a results.jsonl "
                               "written by `taocache bench`?)", path, number)
                continue
            records.append(record)
    return records


def finished_keys(records: list[dict]) -> set[str]:
    """Keys of runs that need not be run again."""
    return {r["key"] for r in records if r.get("type") == "run" and r.get("status") in FINISHED}


def number(value) -> float | None:
    """A metric back from JSON: 'inf' strings become floats again, None stays None."""
    if value is None:
        return None
    return float(value)


# ------------------------------------------------------------------------------------- scale-out shards


def shard_path(results: str | os.PathLike, index: int) -> Path:
    """The file process ``index`` writes to while the job list is split over processes."""
    results = Path(results)
    return results.with_name(f"{results.name}.shard-{index}")


def shard_jobs(jobs: list, index: int, count: int) -> list:
    """The jobs of process ``index`` of ``count``: every count-th one, so each gets a fair mix."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"process index {index} is outside 0..{count - 1}")
    return jobs[index::count]


def shard_files(results: str | os.PathLike) -> list[Path]:
    """Shard files beside ``results``, from this or an earlier (interrupted) run."""
    results = Path(results)
    return sorted(results.parent.glob(f"{results.name}.shard-*"))


def merge_shards(results: str | os.PathLike) -> int:
    """Move the records of every shard file into ``results`` (skipping runs it has); returns how many moved.

    The results file is rewritten through a temporary file and ``os.replace``; shard files are removed
    only after that succeeded, so a crash here loses nothing.
    """
    results = Path(results)
    merged = read_records(results)
    seen = {(r.get("type"), r.get("key")) for r in merged}
    shards = shard_files(results)
    moved = 0
    for shard in shards:
        for record in read_records(shard):
            ident = (record.get("type"), record.get("key"))
            if ident in seen and record.get("type") == "run":
                continue
            seen.add(ident)
            merged.append(record)
            moved += 1
    if moved:
        atomic_write_text(results, "".join(json.dumps(r, sort_keys=True) + "\n" for r in merged))
    for shard in shards:
        shard.unlink()
    return moved
