"""Over-long RAFT rows drop whole distractor passages before anything is cut by tokens: the cited
(oracle) passage and the answer survive, citations follow the renumbering, and the counts say
which rows were shortened which way."""

from __future__ import annotations

import pytest

from finetune.encode import ChatFormat, encode_sft
from finetune.preference import encode_preference
from ragtune.datasets import PreferenceExample, SFTExample
from ragtune.prompts import ContextPassage, parse_context, user_prompt
from tests.tiny_models import build_tokenizer

ORACLE = ContextPassage("leave.md", "Annual leave", "Full-time employees get 27 days of leave.")
FILLER = "The quick brown fox jumps over the lazy dog. "


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def distractor(i: int, sentences: int) -> ContextPassage:
    return ContextPassage(f"other-{i}.md", "", f"Distractor {i}. " + FILLER * sentences)


def raft_row(answer: str, oracle_at: int = 3) -> SFTExample:
    passages = [distractor(1, 6), distractor(2, 2), distractor(4, 8)]
    passages.insert(oracle_at - 1, ORACLE)
    prompt = user_prompt("How many days of annual leave?", passages)
    return SFTExample([{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": prompt},
                       {"role": "assistant", "content": answer}])


def length(tok, ex: SFTExample) -> int:
    return len(ChatFormat(tok).encode(ex.messages[:-1], ex.messages[-1]["content"]))


def prompt_of(tok, enc) -> str:
    return tok.decode(enc.prompt)


def test_distractors_go_first_and_the_oracle_stays(tok) -> None:
    answer = '27 days. [3]\n[3]: "Full-time employees get 27 days of leave."'
    ex = raft_row(answer)
    full = length(tok, ex)
    cutoff = full - 40  # dropping the longest distractor (passage 4) is enough
    (enc,), stats = encode_sft([ex], tok, cutoff)
    assert len(enc) <= cutoff
    assert (stats.shortened, stats.passages_dropped, stats.truncated) == (1, 1, 0)
    text = prompt_of(tok, enc)
    assert ORACLE.text in text and "Distractor 4." not in text
    assert "Distractor 1." in text and "Distractor 2." in text
    assert tok.decode(enc.response).startswith(answer)  # the oracle was [3] and still is


def test_citations_follow_the_renumbering(tok) -> None:
    answer = '27 days. [4]\n[4]: "Full-time employees get 27 days of leave."'
    ex = raft_row(answer, oracle_at=4)  # distractors 1, 2, 4 at [1], [2], [3]; oracle at [4]
    cutoff = length(tok, ex) - 40
    (enc,), stats = encode_sft([ex], tok, cutoff)
    assert stats.shortened == 1 and stats.truncated == 0
    user = tok.decode(enc.prompt).split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
    parsed = parse_context(user)
    assert parsed is not None and [p.source for p in parsed.passages] == [
        "other-1.md", "other-2.md", "leave.md"]
    assert tok.decode(enc.response).startswith('27 days. [3]\n[3]: "Full-time')


def test_still_too_long_is_truncated_and_counted(tok) -> None:
    ex = raft_row("27 days. [3]")
    cutoff = 64  # even the oracle passage alone does not fit
    (enc,), stats = encode_sft([ex], tok, cutoff)
    assert len(enc) <= cutoff
    assert stats.truncated == 1 and stats.shortened == 0 and stats.passages_dropped == 3
    assert tok.decode(enc.response).startswith("27 days.")


def test_an_answer_citing_nothing_keeps_one_passage(tok) -> None:
    ex = raft_row("I don't know: the documents I have do not answer this question.")
    (enc,), stats = encode_sft([ex], tok, 80)
    assert stats.passages_dropped == 3 and stats.truncated == 1
    short, fits = encode_sft([ex], tok, length(tok, ex))  # fits: nothing is touched
    assert (fits.shortened, fits.truncated, fits.passages_dropped) == (0, 0, 0)
    assert prompt_of(tok, short[0]).count("Distractor") == 3


def test_preference_rows_drop_distractors_too(tok) -> None:
    base = raft_row("unused")
    pair = PreferenceExample(base.messages[:-1], "27 days. [3]", "3 days. [1]")
    fmt = ChatFormat(tok)
    (row,), _ = encode_preference([pair], fmt, 10_000, "dpo")
    cutoff = len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"])) - 30
    (row,), stats = encode_preference([pair], fmt, cutoff, "dpo")
    assert stats.shortened == 1 and stats.truncated == 0
    text = tok.decode(row["prompt_ids"])
    assert ORACLE.text in text and "Distractor 1." in text  # both cited passages stay
    assert tok.decode(row["chosen_ids"]).startswith("27 days. [")


def test_parse_context_round_trips_and_refuses_other_layouts() -> None:
    passages = [ORACLE, ContextPassage("b.pdf", "", "Line one.\n\nLine two [2] inside."),
                ContextPassage("c.html", "A › B", "third")]
    text = user_prompt("How many days?", passages)
    parsed = parse_context(text)
    assert parsed is not None and parsed.passages == passages
    assert parsed.question == "How many days?"
    assert parse_context("How many days?") is None
    assert parse_context("Context:\nno numbers\n\nQuestion: q") is None
