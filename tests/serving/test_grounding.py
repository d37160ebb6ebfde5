"""The grounding checker on hand-made passages and answers (serving/grounding.py)."""

from __future__ import annotations

import pytest

from serving.grounding import answerability, check, extract, sentences

LEAVE = [(1, "Full-time employees receive 27 days of paid annual leave per year, plus public "
             "holidays. Part-time staff receive a pro-rata amount."),
         (2, "The Tidewell TW-40 data logger carries a five-year warranty from Dr Ilse Varrow's "
             "quality team."),
         (3, "Employees may carry over up to 3 days of unused leave into the next leave year, "
             "with their manager's approval.")]
QUESTION = "How many days of annual leave do full-time employees get?"
TABLE = [(1, "Warranty periods by model:\n\n| Model | Warranty | Battery |\n|---|---|---|\n"
             "| TW-40 | 5 years | 2 years |\n| HG-2 | 3 years | 1 year |")]
ZH = [(1, "青岚工厂员工每年享有15天带薪年假。病假需要提供医生证明。"),
      (2, "报销须在出差结束后30天内提交。")]


@pytest.mark.parametrize("answer", ["27 days [1]", "Full-time employees get 27 days of paid "
                                    "annual leave [1].",
                                    '27 days [1]\n[1]: "Full-time employees receive 27 days of '
                                    'paid annual leave per year"'])
def test_a_supported_answer_names_its_passage_and_sentence(answer):
    verdict = check(QUESTION, answer, LEAVE)
    assert verdict.supported and verdict.passage == 1 and verdict.reason is None
    assert verdict.sentence.startswith("Full-time employees receive 27 days")
    assert verdict.score == 1.0 and verdict.cited == [1]


def test_an_unsupported_number_fails_and_says_which():
    verdict = check(QUESTION, "Employees get 30 days [1].", LEAVE)
    assert not verdict.supported and verdict.reason == "30 not in passage [1]"


def test_the_wrong_passage_cited_for_the_right_number_fails():
    verdict = check(QUESTION, "27 days [3]", LEAVE)
    assert not verdict.supported and "27 not in passage [3]" in verdict.reason


def test_a_real_but_off_topic_sentence_cited_confidently_fails():
    """The README demo's failure: "3 days [3]" quotes the carry-over rule, not the leave."""
    verdict = check(QUESTION, "3 days. [3]", LEAVE)
    assert not verdict.supported and verdict.passage == 3
    assert "not the one about the question" in verdict.reason and verdict.relevance < 0.7


def test_an_unsupported_name_fails():
    q = "Who leads the quality team for the TW-40?"
    assert check(q, "Dr Ilse Varrow [2]", LEAVE).supported
    verdict = check(q, "Dr Tomasz Keddle [2]", LEAVE)
    assert not verdict.supported and "keddle" in verdict.reason and "tomasz" in verdict.reason


def test_a_quote_must_be_in_its_passage():
    answer = '27 days [1]\n[1]: "Every employee gets forty days of holiday and a bonus"'
    verdict = check(QUESTION, answer, LEAVE)
    assert not verdict.supported and verdict.reason == "the quote is not in passage [1]"


def test_citing_a_passage_that_was_not_retrieved_fails():
    verdict = check(QUESTION, "27 days [7]", LEAVE)
    assert not verdict.supported and "[7]" in verdict.reason


def test_an_uncited_answer_is_checked_against_every_passage():
    verdict = check(QUESTION, "Full-time staff get 27 days of annual leave.", LEAVE)
    assert verdict.supported and verdict.passage == 1 and verdict.cited == []
    verdict = check(QUESTION, "Full-time staff get 40 days.", LEAVE)
    assert not verdict.supported and "cites no passage" in verdict.reason


def test_chinese_answers_are_checked_by_words_and_substrings():
    q = "青岚工厂员工每年有几天年假？"
    assert check(q, "每年15天带薪年假 [1]", ZH).supported
    wrong = check(q, "每年20天年假 [1]", ZH)
    assert not wrong.supported and wrong.reason == "20 not in passage [1]"
    other = check(q, "每年15天年假 [2]", ZH)
    assert not other.supported


def test_a_table_row_is_a_unit_with_its_header():
    units = sentences(TABLE[0][1])
    assert "| Model | Warranty | Battery |\n| TW-40 | 5 years | 2 years |" in units
    q = "What is the warranty of the TW-40?"
    n, sentence, _ = extract(q, TABLE)
    assert n == 1 and sentence.endswith("| TW-40 | 5 years | 2 years |")
    assert check(q, "5 years [1]", TABLE).supported
    assert not check(q, "7 years [1]", TABLE).supported


@pytest.mark.parametrize("answer", ["", "[4] [4] [4] [4] [4] [4]", "[1] [1] [1]",
                                    "the leave the leave the leave the leave the leave the leave"])
