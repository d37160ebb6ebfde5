"""Trust in eval: the Correct / Wrong-unflagged / refusal / Supported / Extracted columns, and
`--calibrate` fitting the refusal gate that serving then reads."""

from __future__ import annotations

import json

import pytest

from evaluation.backends import AssistantAnswerer, NoGeneration, ReplayAnswerer
from evaluation.calibrate import calibrate
from evaluation.data import load_qa
from evaluation.evaluate import EvalConfig
from evaluation.run import run
from ragtune.errors import DatasetError
from ragtune.settings import load_settings
from serving.assistant import Assistant
from serving.config import AssistantConfig
from serving.gate import fit_threshold, read_calibration
from tests.evaluation.test_eval import CHUNKS, QA, write_qa
from tests.fakes import CannedGenerator, StaticRetriever

# Drills: right and supported. Leave: a made-up number, which the check replaces by the quote.
# 年假: right. The car: made up, and no sentence is about it, so the service refuses.
REPLIES = {"fire drills": "Monthly [1].", "paid leave": "Staff get 40 days [1].",
           "带薪年假": "十五天带薪年假 [1]", "colour": "The car is red [1]."}


def test_fit_threshold_refuses_unanswerable_within_the_false_refusal_budget():
    answerable = [0.2, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.95, 0.97, 0.99]
    fit = fit_threshold(answerable, [0.1, 0.3, 0.55])
    assert fit["refused_answerable"] <= 0.10 and fit["refused_unanswerable"] == pytest.approx(2 / 3, abs=1e-3)
    assert 0.3 < fit["threshold"] <= 0.5
    assert fit_threshold([0.5], [])["refused_unanswerable"] == 0.0
    with pytest.raises(DatasetError):
        fit_threshold([], [0.1])


def _answerer(**config) -> AssistantAnswerer:
    cfg = AssistantConfig(**{"answerable_threshold": 0.05, "top_k": 2, **config})
    return AssistantAnswerer(Assistant(CannedGenerator(REPLIES), StaticRetriever(CHUNKS), cfg))


def test_trust_columns_count_what_reaches_the_user(workspace, tmp_path):
    qa = write_qa(tmp_path / "qa.jsonl")
    cfg = EvalConfig(qa=qa, models="base", k=2, top_k=2, batch_size=4, rerank=False, modes="")
    retriever = StaticRetriever(CHUNKS)
    result, out = run(cfg, answerer=_answerer(), retriever=retriever, show_progress=False)
    rows = {r["question"]: r for r in result.answers if r["rag"]}
    drills, leave = rows[QA[0]["question"]], rows[QA[1]["question"]]
    zh, car = rows[QA[2]["question"]], rows[QA[3]["question"]]
    assert drills["answer_kind"] == "generated" and drills["supported"] is True
    assert drills["correct"] == 1.0 and drills["wrong_unflagged"] == 0.0
    assert leave["answer_kind"] == "extracted" and leave["generated"] == "Staff get 40 days [1]."
    assert leave["correct"] == 1.0 and "twenty days" in leave["answer"]  # the quote holds it
    assert zh["answer_kind"] == "generated" and zh["correct"] == 1.0
    assert car["answer_kind"] in ("refused", "extracted") and car["wrong_unflagged"] == 0.0
    rag = next(c for c in result.configurations if c["rag"])
    assert rag["correct"] == 1.0 and rag["wrong_unflagged"] == 0.0
    # the model's own answers that were checked: drills and 年假 pass, the made-up leave fails
    # (the car question never reached the model when the gate refused it: not counted)
    checked = [r for r in rows.values() if r["supported"] is not None]
    assert rag["supported"] == pytest.approx(sum(r["supported"] for r in checked) / len(checked))
    assert drills["supported"] and zh["supported"] and leave["supported"] is False
    assert rag["extracted"] >= 0.25
    plain = next(c for c in result.configurations if not c["rag"])
    # Without retrieval nothing is checked: the made-up numbers reach the user unflagged.
    assert plain["wrong_unflagged"] >= 0.25 and plain["supported"] is None
    saved = json.loads((out / "results.json").read_text())["configurations"]
    assert {"correct", "wrong_unflagged", "supported", "extracted"} <= set(saved[0])
    flagged, _ = run(cfg, answerer=_answerer(on_unsupported="flag"), retriever=retriever,
                     show_progress=False)
    leave_flagged = next(r for r in flagged.answers if r["rag"] and r["question"] == QA[1]["question"])
    assert leave_flagged["supported"] is False and leave_flagged["wrong_unflagged"] == 0.0


def test_calibrate_writes_the_gate_beside_the_index_and_serving_reads_it(workspace, tmp_path,
                                                                         monkeypatch):
    monkeypatch.delenv("RAGTUNE_ANSWERABLE_THRESHOLD")  # the tests' default opens the gate
    rows = QA + [{"question": "What is the salary of the Northwind reactor's cat?",
                  "answer": None, "source": None}]
    qa = write_qa(tmp_path / "qa.jsonl", rows)
    settings = load_settings(workspace=workspace)
    settings.paths.index_dir.mkdir(parents=True, exist_ok=True)
    items = load_qa(qa, None)
    result = calibrate(items, StaticRetriever(CHUNKS), settings, 2, qa)
    saved = read_calibration(settings.paths.index_dir)
    assert saved["threshold"] == result["threshold"] and saved["unanswerable"] == 2
    assert saved["refused_answerable"] <= 0.10 and saved["qa"] == str(qa)
    assert AssistantConfig.from_settings(
        load_settings(workspace=workspace)).answerable_threshold == saved["threshold"]
    assert AssistantConfig.from_settings(
        load_settings(workspace=workspace, answerable_threshold=0.5)).answerable_threshold == 0.5
    with pytest.raises(DatasetError):
        calibrate([i for i in items if i.answerable], StaticRetriever(CHUNKS), settings, 2, qa)


