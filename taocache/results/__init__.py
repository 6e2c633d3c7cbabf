"""The one place results reach the disk: whole files or nothing (text, bytes, images, videos), JSON that any
reader parses, and append-only record stores that an interrupted run resumes."""

from .files import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    check_writable_folder,
    json_safe,
    refuse_overwrite,
    write_json,
)
from .store import JsonlStore

__all__ = [
    "JsonlStore",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable_folder",
    "json_safe",
    "refuse_overwrite",
    "write_json",
]
