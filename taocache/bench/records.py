"""The results file: one JSON record a line, appended whole and synced as each run finishes.

An interrupted benchmark loses at most the run in progress; re-running the same command reads the file
back and skips every run whose key is already there. A torn last line (a crash in mid-write) is ignored
with a warning and the run is simply done again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..results import JsonlStore

SCHEMA = 2  # 2: work counted in FLOPs (FlopCounterMode), call and FLOP ratios apart
#: Statuses of a finished run; a resumed benchmark skips these keys.
FINISHED = ("ok", "unsupported")


def run_key(**identity) -> str:
    """A short stable key for a run from what defines it (model, call, prompt, seed, method, setting)."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _is_record(record) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("type"), str)
        and "key" in record
        and (record["type"] != "run" or {"method", "status"} <= set(record))
    )


def store(path: str | os.PathLike) -> JsonlStore:
    """The results file at ``path`` (lines that are no benchmark record are skipped with a warning)."""
    return JsonlStore(path, accept=_is_record, kind="benchmark record (is this a results.jsonl written by `taocache bench`?)")


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Append ``record`` as one line with a single write, then flush and fsync."""
    store(path).append(record)


def read_records(path: str | os.PathLike) -> list[dict]:
    """Every complete record in ``path`` (an absent file has none); unreadable lines are skipped."""
    return store(path).read()


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
        store(results).rewrite(merged)
    for shard in shards:
        shard.unlink()
    return moved
