"""Append-only stores of JSON records, one a line: what long evaluations stream their results to.

A record is appended with one write, flushed and synced, as soon as it is measured, so an interrupted run
loses at most the record in progress; reading the file back tells a rerun what is done. A line torn by a
crash in mid-write is skipped with a warning (and the next record starts on a line of its own), so that
record is simply measured again. A settings file beside the store keeps a resumed run from mixing records
made with other settings.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from .files import atomic_write_text, json_safe

logger = logging.getLogger(__name__)


class JsonlStore:
    """The records in ``path``. ``accept(record)`` says whether a parsed line is a record of this store (the
    others are skipped with a warning naming ``kind``)."""

    def __init__(self, path: str | os.PathLike, accept: Callable[[object], bool] | None = None, kind: str = "record"):
        self.path = Path(path)
        self.accept = accept or (lambda record: isinstance(record, dict))
        self.kind = kind

    def read(self) -> list[dict]:
        """Every complete record (an absent file has none); other lines are skipped with a warning."""
        return self._read()[0]

    def repair(self) -> list[dict]:
        """:meth:`read`, rewriting the file without the lines it skipped."""
        records, skipped = self._read()
        if skipped:
            atomic_write_text(self.path, "".join(_line(r) for r in records))
        return records

    def append(self, record: dict) -> None:
        """Append ``record`` (made JSON-safe) as one line with a single write, then flush and sync."""
        line = _line(record)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                if existing.read(1) != b"\n":  # a torn last line: end it, so this record stands on its own line
                    line = "\n" + line
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def guard(self, settings: dict, settings_path: str | os.PathLike, additive=(), advice: str = "") -> None:
        """Keep ``settings`` in ``settings_path``; ValueError when the store already holds records made with
        other settings (keys in ``additive`` may change: they only add records). ``advice`` says what to do."""
        settings_path = Path(settings_path)
        if settings_path.exists() and self.path.exists():
            stored = json.loads(settings_path.read_text())
            keys = (set(stored) | set(settings)) - set(additive)
            changed = sorted(k for k in keys if stored.get(k) != settings.get(k))
            if changed:
                raise ValueError(f"{self.path} holds records made with other settings ({', '.join(changed)}); {advice}")
        atomic_write_text(settings_path, json.dumps(json_safe(settings), indent=2, sort_keys=True))

    def rewrite(self, records: list[dict]) -> None:
        """Replace the whole file with ``records``, atomically."""
        atomic_write_text(self.path, "".join(_line(r) for r in records))

    def _read(self) -> tuple[list[dict], int]:
        if not self.path.exists():
            return [], 0
        records, skipped = [], 0
        with open(self.path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    logger.warning("%s line %d is not a complete record (interrupted write?): skipped", self.path, number)
                    skipped += 1
                    continue
                if not self.accept(record):
                    logger.warning("%s line %d is not a %s: skipped", self.path, number, self.kind)
                    skipped += 1
                    continue
                records.append(record)
        return records, skipped


def _line(record: dict) -> str:
    return json.dumps(json_safe(record), sort_keys=True) + "\n"
