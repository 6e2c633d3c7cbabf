"""Small file helpers: every result file is written whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        give_usual_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_writable_folder(path: str | Path) -> None:
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


def give_usual_mode(path: str | Path) -> None:
    """The mode a plain ``open`` would have given: mkstemp makes owner-only files, results are for sharing."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_json(path: str | Path, data) -> Path:
    """Atomically write ``data`` as indented JSON."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def refuse_overwrite(path: str | Path, force: bool) -> Path:
    """Raise FileExistsError if ``path`` exists and ``force`` is not set."""
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    return path
