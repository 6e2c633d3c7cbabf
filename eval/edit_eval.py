"""Evaluate non-rigid editing on the embedded text-to-image model (held-out move/resize edits of the world).

    python eval/edit_eval.py --settings-file eval/results/edit-tune/choice.json   # the test run (48 edits)
    python eval/edit_eval.py --cases 4 --output-dir /tmp/edit-eval    # a quick look at the default settings
    python eval/edit_eval.py --methods non-rigid,masactrl              # some of the methods only
    python eval/edit_eval.py --taocache            # also time the sampling stage with TaoCache enabled

The settings file comes from eval/edit_tune.py (`taocache edit-tune`), which chooses each method's setting
on tune edits.

Takes every option of `taocache edit-eval` (see `taocache edit-eval --help`); runs on one CPU thread unless
--threads says otherwise. A rerun with the same settings resumes from records.jsonl.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None, command: str = "edit-eval") -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    known, rest = parser.parse_known_args(argv)
    if known.threads < 1:
        parser.error("--threads must be at least 1")
    if {"-h", "--help"} & set(rest):
        print(f"options: --threads N (torch CPU threads, default 1), then those of `taocache {command}`:\n")
    import torch

    torch.set_num_threads(known.threads)
    from taocache.cli import main as cli_main

    return cli_main([command, *rest])


if __name__ == "__main__":
    sys.exit(main())
