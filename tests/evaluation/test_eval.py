"""`ragtune eval` pipeline on fakes: configurations, ablation, output files, leak refusal."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from serving.assistant import Assistant
from serving.config import AssistantConfig
from evaluation.backends import Answerer, AssistantAnswerer, Reply
from evaluation.data import EvalLeakError, load_qa
from evaluation.run import run
from evaluation.evaluate import (Configuration, EvalConfig, answer_all, resolve_models,
                               retrieval_ablation, run_eval)
from ragtune.errors import ConfigError, InputError, ModelNotFoundError
from tests.fakes import EchoGenerator, StaticRetriever
from ragtune.types import Chunk, Hit, Retriever

CHUNKS = [
    Chunk(1, "data/docs/safety/drills.md", 0, "Safety", "Fire drills at Aster Labs are held monthly."),
    Chunk(2, "data/docs/hr/leave.md", 0, "Leave", "Staff get twenty days of paid leave a year."),
    Chunk(3, "data/docs/hr/年假.md", 0, "年假", "员工每年享有十五天带薪年假。"),
    Chunk(4, "data/docs/company/overview.md", 0, "", "Aster Labs runs the Northwind reactor."),
]
QA = [
    {"question": "How often are fire drills held?", "answer": "monthly",
     "source": "safety/drills.md"},
    {"question": "How many days of paid leave do staff get?", "answer": "twenty days",
     "source": "hr/leave.md"},
    {"question": "员工每年有多少天带薪年假？", "answer": "十五天", "source": "hr/年假.md"},
    {"question": "What colour is the director's car?", "answer": None, "source": None},
]


def write_qa(path: Path, rows=QA) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def add_run(workspace: Path, name: str) -> None:
    adapter = workspace / "runs" / name / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")


def answerer(generator, retriever=None) -> AssistantAnswerer:
    """The service's Assistant over the given generator and retriever (no relevance cut-off;
    the echo fake is not grounded, so its answers are flagged, not replaced)."""
    config = AssistantConfig(relevance_threshold=-1.0, on_unsupported="flag",
                             answerable_threshold=0.0)
    return AssistantAnswerer(Assistant(generator, retriever, config))


@pytest.fixture()
def qa_file(tmp_path: Path) -> Path:
    return write_qa(tmp_path / "qa.jsonl")


def test_end_to_end_on_fakes_writes_every_artifact(workspace, qa_file):
    add_run(workspace, "run1")
    generator = EchoGenerator(adapters=["run1"])
    retriever = StaticRetriever(CHUNKS)
    cfg = EvalConfig(qa=qa_file, models="base,latest", k=4, max_new_tokens=512, batch_size=3,
                     rerank=False)
    result, out = run(cfg, answerer=answerer(generator, retriever),
                      retriever=retriever, show_progress=False)

    names = [c["config"] for c in result.configurations]
    assert names == ["base", "base+RAG", "run1", "run1+RAG"]
    by_name = {c["config"]: c for c in result.configurations}
    # The echo generator repeats its prompt: without context no reference answer appears;
    # with all 4 chunks in context each of the 3 answerable references does (3 of 4 questions).
    assert by_name["base"]["contains"] == 0.0
    assert by_name["base+RAG"]["contains"] == pytest.approx(0.75)
    assert by_name["run1+RAG"]["contains"] == pytest.approx(0.75)
    assert by_name["base+RAG"]["hit"] == 1.0 and by_name["base"]["hit"] is None
    assert by_name["base+RAG"]["citation"] == 1.0 and by_name["base"]["citation"] is None
    assert by_name["base"]["refusal_rate"] == 0.0
    assert set(by_name["base+RAG"]["by_lang"]) == {"en", "zh"}
    # Questions went to the engine in batches of 3 (4 questions -> 2 calls per configuration).
    assert len(generator.calls) == 4 * 4
    assert {r.model for r in generator.calls} == {"base", "run1"}

    assert out.parent == workspace / "evals"
    saved = json.loads((out / "results.json").read_text())
    assert [c["config"] for c in saved["configurations"]] == names
    assert [r["mode"] for r in saved["retrieval"]] == ["dense", "bm25", "hybrid"]
    assert all(r["n"] == 3 and r["hit"] == 1.0 for r in saved["retrieval"])
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert [r["config"] for r in rows] == names + ["dense", "bm25", "hybrid"]
    answers = [json.loads(line) for line in (out / "answers.jsonl").open(encoding="utf-8")]
    assert len(answers) == 4 * 4 and answers[0]["question"] == QA[0]["question"]
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = (out / "config.yaml").read_text(encoding="utf-8")
    assert "base+RAG" in config and "qa_sha256" in config


def test_leak_refused_with_the_colliding_rows_named(workspace, qa_file):
    datasets = workspace / "datasets"
    datasets.mkdir()
    pairs = [
        {"instruction": "HOW MANY days of paid leave do staff get", "input": "", "output": "x"},
        {"instruction": "Unrelated question about the cafeteria?", "input": "", "output": "y"},
        {"instruction": "Context:\n[1] drills.md\nFire drills...\n\nQuestion: So how often "
                        "are fire drills held?", "input": "", "output": "z"},
    ]
    (datasets / "pairs.json").write_text(json.dumps(pairs))
    (datasets / "dataset_info.json").write_text(json.dumps({"sft_pairs": {
        "file_name": "pairs.json", "formatting": "alpaca"}}))
    generator = EchoGenerator()
    with pytest.raises(EvalLeakError) as caught:
        run(EvalConfig(qa=qa_file, models="base"), answerer=answerer(generator),
            show_progress=False)
    message = str(caught.value)
    assert f"{qa_file} line 1" in message and "row 3" in message and "near match" in message
    assert f"{qa_file} line 2" in message and "row 1" in message and "exact" in message
    assert "line 3" not in message and "row 2" not in message
    assert {(c.item.line, c.found.row) for c in caught.value.collisions} == {(1, 3), (2, 1)}
    assert generator.calls == []  # refused before any generation
    assert not (workspace / "evals").exists()


def test_leak_in_the_datasets_a_tuned_run_trained_on(workspace, qa_file, tmp_path):
    extra = tmp_path / "elsewhere" / "chat.jsonl"
    extra.parent.mkdir()
    rows = [{"messages": [{"role": "user", "content": "Where is the canteen?"},
                          {"role": "assistant", "content": "Ground floor."}]},
            {"messages": [{"role": "user", "content": "员工每年有多少天带薪年假"},
                          {"role": "assistant", "content": "十五天"}]}]
    extra.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    add_run(workspace, "run1")
    (workspace / "runs" / "run1" / "run_config.yaml").write_text(
        f"name: run1\ndataset: {extra}\ndataset_dir: null\n")
    cfg = EvalConfig(qa=qa_file, models="base,latest")
    with pytest.raises(EvalLeakError, match=rf"line 3 .* == {extra} row 2 .*exact"):
        run(cfg, answerer=answerer(EchoGenerator(adapters=["run1"])), show_progress=False)
    # Evaluating the base model alone does not involve that run's data.
    result, _ = run(EvalConfig(qa=qa_file, models="base"),
                    answerer=answerer(EchoGenerator(adapters=["run1"])), show_progress=False)
    assert [c["config"] for c in result.configurations] == ["base"]


def test_without_index_only_plain_rows_and_a_note(workspace, qa_file):
    cfg = EvalConfig(qa=qa_file, models="base,latest", rerank=False)
    result = run_eval(load_qa(qa_file), answerer(EchoGenerator()), None, cfg,
                      show_progress=False)
    assert [c["config"] for c in result.configurations] == ["base"]
    assert result.retrieval == []
    assert any("no tuned run" in n for n in result.notes)
    assert any("no retrieval index" in n for n in result.notes)


class ModeRetriever(Retriever):
    """Ranks the expected chunk first for BM25 and hybrid, last for dense."""

    def search(self, query, k=5, mode="hybrid"):
        order = CHUNKS if "drills" in query else list(reversed(CHUNKS))
        if mode == "dense":
            order = list(reversed(order))
        return [Hit(c, 1.0 / (i + 1)) for i, c in enumerate(order[:k])]


def test_retrieval_ablation_scores_each_mode(tmp_path):
    items = load_qa(write_qa(tmp_path / "q.jsonl", QA[:1]))
    rows = retrieval_ablation(items, ModeRetriever(), ["dense", "bm25", "hybrid"], 2)
    by_mode = {r["mode"]: r for r in rows}
    # drills.md is chunk 1: first for bm25/hybrid (MRR 1); dense puts it 4th, beyond k=2.
    assert (by_mode["bm25"]["hit"], by_mode["bm25"]["mrr"]) == (1.0, 1.0)
    assert (by_mode["dense"]["hit"], by_mode["dense"]["mrr"]) == (0.0, 0.0)


def test_unknown_model_names_what_is_served():
    with pytest.raises(ModelNotFoundError, match="run9.*available: base, run1"):
        resolve_models(["base", "run9"], ["base", "run1"], "run1")
    assert resolve_models(["base", "latest"], ["base", "run1"], "run1") == (["base", "run1"], [])


@pytest.mark.parametrize("field,value", [("k", 0), ("max_new_tokens", 0), ("limit", 0),
                                         ("url", "localhost:8000"), ("modes", "dense,fuzzy"),
                                         ("models", " , ")])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ConfigError) as caught:
        EvalConfig(**{field: value})
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize("line,field", [('{"question": "", "answer": "a"}', "question"),
                                        ('{"question": "q", "answer": 3}', "answer"),
                                        ('{"question": "q", "answer": "a", "source": 5}', "source"),
                                        ("not json", None)])
def test_bad_qa_rows_are_named(tmp_path, line, field):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "ok?", "answer": "yes"}\n\n' + line + "\n")
    with pytest.raises(InputError) as caught:
        load_qa(path)
    assert caught.value.row == 3 and caught.value.field == field




class RecordingAnswerer(Answerer):
    """Answers each question with itself and records the batches it was handed."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def models(self) -> list[str]:
        return ["base"]

    def answer(self, questions, *, model, use_rag, top_k, max_new_tokens):
        self.batches.append(list(questions))
        return [Reply(q) for q in questions]


def test_batches_hold_one_language_and_rows_keep_file_order(tmp_path):
    rows = [*QA, {"question": "安全演练多久举行一次？", "answer": "每月", "source": None},
            {"question": "Who runs the reactor?", "answer": "Aster Labs", "source": None}]
    items = load_qa(write_qa(tmp_path / "qa.jsonl", rows))
    rec = RecordingAnswerer()
    out, _ = answer_all(items, rec, [Configuration("base", False)], EvalConfig(batch_size=2))
    langs = [{"zh" if "年" in q or "演" in q else "en" for q in batch} for batch in rec.batches]
    assert all(len(lang) == 1 for lang in langs) and len(rec.batches) == 3
    assert [r["line"] for r in out] == [i.line for i in items]  # answers.jsonl in file order
    assert [r["answer"] for r in out] == [i.question for i in items]
