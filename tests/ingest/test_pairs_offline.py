"""Offline pair generation (English and Chinese rules), the support check and the quality gate."""

from __future__ import annotations

import json

import pytest

from ingest.pairs.base import QAPair
from ingest.pairs.config import PairsConfig
from ingest.pairs.offline import OfflineGenerator
from ingest.pairs.quality import NearDupIndex, QualityFilter, load_eval_questions
from ingest.pairs.text import best_sentence, is_supported, sentences
from ragtune.errors import ConfigError, DatasetError
from ragtune.prompts import is_chinese
from ragtune.types import Chunk

EN = Chunk(1, "hr/leave.md", 1, "Leave Policy > 2. Annual leave > 2.1 Entitlement", """\
Policy owner: Priya Halloran, Director of People

Full-time employees receive 27 days of annual leave per leave year.
The Quarry Lab is the calibration laboratory of the company.
Carried-over days must be taken by 30 June.

| Completed years of service | Annual leave (days) |
|----------------------------|---------------------|
| Less than 3 years | 27 |
| 10 years or more | 30 |

Q: Who approves leave?
A: Your line manager approves leave in PeopleHub.
""")

ZH = Chunk(2, "zh/handbook.md", 3, "员工手册 > 第三章 休假 > 年休假", """\
联系人：王晓明
年休假是指员工每年享有的带薪休假。
员工累计工作已满 1 年不满 10 年的，年休假 5 天。
病假须在 3 个工作日内提交医院证明。

| 岗位 | 防护用品 |
| --- | --- |
| 锂电池库房 | 防护手套、护目镜 |

问：年假可以跨年使用吗？
答：年休假原则上在当年使用，最多可顺延至次年 3 月底。
""")


def _by_rule(chunk: Chunk) -> dict[str, list[QAPair]]:
    out: dict[str, list[QAPair]] = {}
    for p in OfflineGenerator().generate([chunk])[chunk.id]:
        out.setdefault(p.rule, []).append(p)
    return out


def test_english_rules_make_grounded_questions():
    rules = _by_rule(EN)
    questions = {p.question for ps in rules.values() for p in ps}
    assert "Who approves leave?" in questions  # Q:/A: in the text
    assert "What is Quarry Lab?" in questions  # "X is the Y"
    assert ("Full-time employees receive how many days of annual leave per leave year?"
            in questions)
    assert "Carried-over days must be taken by what date?" in questions
    assert "Who is the policy owner of the Leave Policy?" in questions  # key: value
    assert "What does the Leave Policy say about entitlement?" in questions  # section
    table = [p for p in rules["table"] if "“10 years or more”" in p.question]
    assert table and table[0].short == "30" and "30" in table[0].answer
    number = next(p for p in rules["number"] if "how many days" in p.question)
    assert number.short == "27 days" and number.quote in EN.text
    for ps in rules.values():
        for p in ps:  # every answer is supported by its own chunk, and not by another one
            assert is_supported(p.answer, EN.section + "\n" + EN.text), p
            assert p.source == EN.source and p.position == EN.position


def test_chinese_rules_make_chinese_questions():
    rules = _by_rule(ZH)
    questions = {p.question for ps in rules.values() for p in ps}
    assert "年休假指什么？" in questions
    assert "员工累计工作已满 1 年不满 10 年的，年休假多少天？" in questions
    assert "病假须在多少个工作日内提交医院证明？" in questions
    assert "年假可以跨年使用吗？" in questions  # 问/答
    assert "员工手册的联系人是什么？" in questions
    assert "关于年休假，员工手册有哪些规定？" in questions
    assert any("锂电池库房" in q and "防护用品" in q for q in questions)
    for ps in rules.values():
        for p in ps:
            assert is_chinese(p.question), p.question
            assert is_supported(p.answer, ZH.section + "\n" + ZH.text), p


def test_numbers_in_names_and_fragments_are_not_quantities():
    chunk = Chunk(3, "a.md", 0, "", "Estuary 101 is the induction course for all new starters.\n"
                  "Express calibration 3 working days £295 per logger\n"
                  "5.2 The supplier sends 5 sample parts with each new part number.")
    qs = [p.question for p in OfflineGenerator().generate([chunk])[3]]
    assert not any("Estuary how many" in q for q in qs)
    assert not any("Express calibration" in q for q in qs)  # a PDF table row, not a sentence
    assert "The supplier sends how many sample parts with each new part number?" in qs


