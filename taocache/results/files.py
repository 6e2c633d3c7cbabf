"""Files written whole or not at all, and refused where they would replace a user's file unasked.

Every writer goes through :func:`atomic_path`: the content goes to a temporary file in the target's folder,
which is renamed over the target only once complete, so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path`` (same suffix, so format-guessing writers work); on success it is
    renamed to ``path`` with the usual file mode, on failure removed. Missing folders are made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(handle)
    try:
        yield Path(temporary)
        _give_usual_mode(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole (synced before the rename)."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(value):
    """Plain JSON: tuples become lists, numpy and torch values numbers or lists, keys strings, and infinite or
    undefined floats the strings ``"inf"``, ``"-inf"``, ``"nan"`` (which ``float()`` reads back)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def write_json(path: str | os.PathLike, data) -> Path:
    """Write ``data`` as indented, JSON-safe JSON, whole."""
    return atomic_write_text(path, json.dumps(json_safe(data), indent=2) + "\n")


def refuse_overwrite(path: str | os.PathLike, force: bool) -> Path:
    """``path``; FileExistsError when it exists and ``force`` is not set (``--force`` on the command line,
    ``overwrite=True`` in code)."""
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force (overwrite=True) to replace it")
    return path


def check_writable_folder(path: str | os.PathLike) -> None:
    """A clear error, before any work, when no file could be written at ``path``: the nearest existing folder
    on its way is a file (ValueError) or not writable (PermissionError). Missing folders are made later."""
    path = Path(path).absolute()
    folder = next(p for p in (path.parent, *path.parents) if p.exists())
    if not folder.is_dir():
        raise ValueError(
            f"cannot write {path}: {folder} is a file, not a folder, so not a writable folder; choose another path"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: {folder} is not a writable folder; choose another path")


def _give_usual_mode(path: str | os.PathLike) -> None:
    """The mode a plain ``open`` would have given: temporary files are owner-only, results are for sharing."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
