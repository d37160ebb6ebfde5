"""The outside corpora's questions (data/outside/<name>/qa.jsonl) keep their promises, offline.

The documents themselves are fetched from Debian at run time (scripts/outside-corpora.sh), so these
tests read only what the repository holds: the question files, the pinned document list of the
fetch script, and the training data the leak rule must keep them out of. That each reference occurs
in its document is checked by scripts/check_outside_qa.py once the documents are fetched.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from evaluation.data import QAItem, find_leaks, load_qa, registered_datasets, training_questions
from ingest.pairs.text import normalise

REPO = Path(__file__).resolve().parents[2]
OUTSIDE = REPO / "data" / "outside"
CORPORA = {"debian-faq": "en", "debian-reference-zh": "zh", "fhs": "en"}
TRAINING_DIRS = [REPO / "data" / "sft", REPO / "data" / "preference"]


def _items(name: str) -> list[QAItem]:
    return load_qa(OUTSIDE / name / "qa.jsonl")


def _pinned_documents() -> dict[str, set[str]]:
    """Corpus name -> the documents scripts/outside-corpora.sh copies into its docs/ folder."""
    script = (REPO / "scripts" / "outside-corpora.sh").read_text(encoding="utf-8")
    pinned = {}
    for line in re.findall(r'^\s*"([^"|]+\|[^"]+)"\s*$', script, re.M):
        fields = line.split("|")
        assert len(fields) == 7, f"outside-corpora.sh corpus line has {len(fields)} fields: {line}"
        pinned[fields[0]] = set(fields[6].split())
    return pinned


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_questions_load_and_mix_answerable_and_unanswerable(name):
    items = _items(name)
    answerable = [i for i in items if i.answerable]
    unanswerable = [i for i in items if not i.answerable]
    assert len(answerable) >= 30 and len(unanswerable) >= 5, (len(answerable), len(unanswerable))
    assert all(i.source is None for i in unanswerable), "an unanswerable question names a source"
    assert all(i.lang == CORPORA[name] for i in items), \
        [i.question for i in items if i.lang != CORPORA[name]]


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_every_source_is_a_pinned_document_and_every_document_is_asked_about(name):
    pinned = _pinned_documents()[name]
    sources = {i.source for i in _items(name) if i.answerable}
    assert all(isinstance(s, str) for s in sources)
    assert sources <= pinned, f"sources the fetch script does not copy: {sorted(sources - pinned)}"
    assert sources == pinned, f"documents without a question: {sorted(pinned - sources)}"


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_references_are_short_strings(name):
    """The eval scores "reference contained in the answer": a reference is a span, not a sentence."""
    for item in _items(name):
        if item.answerable:
            assert len(item.answer) <= 40 and "\n" not in item.answer, (item.line, item.answer)


def test_no_duplicate_questions_within_or_across_the_files():
    seen: dict[str, str] = {}
    eval_questions = {normalise(i.question) for i in load_qa(REPO / "data" / "eval" / "qa.jsonl")}
    for name in sorted(CORPORA):
        for item in _items(name):
            key = normalise(item.question)
            assert key not in seen, f"{name} line {item.line} repeats {seen[key]}: {item.question}"
            assert key not in eval_questions, f"{name} line {item.line} is in data/eval/qa.jsonl"
            seen[key] = f"{name} line {item.line}"


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_no_question_is_in_the_repository_training_data(name):
    refs = [ref for d in TRAINING_DIRS for ref in registered_datasets(d)]
    assert {r.name for r in refs} >= {"ragtune_sft", "ragtune_sft_val", "ragtune_identity",
                                      "dpo_sample"}, [r.name for r in refs]
    leaks = find_leaks(_items(name), refs)
    assert leaks == [], [(c.item.question, c.found.path.name, c.found.row, c.kind) for c in leaks]
    # the same check does see the training rows: one of their questions among ours is caught
    trained = next(q for q in training_questions(refs) if q.dataset == "ragtune_sft")
    planted = QAItem(999, trained.text.strip(), "x", None)
    assert [c.item.line for c in find_leaks(_items(name) + [planted], refs)] == [999]
