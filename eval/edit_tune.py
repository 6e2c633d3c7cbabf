"""Choose each editing method's setting on tune edits of the sample world, trying as many settings of each.

    python eval/edit_tune.py --model /path/recipe.toml --guidance-scale 3     # 32 tune edits, 4 settings each
    python eval/edit_eval.py --model /path/recipe.toml --settings-file eval/results/edit-tune/choice.json

Takes every option of `taocache edit-tune`; runs on one CPU thread unless --threads says otherwise. A rerun
with the same settings resumes from records.jsonl.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edit_eval import main as _main


def main(argv=None) -> int:
    return _main(argv, command="edit-tune")


if __name__ == "__main__":
    sys.exit(main())
