"""The editing evaluation's records: one line per case and method in ``records.jsonl``, appended as they are
measured, beside the settings they were made with, so a rerun resumes and never mixes settings."""

from __future__ import annotations

from pathlib import Path

from ..results import JsonlStore

#: Settings that only add records (sweep points, the cached run, more cases: the case list is a fixed order,
#: so a larger count extends it), so a rerun may change them and resume.
ADDITIVE_SETTINGS = ("cases", "sweep_alpha", "sweep_steps_source", "taocache")


class RecordFile:
    """The records of one evaluation folder; opening it resumes (a damaged line is dropped from the file)."""

    def __init__(self, path: Path, settings: dict, restart: bool = False):
        self.store = JsonlStore(path)
        settings_path = Path(path).with_name("settings.json")
        if restart:
            for old in (Path(path), settings_path):
                old.unlink(missing_ok=True)
        self.store.guard(settings, settings_path, ADDITIVE_SETTINGS,
                         "pass --restart to discard them, or use another --output-dir")
        self.records = self.store.repair()

    def has(self, case_id: str, method: str, **setting) -> bool:
        return any(
            r["case"] == case_id and r["method"] == method and all(r.get(k) == v for k, v in setting.items())
            for r in self.records
        )

    def add(self, record: dict) -> None:
        self.store.append(record)
        self.records.append(record)
