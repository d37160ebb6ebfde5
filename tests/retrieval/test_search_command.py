"""`ragtune search`: text and --json output, parsed by the real `ragtune` CLI (Typer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.commands import ingest
from ragtune.cli import main
from ragtune.errors import NotFoundError
from retrieval.commands import search
from tests.retrieval.corpus import write_corpus


@pytest.fixture()
def ingested(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workspace: Path) -> Path:
    monkeypatch.chdir(tmp_path)
    write_corpus(tmp_path / "docs")
    assert ingest([Path("docs")], embedder="import:tests.fakes:HashEmbedder?dim=64", chunk_size=200, chunk_overlap=20,
                  pairs="none") == 0
    return workspace


def run_cli(args: list[str]) -> int:
    return main(["search", *args])


def test_json_lines(ingested, capsys):
    capsys.readouterr()
    assert run_cli(["fire drills assembly point", "--k", "3", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert rows[0]["source"] == "docs/safety/fire.md" and rows[0]["mode"] == "hybrid"
    assert set(rows[0]) == {"rank", "score", "source", "section", "chunk_index", "chunk_id",
                            "mode", "text"}
    assert rows[0]["score"] >= rows[1]["score"] >= rows[2]["score"]


def test_chinese_query_json_keeps_characters(ingested, capsys):
    capsys.readouterr()
    assert run_cli(["年假", "--mode", "bm25", "--k", "1", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["source"] == "docs/zh/handbook.md" and "年假" in row["text"]


def test_text_output(ingested, capsys):
    capsys.readouterr()
    assert run_cli(["tubing cartridge", "--mode", "dense", "--k", "2"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("1. docs/products/tw40.txt") and "score" in first
    assert "tubing cartridge" in out


def test_without_an_index(workspace):
    with pytest.raises(NotFoundError, match="ingest"):
        search("anything")
    assert not (workspace / "index").exists()
