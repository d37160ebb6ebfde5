"""Named crash points for the crash-safety tests: SIGKILL this process at a chosen moment.

`RAGTUNE_CRASH_AT=<point>[:<n>]` kills the process the n-th time (default 1st) execution reaches
`crashpoint("<point>")`. Unset (always, outside tests) it costs one dict lookup. Points:
`store.before_commit` (inside a chunk-writing transaction), `pipeline.after_commit` (after a
document's transaction), `pipeline.after_removals`, `pipeline.before_persist`,
`faiss.tmp_written` (FAISS temp file written, not yet renamed over the old one).
"""

from __future__ import annotations

import os
import signal

ENV = "RAGTUNE_CRASH_AT"
_hits: dict[str, int] = {}


def crashpoint(name: str) -> None:
    """SIGKILL ourselves when RAGTUNE_CRASH_AT names this point and its hit count is reached."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
