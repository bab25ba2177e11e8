"""Durability cost of the preference log: time per logged choice with
``synchronous=FULL`` (the write-ahead log is synced at each commit: a choice
answered with 201 survives a power cut) against ``synchronous=NORMAL`` (WAL
synced only at checkpoints: the last choices may be lost on a power cut,
never corrupted).

Each run logs ``--choices`` choices of a 4-candidate Result (~1 KB of text)
through ``PreferenceStore.record`` into a fresh database in ``--dir`` (put it on
the disk the server uses: a tmpfs measures nothing). The two settings alternate
for ``--repeats`` rounds; each reports its median milliseconds per choice. The
last line is ``ratio: X``: FULL / NORMAL time per choice.

    python benchmarks/prefs_durability.py [--dir PATH] [--choices 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from nbest.server.prefs import PreferenceStore
from nbest.types import Candidate, CandidateSpec, Result, SamplingParams


def _result() -> Result:
    texts = [f"{word} " * 50 for word in ("alpha", "beta", "gamma", "delta")]
    candidates = [
        Candidate(
            index=i, rank=i + 1, text=t, score=-float(i), confidence=0.25, spec=CandidateSpec(index=i, params=SamplingParams())
        )
        for i, t in enumerate(texts)
    ]
    return Result(id="bench", prompt="Which one?", n=4, candidates=candidates, best=candidates[0])


def per_choice_ms(folder: Path, mode: str, choices: int) -> float:
    """Milliseconds per ``record`` with ``PRAGMA synchronous = mode``."""
    result = _result()
    with tempfile.TemporaryDirectory(dir=folder) as tmp, PreferenceStore(Path(tmp) / "prefs.db") as store:
        store._conn.execute(f"PRAGMA synchronous = {mode}")
        started = time.perf_counter()
        for i in range(choices):
            store.record(result, chosen=i % 4)
        return 1000 * (time.perf_counter() - started) / choices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="Folder on the disk to measure [default: .].")
    parser.add_argument("--choices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"NORMAL": [], "FULL": []}
    for _ in range(args.repeats):
        for mode in times:
            times[mode].append(per_choice_ms(args.dir, mode, args.choices))
    median = {mode: statistics.median(values) for mode, values in times.items()}
    print(f"folder: {args.dir.resolve()}; {args.choices} choices x {args.repeats} rounds")
    for mode, value in median.items():
        print(f"synchronous={mode:<6}  {value:.3f} ms per choice")
    print(f"FULL costs {median['FULL'] - median['NORMAL']:.3f} ms more per choice")
    print(f"ratio: {median['FULL'] / median['NORMAL']:.2f}")


if __name__ == "__main__":
    main()
