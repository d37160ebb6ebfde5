"""The degeneracy detector on hand-made answers: loops, citation markers only, empty, and
ordinary answers (English and Chinese, short and long) that must pass."""

from __future__ import annotations

import pytest

from ragtune.quality import degeneracy


@pytest.mark.parametrize("text,reason", [
    ("", "empty"),
    ("   \n", "empty"),
    ("<think>\nhmm\n</think>\n\n", "empty"),
    ("................................", "empty"),
    ("[4] [4] [4] [4]", "citations-only"),
    ("[4]", "citations-only"),
    ("[1], [2].", "citations-only"),
    ("The answer is [4] [4] [4] [4] [4] [4] [4] [4] [4]", "loop"),
    ("the leave the leave the leave the leave the leave the leave", "loop"),
    ("Employees get 27 days. Employees get 27 days. Employees get 27 days. Employees get", "loop"),
    ("年假年假年假年假年假年假年假年假", "loop"),
    ("TheTheTheTheTheTheTheTheTheTheTheThe", "loop"),
    ("S2222222222222222222222222222222", "loop"),
])
def test_degenerate_answers_are_named(text: str, reason: str) -> None:
    assert degeneracy(text) == reason


@pytest.mark.parametrize("text", [
    "27 days. [3]",
    '27 days. [3]\n[3]: "Full-time employees get 27 days of annual leave per year."',
    "I don't know: the documents I have do not answer this question.",
    "员工每年享有十五天带薪年假。[2]",
    "Submit the form, attach the receipts, sign it, scan it, and send it to finance by the "
    "30th; late claims, missing receipts, or unsigned forms are returned to the employee.",
    "<think>\nThe passage says 27.\n</think>\n\n27 days. [1]",
    "Call 1000000 or 555-5555 before 2024-01-01... see section 4.4.4 ---- done.",
])
def test_ordinary_answers_pass(text: str) -> None:
    assert degeneracy(text) is None
