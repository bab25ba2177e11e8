"""``python -m tests.cli_with_engine FACTORY ARGS...``: the ``nbest`` command
line with the engines of ``tests.batch_engines.FACTORY`` (for tests that run a
command in a subprocess, e.g. to kill it mid-run)."""

from __future__ import annotations

import sys

from nbest.cli import main
from tests import batch_engines

if __name__ == "__main__":
    main(sys.argv[2:], engine_factory=getattr(batch_engines, sys.argv[1]))
