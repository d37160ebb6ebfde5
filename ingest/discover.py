"""Find the documents to ingest: files named directly plus supported files under folders, in a stable order.

Rules: a file named directly is taken (an unsupported extension is a failure, since the user asked for it);
folders recurse in sorted name order; hidden entries (".name") and Office lock files ("~$name") inside folders
are skipped, as are unsupported extensions; symlinks are followed, but a link back into its own ancestry or a
self-referencing link is reported as "symlink loop"; a missing path is a failure; the same real file is never
returned twice (the first path that reaches it wins). Paths are returned as reached, not resolved.
With `within` (the server's document roots), a link under a folder whose target lies outside every one
of those folders is not followed and is reported as "symlink leaves the allowed folders", so a link to
/etc inside an upload folder cannot get /etc/passwd indexed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".json", ".jsonl", ".csv",
     ".png", ".jpg", ".jpeg", ".tif", ".tiff"}  # images: read by OCR (ingest.loaders.FORMATS)
)
SYMLINK_LOOP = "symlink loop"
LEAVES_ROOT = "symlink leaves the allowed folders"


@dataclass(frozen=True)
class FileFailure:
    """A path that could not be taken, and why (shown as one line per file)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def is_supported(path: Path) -> bool:
    """True when the file extension (case-insensitive) is one ragtune can load."""
    return path.suffix.lower() in SUPPORTED_EXTENSIONS


def _skipped_name(name: str) -> bool:
    """Hidden files/dirs and Office lock files are never documents."""
    return name.startswith(".") or name.startswith("~$")


@dataclass
class _Walk:
    """Accumulates results and the real paths already seen during one discover() call."""

    files: list[Path] = field(default_factory=list)
    failures: list[FileFailure] = field(default_factory=list)
    seen_files: set[str] = field(default_factory=set)
    seen_dirs: set[str] = field(default_factory=set)
    within: tuple[str, ...] = ()  # real paths of the only folders the walk may enter

    def outside(self, path: Path) -> bool:
        """True when confined and the real path of `path` is under none of `within`."""
        if not self.within:
            return False
        real = os.path.realpath(path)
        return not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep)
                       for root in self.within)

    def fail(self, path: Path, reason: str) -> None:
        """Record a failure once per path."""
        failure = FileFailure(str(path), reason)
        if failure not in self.failures:
            self.failures.append(failure)

    def add_file(self, path: Path) -> None:
        """Take a file unless its real path was already taken."""
        real = os.path.realpath(path)
        if real not in self.seen_files:
            self.seen_files.add(real)
            self.files.append(path)


def _stat_failure(path: Path) -> str | None:
    """Why following `path` fails (missing, broken link, loop), or None when it resolves."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return SYMLINK_LOOP
        if err.errno == errno.ENOENT:
            return "broken symlink" if os.path.islink(path) else "no such file or directory"
        return f"cannot access: {err.strerror or err}"
    return None


def _walk_dir(directory: Path, walk: _Walk, ancestors: tuple[str, ...]) -> None:
    """Recurse into a directory in sorted order, detecting links back into the ancestry."""
    real = os.path.realpath(directory)
    if real in ancestors:
        walk.fail(directory, SYMLINK_LOOP)
        return
    if real in walk.seen_dirs:
        return
    walk.seen_dirs.add(real)
    try:
        names = sorted(os.listdir(directory))
    except OSError as err:
        walk.fail(directory, f"cannot read directory: {err.strerror or err}")
        return
    for name in names:
        if _skipped_name(name):
            continue
        child = directory / name
        problem = _stat_failure(child)
        if problem == SYMLINK_LOOP or (problem and is_supported(child)):
            walk.fail(child, problem)
        elif problem is None and walk.outside(child):
            walk.fail(child, LEAVES_ROOT)
        elif problem is None and child.is_dir():
            _walk_dir(child, walk, ancestors + (real,))
        elif problem is None and child.is_file() and is_supported(child):
            walk.add_file(child)


def discover(paths: Sequence[Path], *, exclude: Sequence[Path] = (),
             within: Sequence[Path | str] = ()) -> tuple[list[Path], list[FileFailure]]:
    """Expand files and folders into a deterministic, duplicate-free list of supported files plus failures.

    `exclude` names folders never to enter (e.g. the workspace, so `ingest .` does not index its own output);
    `within` confines the walk (and the paths named) to those folders, symlinks resolved.
    """
    walk = _Walk(within=tuple(os.path.realpath(p) for p in within))
    walk.seen_dirs.update(os.path.realpath(p) for p in exclude)
    for raw in paths:
        path = Path(raw)
        problem = _stat_failure(path)
        if problem:
            walk.fail(path, problem)
        elif walk.outside(path):
            walk.fail(path, LEAVES_ROOT)
        elif path.is_dir():
            _walk_dir(path, walk, ())
        elif not path.is_file():
            walk.fail(path, "not a regular file")
        elif not is_supported(path):
            supported = " ".join(sorted(SUPPORTED_EXTENSIONS))
            walk.fail(path, f"unsupported file type {path.suffix or '(no extension)'!r} (supported: {supported})")
        else:
            walk.add_file(path)
    return walk.files, walk.failures
