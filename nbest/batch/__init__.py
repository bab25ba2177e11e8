"""Batch runs over JSONL files: parse the input, append results resumably, show progress.

From Python, :meth:`Orchestrator.generate_many` returns every Result at the
end; :func:`run_batch` is the same machinery writing each Result to an
:class:`OutputLog` as it finishes (what ``nbest batch`` uses)::

    log, resume = open_output(Path("out.jsonl"))
    todo = [r for r in read_input(Path("in.jsonl"), base, max_n=64).requests if r.id not in resume.done]
    with log:
        stats = await run_batch(orch, todo, log, concurrency=16)
"""

from __future__ import annotations

from nbest.batch.inputs import BadLine, BatchLine, ParsedInput, read_input
from nbest.batch.output import OutputLog, Resume, open_output, scan_output
from nbest.batch.runner import BatchStats, run_batch

__all__ = [
    "BadLine",
    "BatchLine",
    "BatchStats",
    "OutputLog",
    "ParsedInput",
    "Resume",
    "open_output",
    "read_input",
    "run_batch",
    "scan_output",
]
