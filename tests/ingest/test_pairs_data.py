"""The datasets shipped in data/: they load with ragtune's reader and never hold eval questions."""

from __future__ import annotations

import json
import re

import pytest

from ragtune.datasets import PreferenceExample, SFTExample, load_dataset, load_datasets
from ingest.pairs.quality import NearDupIndex, load_eval_questions
from ragtune.prompts import system_prompt


def _question(user_turn: str) -> str:
    return user_turn.rsplit("\n\nQuestion: ", 1)[-1]


@pytest.fixture(scope="module")
def eval_index(repo_root):
    idx = NearDupIndex(0.9)
    for q in load_eval_questions(repo_root / "data" / "eval" / "qa.jsonl"):
        idx.add(q)
    assert len(idx) >= 60
    return idx


def test_shipped_sft_pairs_load_and_are_clean(repo_root, eval_index):
    ddir = repo_root / "data" / "sft"
    train = load_datasets("ragtune_sft,ragtune_sft_val", ddir)
    assert len(train) >= 300 and all(isinstance(e, SFTExample) for e in train)
    questions = {_question(e.messages[1]["content"]) for e in train}
    assert len(questions) >= 300
    assert not [q for q in questions if eval_index.match(q)]
    assert sum(bool(re.search(r"[\u4e00-\u9fff]", q)) for q in questions) >= 50  # Chinese too
    assert train[0].messages[0]["content"] == system_prompt()
    rows = json.loads((ddir / "ragtune_sft.json").read_text(encoding="utf-8"))
    assert {r["kind"] for r in rows} == {"plain", "context", "context_no_oracle"}
    assert len(load_dataset("ragtune_identity", ddir)) >= 20


def test_shipped_preference_sample(repo_root, eval_index):
    exs = load_dataset("dpo_sample", repo_root / "data" / "preference")
    assert len(exs) >= 30 and all(isinstance(e, PreferenceExample) for e in exs)
    assert all(e.chosen != e.rejected for e in exs)
    assert not [e for e in exs if eval_index.match(_question(e.messages[-1]["content"]))]
    context = [e for e in exs if e.messages[-1]["content"].startswith("Context:\n[1] ")]
    assert len(context) >= 6
    cited = [e for e in context if re.match(r".+? \[(\d)\](\n\[\1\]: \".+\")?$", e.chosen)]
    assert len(cited) >= 6  # answer first, cited, then the quote (ragtune.prompts.cited_answer)
    assert sum(bool(re.search(r"[\u4e00-\u9fff]", e.chosen)) for e in exs) >= 6
