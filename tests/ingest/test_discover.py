"""Discovery over real folder trees: recursion order, hidden/unsupported files, symlinks, loops, duplicates."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.discover import SUPPORTED_EXTENSIONS, SYMLINK_LOOP, FileFailure, discover
from tests.ingest import as_ordinary_user, world_dir


def touch(path: Path, text: str = "some text\n") -> Path:
    """Write a small file, creating its parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A docs folder with nested folders, hidden entries, lock files and unsupported extensions."""
    root = tmp_path / "docs"
    for rel in ["b.md", "a.txt", "sub/z.html", "sub/deeper/c.PDF", "sub/y.docx", "data.jsonl", "t.csv",
                "m.markdown", "p.htm", "q.json",
                ".hidden.txt", ".git/config.txt", "sub/.cache/x.md", "~$lock.docx",
                "image.bmp", "notes.rtf", "noext"]:
        touch(root / rel)
    return root


def rel(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_folder_recurses_sorted_skipping_hidden_and_unsupported(tree: Path) -> None:
    files, failures = discover([tree])
    assert failures == []
    names = rel(files, tree)
    assert names == ["a.txt", "b.md", "data.jsonl", "m.markdown", "p.htm", "q.json",
                     "sub/deeper/c.PDF", "sub/y.docx", "sub/z.html", "t.csv"]
    assert all(p.suffix.lower() in SUPPORTED_EXTENSIONS for p in files)
    assert discover([tree]) == (files, failures)  # deterministic


def test_files_given_directly(tree: Path) -> None:
    files, failures = discover([tree / "sub" / "z.html", tree / ".hidden.txt", tree / "image.bmp",
                                tree / "noext"])
    assert rel(files, tree) == ["sub/z.html", ".hidden.txt"]  # argument order; a named hidden file is taken
    assert [f.path for f in failures] == [str(tree / "image.bmp"), str(tree / "noext")]
    assert "unsupported file type '.bmp'" in failures[0].reason
    assert ".docx" in failures[0].reason  # lists what is supported
    assert isinstance(failures[0], FileFailure) and str(failures[0]).startswith(str(tree / "image.bmp"))


def test_missing_path_is_a_failure_and_others_still_found(tree: Path) -> None:
    files, failures = discover([tree / "nope", tree / "a.txt"])
    assert rel(files, tree) == ["a.txt"]
    assert failures == [FileFailure(str(tree / "nope"), "no such file or directory")]


def test_same_real_file_never_twice(tree: Path, tmp_path: Path) -> None:
    (tree / "link-to-a.txt").symlink_to(tree / "a.txt")
    (tmp_path / "alias").symlink_to(tree / "sub", target_is_directory=True)
    files, failures = discover([tree / "a.txt", tree, tmp_path / "alias", tree / "b.md"])
    assert failures == []
    reals = [os.path.realpath(p) for p in files]
    assert len(reals) == len(set(reals))
    assert files[0] == tree / "a.txt"  # the first path that reaches a file wins
    assert tree / "link-to-a.txt" not in files
    assert len(files) == 10


def test_symlinks_are_followed(tmp_path: Path) -> None:
    outside = touch(tmp_path / "elsewhere" / "guide.md")
    root = tmp_path / "docs"
    root.mkdir()
    (root / "guide-link.md").symlink_to(outside)
    (root / "more").symlink_to(outside.parent, target_is_directory=True)
    files, failures = discover([root])
    assert failures == []
    assert rel(files, root) == ["guide-link.md"]  # the folder link reaches the same real file: taken once


def test_symlink_loops_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    touch(root / "inner" / "ok.txt")
    (root / "inner" / "back").symlink_to(root, target_is_directory=True)  # a link to an ancestor
    (root / "self.txt").symlink_to(root / "self.txt")  # a link to itself
    (root / "ping.md").symlink_to(root / "pong.md")
    (root / "pong.md").symlink_to(root / "ping.md")
    files, failures = discover([root])
    assert rel(files, root) == ["inner/ok.txt"]
    assert {(Path(f.path).relative_to(root).as_posix(), f.reason) for f in failures} == {
        ("inner/back", SYMLINK_LOOP), ("self.txt", SYMLINK_LOOP), ("ping.md", SYMLINK_LOOP),
        ("pong.md", SYMLINK_LOOP)}
    direct_files, direct_failures = discover([root / "self.txt"])
    assert direct_files == [] and direct_failures == [FileFailure(str(root / "self.txt"), SYMLINK_LOOP)]


def test_broken_symlink(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "gone.md").symlink_to(root / "missing.md")
    (root / "gone-image.bmp").symlink_to(root / "missing.bmp")  # unsupported: skipped silently
    files, failures = discover([root])
    assert files == []
    assert failures == [FileFailure(str(root / "gone.md"), "broken symlink")]


def test_unreadable_directory() -> None:
    with world_dir() as root:
        touch(root / "locked" / "secret.txt")
        touch(root / "open.txt")
        os.chmod(root / "locked", 0)
        with as_ordinary_user():
            files, failures = discover([root])
    assert rel(files, root) == ["open.txt"]
    assert failures == [FileFailure(str(root / "locked"), "cannot read directory: Permission denied")]


def test_excluded_folders_are_not_entered(tree: Path) -> None:
    files, failures = discover([tree], exclude=[tree / "sub", tree / "not-there"])
    assert failures == [] and not any("sub" in p.parts for p in files)
    assert rel(files, tree)[:2] == ["a.txt", "b.md"]


def test_relative_paths_stay_relative(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree.parent)
    files, _ = discover([Path("docs")])
    assert files[0] == Path("docs/a.txt")
