"""Eval metrics on hand-computed English and Chinese cases."""

from __future__ import annotations

import pytest

from evaluation import metrics as m
from ragtune.prompts import NO_ANSWER, NO_ANSWER_ZH, cited_answer


def test_normalisation_and_tokens_english_and_chinese():
    assert m.normalize("The Cat, sat!  A mat.") == "cat sat mat"
    assert m.tokens("员工每年享有15天年假。") == ["员", "工", "每", "年", "享", "有", "15", "天",
                                             "年", "假"]
    assert m.tokens("Policy 7: the Northwind reactor") == ["policy", "7", "northwind", "reactor"]


def test_extract_answer_takes_the_cited_layout_apart():
    reply = cited_answer("Monthly", 2, "Fire drills are held monthly.")
    assert reply == 'Monthly [2]\n[2]: "Fire drills are held monthly."'
    assert m.extract_answer(reply) == "Monthly"
    assert cited_answer("Fire drills are held monthly", 1, "Fire drills are held monthly.") \
        == "Fire drills are held monthly [1]"  # no quote that repeats the answer
    assert m.extract_answer('每月一次 [1]\n[1]：「消防演习每月举行一次。」') == "每月一次"
    assert m.extract_answer("<think>let me see</think>Paris [1]") == "Paris"
    assert m.extract_answer("答案：三十天 [1]") == "三十天"


def test_exact_match():
    assert m.exact_match('[1] says: "..."\nAnswer: The Northwind reactor. [1]',
                         "northwind reactor") == 1.0
    assert m.exact_match("the Northwind", "Northwind reactor") == 0.0
    assert m.exact_match("十五天。", "十五天") == 1.0


def test_token_f1_english_words():
    # pred {cat, sat}, ref {cat, sat, down}: P = 1, R = 2/3, F1 = 0.8
    assert m.token_f1("the cat sat", "cat sat down") == pytest.approx(0.8)
    assert m.token_f1("dog", "cat") == 0.0


def test_token_f1_chinese_characters():
    # pred 十五天年假 (5 chars); ref 每年十五天带薪年假 (9 chars); 5 shared
    # P = 1, R = 5/9, F1 = 2 * 5/9 / (14/9) = 10/14
    assert m.token_f1("十五天年假", "每年十五天带薪年假") == pytest.approx(10 / 14)


def test_lcs_and_rouge_l():
    assert m.lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    # [cat was on mat] vs [cat sat on mat]: LCS 3, P = R = 3/4
    assert m.rouge_l("the cat was on the mat", "the cat sat on the mat") == pytest.approx(0.75)
    # 员工享有年假 (6) is a subsequence of 员工每年享有十五天年假 (11): P = 1, R = 6/11
    assert m.rouge_l("员工享有年假", "员工每年享有十五天年假") == pytest.approx(12 / 17)
    assert m.rouge_l("", "anything") == 0.0


def test_contains_whole_words_and_chinese_substrings():
    assert m.contains("Fire drills take place Monthly [1].", "monthly") == 1.0
    assert m.contains("Once a month.", "monthly") == 0.0
    assert m.contains("We concatenate files", "cat") == 0.0
    assert m.contains("报销须在三十天内提交。", "三十天") == 1.0
    assert m.contains("报销须在一个月内提交。", "三十天") == 0.0


@pytest.mark.parametrize("reply", [NO_ANSWER, NO_ANSWER_ZH, "I don\u2019t know.", "我不知道。",
                                   "Sorry, I cannot answer that from the documents.",
                                   "<think>hmm</think>I do not know."])
def test_refusals_detected(reply):
    assert m.is_refusal(reply)


@pytest.mark.parametrize("reply", ["The answer is 42.", "员工每年享有十五天年假。",
                                   "Knowledge of the reactor is restricted."])
def test_answers_are_not_refusals(reply):
    assert not m.is_refusal(reply)


def test_unanswerable_questions_reward_refusal():
    refused = m.score_answer(NO_ANSWER, None)
    invented = m.score_answer("It is 42.", None)
    assert (refused.exact_match, refused.f1, refused.contains, refused.rouge_l) == (1, 1, 1, 1)
    assert refused.refused and refused.citation is None
    assert (invented.exact_match, invented.f1, invented.contains, invented.rouge_l) == (0, 0, 0, 0)


def test_citations_and_their_correctness():
    sources = ["data/docs/a.md", "data/docs/hr/leave.md"]
    assert m.citations("[2] says: x\nAnswer: y [2] [1]") == [2, 1]
    assert m.citation_correct("Answer: y [2]", sources, "hr/leave.md") == 1.0
    assert m.citation_correct("Answer: y [1]", sources, "hr/leave.md") == 0.0
    assert m.citation_correct("Answer: y [5]", sources, "hr/leave.md") == 0.0
    assert m.citation_correct("Answer: y", sources, "hr/leave.md") == 0.0
    assert m.citation_correct("Answer: y [1]", [], "hr/leave.md") is None
    assert m.citation_correct("Answer: y [1]", sources, None) is None


def test_source_matching_is_by_path_suffix():
    assert m.source_matches("data/docs/hr/leave.md", "hr/leave.md")
    assert m.source_matches("hr/leave.md", "hr/leave.md")
    assert m.source_matches("data\\docs\\hr\\leave.md", "hr/leave.md")
    assert not m.source_matches("data/docs/xhr/leave.md", "hr/leave.md")
    assert not m.source_matches("data/docs/hr/leave.md", "")


def test_retrieval_hit_recall_mrr():
    ranked = ["docs/a.md", "docs/b.md", "docs/hr/leave.md", "docs/hr/leave.md"]
    assert m.hit_at_k(ranked, "hr/leave.md", 2) == 0.0
    assert m.hit_at_k(ranked, "hr/leave.md", 3) == 1.0
    assert m.reciprocal_rank(ranked, "hr/leave.md", 5) == pytest.approx(1 / 3)
    assert m.reciprocal_rank(ranked, "hr/leave.md", 2) == 0.0
    assert m.recall_at_k(ranked, ["a.md", "c.md"], 5) == 0.5
    assert m.recall_at_k(ranked, ["a.md", "hr/leave.md"], 5) == 1.0
    scores = m.score_retrieval(ranked, "b.md", 5)
    assert (scores.hit, scores.recall, scores.mrr) == (1.0, 1.0, 0.5)


def test_mean_skips_what_does_not_apply():
    assert m.mean([1.0, None, 0.0]) == 0.5
    assert m.mean([None]) is None