def test_support_check_catches_unsupported_and_wrong_numbers():
    text = "Full-time employees receive 27 days of annual leave per leave year."
    assert is_supported("Employees receive 27 days of annual leave.", text)
    assert not is_supported("Employees receive 30 days of annual leave.", text)  # wrong number
    assert not is_supported("The canteen serves vegan lunches on Fridays.", text)
    assert is_supported("年休假 5 天", "员工累计工作已满 1 年不满 10 年的，年休假 5 天。")
    assert not is_supported("年休假 15 天", "员工累计工作已满 1 年不满 10 年的，年休假 5 天。")
    assert best_sentence("27 days", "Intro. Full-time staff get 27 days. Other.") == (
        "Full-time staff get 27 days.")
    assert sentences("A first line that wraps\nacross two lines. Next one.") == [
        "A first line that wraps across two lines.", "Next one."]


def _pair(q: str, a: str = "Full-time employees receive 27 days of annual leave per leave year."
          ) -> QAPair:
    return QAPair(q, a, "", EN.source, EN.position, "test")


def test_quality_gate_drops_and_counts_by_reason():
    gate = QualityFilter(PairsConfig(max_pairs_per_chunk=3),
                         eval_questions=["How many days of annual leave do full-time staff get?"])
    pairs = [
        _pair("How many days of annual leave do full-time staff get?"),  # eval question
        _pair("how many days of ANNUAL leave do full-time staff get"),  # eval, normalised
        _pair("Full-time employees receive how many days of leave?"),  # kept
        _pair("Full-time employees receive how many days of leave?"),  # exact duplicate
        _pair("Full-time employees receive how many days of leave ?!"),  # exact after norm.
        _pair("Full-time employees receive how many days of leaves?"),  # near duplicate
        _pair("Hi?"),  # too short
        _pair("What " + "very " * 80 + "long?"),  # too long
        _pair("What is served on Fridays?", "Vegan lunches are served on Fridays."),
        _pair("What does the policy give?"),  # kept
        _pair("What else does the policy give?", "Full-time employees receive 27 days."),
        _pair("One more question about leave?"),  # over the per-chunk cap
    ]
    kept = gate.filter_chunk(EN, pairs)
    assert [p.question for p in kept] == ["Full-time employees receive how many days of leave?",
                                          "What does the policy give?",
                                          "What else does the policy give?"]
    assert dict(gate.rejected) == {"eval_leak": 2, "duplicate": 2, "near_duplicate": 1,
                                   "too_short": 1, "too_long": 1, "unsupported": 1,
                                   "per_chunk_cap": 1}
    assert all(p.quote and p.quote in EN.text for p in kept)  # quote filled from the chunk


def test_near_duplicates_in_chinese():
    idx = NearDupIndex(0.8)
    idx.add("员工累计工作已满1年不满10年的，年休假多少天？")
    assert idx.match("员工累计工作已满 1 年不满 10 年的，年休假多少天") == "exact"
    assert idx.match("员工累计工作已满1年不满10年的，年休假有多少天？") == "near"
    assert idx.match("病假须在多少个工作日内提交医院证明？") is None


def test_eval_file_loading(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": "Q1?", "answer": "A", "source": "s"}) + "\n"
                    + json.dumps({"question": "问题二？", "answer": "答"}, ensure_ascii=False)
                    + "\n", encoding="utf-8")
    assert load_eval_questions(path) == ["Q1?", "问题二？"]
    assert load_eval_questions(tmp_path / "missing.jsonl") == []
    path.write_text('{"question": "ok?"}\n{"q": "bad"}\n')
    with pytest.raises(DatasetError) as info:
        load_eval_questions(path)
    assert (info.value.row, info.value.field) == (2, "question")


@pytest.mark.parametrize(("field", "value"), [
    ("generator", "gpt"), ("mode", "closed"), ("oracle_p", 1.5), ("distractors", -1),
    ("val_ratio", 0.95), ("max_pairs_per_chunk", 0), ("near_dup_threshold", 0.1),
    ("no_oracle_answer", "maybe"), ("teacher_timeout_s", 0)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError) as info:
        PairsConfig(**{field: value})
    assert info.value.field == field and info.value.value == value


def test_config_teacher_needs_endpoint_and_yaml_round_trip(tmp_path):
    with pytest.raises(ConfigError, match="teacher_base_url"):
        PairsConfig(generator="teacher", teacher_model="m")
    with pytest.raises(ConfigError, match="http"):
        PairsConfig(generator="teacher", teacher_model="m", teacher_base_url="localhost:8000")
    cfg = PairsConfig(generator="teacher", teacher_base_url="http://127.0.0.1:9/v1",
                      teacher_model="m", teacher_api_key="sk-secret", oracle_p=0.6, seed=7)
    path = cfg.write_yaml(tmp_path / "pairs_config.yaml")
    assert "sk-secret" not in path.read_text()
    back = PairsConfig.from_yaml(path)
    assert back.teacher_api_key == ""  # secrets are never written; pass them by env/flag
    assert back.to_dict() == {**cfg.to_dict(), "teacher_api_key": ""}
    path.write_text("oracle_p: 0.5\nbogus: 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        PairsConfig.from_yaml(path)