def test_empty_marker_only_and_looping_answers_fail(answer):
    verdict = check(QUESTION, answer, LEAVE)
    assert not verdict.supported and verdict.reason


def test_no_passages_and_other_language_passages_have_a_defined_verdict():
    verdict = check(QUESTION, "27 days [1]", [])
    assert not verdict.supported and not verdict.checked and verdict.reason
    verdict = check(QUESTION, "27 days [1]", ZH)
    assert not verdict.supported and verdict.checked
    assert answerability(QUESTION, ZH) == 0.0 and answerability(QUESTION, []) == 0.0


def test_a_very_long_answer_is_checked_quickly_and_defined():
    answer = " ".join(f"Sentence {i} about leave and the office." for i in range(2000)) + " [1]"
    verdict = check(QUESTION, answer, LEAVE)
    assert verdict.supported is False and verdict.reason


def test_extract_and_answerability_prefer_the_sentence_about_the_question():
    n, sentence, relevance = extract(QUESTION, LEAVE)
    assert n == 1 and "27 days" in sentence and relevance == answerability(QUESTION, LEAVE)
    assert answerability("How much does a Tidewell TW-40 logger weigh?", LEAVE) < relevance


@pytest.mark.parametrize("answer", [
    "How many days of annual leave do full-time employees get? [1]",
    "Full-time employees get annual leave days [1].",
])
def test_an_answer_that_only_restates_the_question_fails(answer):
    """Found in eval: "The release name of Brightwater 4.1.0 is Brightwater 4.1.0." passed."""
    verdict = check(QUESTION, answer, LEAVE)
    assert not verdict.supported and verdict.reason == "the answer only restates the question"
    q = "What is the release name of Brightwater 4.1.0?"
    passages = [(1, "Brightwater 4.1.0, released in March, is called Mallow Spit.")]
    assert not check(q, "The release name of Brightwater 4.1.0 is Brightwater 4.1.0.",
                     passages).supported
    assert check(q, "Mallow Spit [1]", passages).supported


def test_a_heading_does_not_make_every_sentence_under_it_relevant():
    # Both headings hold the question's words; only passage 1's sentence is about the
    # entitlement. "3 days" from the carry-over rule under "Annual leave" fails.
    passages = [
        (1, "Full-time employees receive 27 days of annual leave per year.",
         "Leave Policy > Annual leave > Entitlement"),
        (2, "Up to 3 days may be carried over to the next year.",
         "Leave Policy > Annual leave > Full-time employees > Carry-over"),
    ]
    question = "How many days of annual leave do full-time employees get?"
    assert check(question, "Full-time employees get 27 days [1].", passages).supported
    verdict = check(question, "Full-time employees get 3 days [2].", passages)
    assert not verdict.supported and "not the one about the question" in verdict.reason


def test_words_only_from_the_heading_do_not_support_a_claim():
    passages = [(1, "Document code: CAL-PR-11. Approved by the laboratory manager.",
                 "Calibration Procedure for Pressure Loggers")]
    verdict = check("Which tester is the primary reference of the lab?",
                    "The primary reference of the lab is the procedure for pressure loggers.",
                    passages)
    assert not verdict.supported


def test_how_words_hyphens_and_irregular_verbs_are_normalised():
    from serving.grounding import question_terms, terms

    assert "long" not in question_terms("How long must the SERVICE button be held?")
    assert {"factori", "reset", "hold"} <= terms("hold it to factory-reset", split_hyphens=True)
    assert "systemd-analyz" in terms("run systemd-analyze blame")  # passages keep commands whole
    assert "hold" in terms("The button is held down.")
    assert {"hg-2", "wi-fi"} <= terms("the HG-2 Wi-Fi", split_hyphens=True)


def test_a_copied_sentence_is_judged_by_its_own_words_not_its_neighbours():
    """Found on the Debian FAQ (2026-12-03, an adapter at learning rate 5e-4): the model copied
    the sentence beside the answer word for word, and the neighbours' words made it relevant."""
    question = "Which file holds just the version number of my release?"
    passages = [(1, "The file /etc/release-version holds just the version number of the "
                    "release. The Package field gives the package name, by which the package "
                    "tools manipulate it.", "Release files")]
    neighbour = "The Package field gives the package name, by which the package tools manipulate it."
    verdict = check(question, neighbour, passages)
    assert not verdict.supported and "copies a sentence of passage [1]" in verdict.reason
    assert verdict.sentence.startswith("The Package field")
    right = "The file /etc/release-version holds just the version number of the release."
    assert check(question, right, passages).supported
    # a paraphrase is not a copy: it keeps the window rule
    assert check(question, "It is /etc/release-version [1].", passages).supported
