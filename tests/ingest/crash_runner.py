"""Run an ingest that SIGKILLs itself at a named point (the crash-safety tests' subprocess).

`python tests/ingest/crash_runner.py POINT[:N] ARGS_JSON` wraps the production functions that
surround a point, so no crash hook lives in production code; the N-th time (default 1st)
execution reaches the point, the process kills itself with SIGKILL. Points:
- `store.before_commit`: inside a document's chunk transaction, after its last write, before
  COMMIT (`ChunkStore.replace_document`'s generation bump);
- `pipeline.after_commit`: a new or changed document's transaction committed
  (`IngestRun._commit` returned);
- `pipeline.after_removals`: every document committed and the vanished ones removed
  (`IngestRun._remove_missing` returned), FAISS/BM25 files not yet written;
- `pipeline.before_persist`: the same moment, seen from `HybridIndex.persist`'s start;
- `faiss.tmp_written`: the FAISS temp file written and fsync'd, not yet renamed over the old.
With no point, the ingest runs unwrapped. The exit status is the ingest's.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ingest.commands import ingest  # noqa: E402
from ingest.pipeline import IngestRun  # noqa: E402
from retrieval.index import FAISS_FILE, HybridIndex  # noqa: E402
from retrieval.store import ChunkStore  # noqa: E402

POINTS = ("store.before_commit", "pipeline.after_commit", "pipeline.after_removals",
          "pipeline.before_persist", "faiss.tmp_written")


class Crash:
    """Counts arrivals at the chosen point and SIGKILLs the process at the n-th."""

    def __init__(self, spec: str) -> None:
        point, _, count = spec.partition(":")
        if point not in POINTS:
            raise SystemExit(f"unknown crash point {point!r}; known: {', '.join(POINTS)}")
        self.point, self.count, self.hits = point, int(count or 1), 0

    def reached(self, point: str) -> None:
        if point == self.point:
            self.hits += 1
            if self.hits >= self.count:
                os.kill(os.getpid(), signal.SIGKILL)


def around(owner: object, name: str, *, before: Callable[[], None] | None = None,
           after: Callable[[], None] | None = None) -> None:
    """Replace `owner.name` by a wrapper that calls `before`/`after` around the original."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if before:
            before()
        out = original(*args, **kwargs)
        if after:
            after()
        return out

    setattr(owner, name, wrapper)


def install(crash: Crash) -> None:
    """Wrap the functions around every point (each wrapper only counts its own point)."""
    in_replace = threading.local()

    def replacing(flag: bool) -> Callable[[], None]:
        return lambda: setattr(in_replace, "on", flag)

    around(ChunkStore, "replace_document", before=replacing(True), after=replacing(False))
    # `_bump` is replace_document's last statement before COMMIT (delete_document bumps too,
    # hence the flag).
    around(ChunkStore, "_bump", after=lambda: getattr(in_replace, "on", False)
           and crash.reached("store.before_commit"))
    around(IngestRun, "_commit", after=lambda: crash.reached("pipeline.after_commit"))
    around(IngestRun, "_remove_missing", after=lambda: crash.reached("pipeline.after_removals"))
    around(HybridIndex, "persist", before=lambda: crash.reached("pipeline.before_persist"))
    replace = os.replace

    def replace_faiss(src, dst, *args, **kwargs):
        if Path(dst).name == FAISS_FILE:
            crash.reached("faiss.tmp_written")
        return replace(src, dst, *args, **kwargs)

    os.replace = replace_faiss  # this process only; DenseIndex.save renames the FAISS file


def main(argv: list[str]) -> int:
    spec, kwargs = argv[0], json.loads(argv[1])
    if spec:
        install(Crash(spec))
    paths = [Path(p) for p in kwargs.pop("paths")]
    return ingest(paths, **kwargs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
