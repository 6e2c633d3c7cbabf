"""Reports of a benchmark: a self-contained HTML page, a Markdown and a JSON summary of a results file."""

from __future__ import annotations

import os
from pathlib import Path

from ..results import atomic_write_text, write_json
from ..results.media import shrunk_gif_copy
from .page import render
from .summary import summarise, to_markdown

REPORT_FILES = {"html": "report.html", "markdown": "summary.md", "json": "summary.json"}


def write_report(
    results: str | Path,
    out_dir: str | Path,
    overwrite: bool = False,
    html: bool = True,
    copy_media: bool = False,
) -> dict[str, Path]:
    """Write report.html, summary.md and summary.json for ``results`` into ``out_dir``; returns their paths.

    Existing report files are replaced only with ``overwrite=True``. ``copy_media`` copies the featured GIFs,
    at half size, into ``out_dir/media`` (for a summary that must stand on its own, e.g. one committed to the
    repository); otherwise the Markdown links to them where the benchmark wrote them.
    """
    results, out_dir = Path(results), Path(out_dir)
    paths = {kind: out_dir / name for kind, name in REPORT_FILES.items() if html or kind != "html"}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist; pass --force (overwrite=True) to replace them")
    summary = summarise(results)
    links = {}
    for label in summary["featured"]:
        source = results.parent / summary["media"][label]
        if not source.is_file():
            continue
        if copy_media:
            shrunk_gif_copy(source, out_dir / "media" / source.name)
            links[label] = f"media/{source.name}"
        else:
            links[label] = Path(os.path.relpath(source, out_dir)).as_posix()
    summary["media_links"] = links
    write_json(paths["json"], summary)
    atomic_write_text(paths["markdown"], to_markdown(summary))
    if html:
        atomic_write_text(paths["html"], render(summary, results.parent, out_dir))
    return paths


__all__ = ["REPORT_FILES", "summarise", "to_markdown", "write_report"]
