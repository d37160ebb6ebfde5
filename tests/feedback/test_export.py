"""`ragtune feedback export|stats`: datasets that load back, and clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.datasets import KTOExample, PreferenceExample, load_dataset, read_dataset_info
from feedback.export import FeedbackExportError
from feedback.commands import export, stats
from ragtune.errors import NotFoundError
from ragtune.prompts import build_messages
from ragtune.settings import load_settings
from tests.feedback.records import FACTS, SYSTEM, fill

BASE = "tiny-base"


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAGTUNE_GENERATOR", BASE)
    return tmp_path / "ws"


def db_of(ws: Path) -> Path:
    return load_settings(workspace=ws).paths.feedback_db


def test_export_round_trips_into_the_loader(ws: Path, capsys) -> None:
    fill(db_of(ws), BASE, pairs=3).close()
    datasets = load_settings(workspace=ws).paths.datasets_dir
    datasets.mkdir(parents=True)
    (datasets / "dataset_info.json").write_text(json.dumps(
        {"ragtune_sft": {"file_name": "sft.json", "formatting": "alpaca"}}))
    assert export(ws) == 0
    info = read_dataset_info(datasets)
    assert set(info) == {"ragtune_sft", "feedback_dpo", "feedback_kto"}  # merged, not replaced
    assert info["feedback_dpo"].ranking and info["feedback_kto"].kind == "kto"
    pairs = load_dataset("feedback_dpo", datasets)
    # 3 choices; like-vs-dislike of the same question gives the same 3 pairs (not duplicated)
    assert len(pairs) == 3 and all(isinstance(p, PreferenceExample) for p in pairs)
    for p, (question, good, bad) in zip(pairs, FACTS, strict=False):
        from serving.history import Source

        src = Source(1, "handbook.md", 0, "Facts", 1.0, f"Reference for: {question}")
        assert p.messages == build_messages(question, [src], SYSTEM)  # the prompt the model saw
        assert (p.chosen, p.rejected) == (good, bad)
    kto = load_dataset("feedback_kto", datasets)
    assert all(isinstance(k, KTOExample) for k in kto)
    assert sorted(k.label for k in kto) == [False] * 3 + [True] * 3
    assert {k.completion for k in kto if k.label} == {f[1] for f in FACTS[:3]}
    out = capsys.readouterr().out
    assert "3 preference pairs" in out and "3 likes, 3 dislikes" in out
    assert stats(ws, json=True) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["likes"], data["dislikes"], data["comparisons"], data["dpo_pairs"]) == (3, 3, 3, 3)


def test_likes_only_says_what_is_missing(ws: Path, capsys) -> None:
    fill(db_of(ws), BASE, pairs=2, dislikes=False).close()
    export(ws)  # the A-vs-B pairs still export; KTO is refused with the reason
    out = capsys.readouterr().out
    assert "feedback_kto: only likes (2) and no dislikes" in out and "KTO needs both" in out
    store = fill(db_of(ws.parent / "other"), BASE, pairs=0)
    from tests.feedback.records import answer

    a = answer(store, "Q?", "A.")
    store.rate(a.id, "like")
    store.close()
    with pytest.raises(FeedbackExportError, match=r"only likes \(1\) and no dislikes"):
        export(ws.parent / "other")


def test_too_few_pairs_and_empty_store(ws: Path) -> None:
    fill(db_of(ws), BASE, pairs=2, likes=False, dislikes=False).close()
    with pytest.raises(FeedbackExportError, match=r"2 preference pair\(s\), fewer than "
                                                  r"min_pairs=5.*no likes or dislikes yet"):
        export(ws, min_pairs=5)
    assert not (load_settings(workspace=ws).paths.datasets_dir / "feedback_dpo.json").exists()
    with pytest.raises(NotFoundError, match="no feedback yet"):
        export(ws.parent / "empty")


def test_records_from_another_base_model_are_named(ws: Path, tmp_path: Path) -> None:
    fill(db_of(ws), "some-other/base-model", pairs=2).close()
    with pytest.raises(FeedbackExportError, match=r"configured 'tiny-base': "
                                                  r"'some-other/base-model' \(4 answers\)"):
        export(ws)
    assert export(ws, base_model="some-other/base-model", output=tmp_path / "out") == 0
    assert len(load_dataset("feedback_dpo", tmp_path / "out")) == 2