def test_eval_calibrate_flag_uses_the_new_gate_in_the_same_run(workspace, tmp_path):
    qa = write_qa(tmp_path / "qa.jsonl")
    cfg = EvalConfig(qa=qa, models="base", k=2, top_k=2, batch_size=4, rerank=False, modes="",
                     calibrate=True)
    answerer = _answerer()
    result, _ = run(cfg, answerer=answerer, retriever=StaticRetriever(CHUNKS),
                    show_progress=False)
    threshold = read_calibration(load_settings(workspace=workspace).paths.index_dir)["threshold"]
    assert answerer.assistant.config.answerable_threshold == threshold
    assert any(n.startswith("gate calibrated:") for n in result.notes)


def test_a_question_with_an_expected_page_scores_whether_that_page_is_cited(workspace, tmp_path):
    from ragtune.types import Chunk

    chunks = [Chunk(1, "manual.pdf", 0, "Calibration", "The QJ-02 bath is calibrated every "
                    "6 months.", page=2),
              Chunk(2, "manual.pdf", 1, "Storage", "Expired standards get a red label.", page=1)]
    rows = [{"question": "How often is the QJ-02 bath calibrated?", "answer": "6 months",
             "source": "manual.pdf", "page": 2}]
    qa = write_qa(tmp_path / "qa.jsonl", rows)
    cfg = EvalConfig(qa=qa, models="base", k=2, top_k=2, batch_size=2, rerank=False, modes="")
    replies = {"QJ-02": "Every 6 months [1]."}
    answerer = AssistantAnswerer(Assistant(CannedGenerator(replies), StaticRetriever(chunks),
                                           AssistantConfig(answerable_threshold=0.0, top_k=2)))
    result, _ = run(cfg, answerer=answerer, retriever=StaticRetriever(chunks),
                    show_progress=False)
    rag = next(r for r in result.answers if r["rag"])
    assert rag["answer_kind"] == "generated" and rag["page_cited"] == 1.0  # [1] is page 2
    wrong = AssistantAnswerer(Assistant(CannedGenerator({"QJ-02": "Every 6 months [2]."}),
                                        StaticRetriever(chunks),
                                        AssistantConfig(answerable_threshold=0.0, top_k=2,
                                                        on_unsupported="flag")))
    other, _ = run(cfg, answerer=wrong, retriever=StaticRetriever(chunks), show_progress=False)
    assert next(r for r in other.answers if r["rag"])["page_cited"] == 0.0  # [2] is page 1
    assert next(c for c in result.configurations if c["rag"])["page_cited"] == rag["page_cited"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**rows[0], "page": 0}) + "\n", encoding="utf-8")
    with pytest.raises(Exception, match="page"):
        load_qa(bad)


def _verdicts(result) -> dict:
    return {(r["config"], r["question"]): (r["answer"], r["answer_kind"], r["correct"],
                                           r["wrong_unflagged"]) for r in result.answers}


def test_a_replay_rescores_an_earlier_evals_texts_without_generating(workspace, tmp_path):
    qa = write_qa(tmp_path / "qa.jsonl")
    cfg = EvalConfig(qa=qa, models="base", k=2, top_k=2, batch_size=4, rerank=False, modes="")
    retriever = StaticRetriever(CHUNKS)
    first, out = run(cfg, answerer=_answerer(), retriever=retriever, show_progress=False)

    def replay(**config):
        assistant = Assistant(NoGeneration(), retriever,
                              AssistantConfig(**{"answerable_threshold": 0.05, "top_k": 2, **config}))
        replay_cfg = EvalConfig(qa=qa, models="base", k=2, top_k=2, batch_size=4, rerank=False,
                                modes="", replay=out)
        return run(replay_cfg, answerer=ReplayAnswerer(assistant, out / "answers.jsonl"),
                   retriever=retriever, show_progress=False)[0]

    # the same check over the same texts: every answer and verdict again, nothing generated
    assert _verdicts(replay()) == _verdicts(first)
    # another setting of the check: what a fresh run with it gives, answer for answer
    flagged, _ = run(cfg, answerer=_answerer(on_unsupported="flag"), retriever=retriever,
                     show_progress=False)
    replayed = replay(on_unsupported="flag")
    assert _verdicts(replayed) == _verdicts(flagged) != _verdicts(first)
    assert any("nothing was generated" in note for note in replayed.notes)
    # an answers file without the texts a question needs: a clear error naming the file
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join((out / "answers.jsonl").read_text().splitlines()[:1]) + "\n")
    assistant = Assistant(NoGeneration(), retriever, AssistantConfig(answerable_threshold=0.05,
                                                                     top_k=2))
    with pytest.raises(DatasetError, match="short.jsonl.*no text to replay"):
        run(cfg, answerer=ReplayAnswerer(assistant, short), retriever=retriever,
            show_progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model": "base"}\n')
    with pytest.raises(DatasetError, match="bad.jsonl, row 1"):
        ReplayAnswerer(assistant, bad)
