"""``python -m taocache.cli``: the same as the ``taocache`` command."""

import sys

from . import main

sys.exit(main())
