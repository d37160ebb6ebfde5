"""Tests for document discovery, loading and splitting; shared helpers for permission checks."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def world_dir() -> Iterator[Path]:
    """A fresh directory that any user can enter (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="ragtune-perm-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        for sub in path.rglob("*"):
            if not sub.is_symlink():
                os.chmod(sub, 0o755)
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def as_ordinary_user() -> Iterator[None]:
    """Run the block without root's power to read anything (root drops to `nobody` and back)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
