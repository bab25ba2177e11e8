"""Batch runs over JSONL files: parse the input, append results resumably, show progress.

From Python, :meth:`Orchestrator.generate_many` returns every Result at the
end; :func:`run_batch` is the same machinery writing each Result to an
:class:`OutputLog` as it finishes (what ``nbest batch`` uses)::

    checked = check_input(Path("in.jsonl"), base, max_n=64, check=plan_check(orch))   # every line, one at a time
    log, resume = open_output(Path("out.jsonl"))
    todo = checked.prompts - checked.already_done(resume.done)
    with log:
        stats = await run_batch(orch, checked.requests(skip=resume.done), log, concurrency=16, total=todo)

Memory: O(in-flight window + ids), not O(lines): the input is read twice, a line
at a time (see :mod:`nbest.batch.inputs`), and the requests are taken as prompt
slots free up (:mod:`nbest.batch.runner`). :func:`read_input` holds the whole
file (``ParsedInput``), for small files.
"""

from __future__ import annotations

from nbest.batch.inputs import BadLine, BatchLine, CheckedInput, ParsedInput, check_input, read_input
from nbest.batch.output import OutputLog, Resume, open_output, scan_output
from nbest.batch.runner import BatchStats, plan_check, run_batch, run_requests

__all__ = [
    "BadLine",
    "BatchLine",
    "BatchStats",
    "CheckedInput",
    "OutputLog",
    "ParsedInput",
    "Resume",
    "check_input",
    "open_output",
    "plan_check",
    "read_input",
    "run_batch",
    "run_requests",
    "scan_output",
]
